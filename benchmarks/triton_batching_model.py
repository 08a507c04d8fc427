"""Triton python-backend model for benchmarks/batching.py: runs the model.onnx next to it with
onnxruntime, and runs each batch Triton's dynamic batcher hands it as one ONNX Runtime call (the
requests' rows concatenated), as Tern's batcher does."""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("TERN_BENCH_THREADS", "2"))
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        # DLPack both ways: this stub's as_numpy() and Tensor(name, ndarray) predate numpy 2.
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "INPUT")) for r in requests]
        (out,) = self.session.run(None, {"INPUT": np.concatenate(inputs)})
        responses, start = [], 0
        for x in inputs:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("OUTPUT", np.ascontiguousarray(out[start:start + len(x)]))]))
            start += len(x)
        return responses
