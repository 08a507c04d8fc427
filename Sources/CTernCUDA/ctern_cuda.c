#include "ctern_cuda.h"
#include <string.h>

typedef struct { char reserved[CTERN_CUDA_IPC_HANDLE_SIZE]; } ctern_ipc_mem_handle;
typedef int (*ctern_ipc_open)(void **, ctern_ipc_mem_handle, unsigned int);

int ctern_cuda_ipc_open_mem_handle(void *function, void **device_pointer, const void *handle, unsigned int flags) {
    ctern_ipc_mem_handle value;
    memcpy(value.reserved, handle, sizeof value.reserved);
    return ((ctern_ipc_open)function)(device_pointer, value, flags);
}
