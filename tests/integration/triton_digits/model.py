"""Triton python-backend model serving a digits ONNX model with onnxruntime: the cloud side of the
hybrid test against real Triton 2.51 (the pytriton wheel's CPU build has only the python backend)."""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = {o["name"]: [int(d) for d in o["dims"]] for o in config["output"]}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            # DLPack both ways: this stub's as_numpy() and Tensor(name, ndarray) predate numpy 2.
            feeds = {name: np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs}
            names = list(self.outputs)
            results = self.session.run(names, feeds)
            tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(value.reshape([value.shape[0]] + self.outputs[name])))
                       for name, value in zip(names, results)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
