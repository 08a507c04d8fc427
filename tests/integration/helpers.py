"""One way to call a model over each protocol with the unmodified tritonclient package."""
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

PROTOCOLS = ["http-binary", "http-json", "grpc"]

NP_TO_TRITON = {
    np.bool_: "BOOL", np.uint8: "UINT8", np.uint16: "UINT16", np.uint32: "UINT32", np.uint64: "UINT64",
    np.int8: "INT8", np.int16: "INT16", np.int32: "INT32", np.int64: "INT64", np.float16: "FP16",
    np.float32: "FP32", np.float64: "FP64", np.object_: "BYTES",
}


def client(server, protocol):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(server.grpc_address)
    return httpclient, httpclient.InferenceServerClient(server.http_address, concurrency=4)


def infer(server, protocol, model, inputs, outputs=None, class_count=0, **kwargs):
    """inputs: {name: numpy array}; outputs: names to request (None: all). Returns the result."""
    module, c = client(server, protocol)
    binary = protocol != "http-json"
    tensors = []
    for name, array in inputs.items():
        t = module.InferInput(name, list(array.shape), NP_TO_TRITON[array.dtype.type])
        if module is httpclient:
            t.set_data_from_numpy(array, binary_data=binary)
        else:
            t.set_data_from_numpy(array)
        tensors.append(t)
    requested = None
    if outputs is not None:
        if module is httpclient:
            requested = [module.InferRequestedOutput(n, binary_data=binary, class_count=class_count) for n in outputs]
        else:
            requested = [module.InferRequestedOutput(n, class_count=class_count) for n in outputs]
    return c.infer(model, tensors, outputs=requested, **kwargs)
