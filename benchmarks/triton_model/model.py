"""Triton python-backend model that runs the same add_sub model.onnx as Tern, with onnxruntime on
one thread: the only way to serve an ONNX model with the CPU-only Triton 2.51 of the pytriton wheel."""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            # DLPack both ways: this stub's as_numpy() and Tensor(name, ndarray) predate numpy 2.
            a = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT0"))
            b = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT1"))
            out0, out1 = self.session.run(None, {"INPUT0": a, "INPUT1": b})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("OUTPUT0", out0), pb_utils.Tensor.from_dlpack("OUTPUT1", out1)]))
        return responses
