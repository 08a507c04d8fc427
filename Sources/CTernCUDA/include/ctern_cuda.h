#ifndef CTERN_CUDA_H
#define CTERN_CUDA_H

/* The one CUDA runtime call Swift cannot make through a function pointer of its own:
 * cudaIpcOpenMemHandle takes cudaIpcMemHandle_t, a 64-byte struct, by value, and how a struct
 * that size is passed differs between ABIs (on the stack on x86-64, through a hidden copy on
 * arm64). The C compiler knows; Swift hands over the function pointer from dlsym and the bytes. */

/** CUDA_IPC_HANDLE_SIZE: the bytes of a cudaIpcMemHandle_t. */
#define CTERN_CUDA_IPC_HANDLE_SIZE 64

/** Calls `function` (cudaIpcOpenMemHandle from a run-time-loaded CUDA runtime) with the handle
 *  made of the 64 bytes at `handle`; returns its cudaError_t. */
int ctern_cuda_ipc_open_mem_handle(void *function, void **device_pointer, const void *handle, unsigned int flags);

#endif
