#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (Fuzz/Corpus/<target>/) from Tern's own
fixtures: the example configs, requests the integration tests send, .npy files as numpy writes
them and the real tegrastats lines in shared/jetson. The seeds are small and committed; rerun this
after a fixture changes. Usage: scripts/make_fuzz_corpus.py [OUT]"""
import io
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def infer_json(shape=(1, 2), datatype="FP64", data=(1.0, 2.0)):
    return json.dumps({"id": "seed", "inputs": [{"name": "INPUT0", "datatype": datatype, "shape": list(shape), "data": list(data)}],
                       "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]})


def binary_request():
    payload = np.array([[1.5, -2.0]], dtype=np.float64).tobytes()
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [1, 2],
                                     "parameters": {"binary_data_size": len(payload)}}]})
    return header, payload


def main(out):
    # HTTP/1 requests: the first byte picks the size of the pieces they arrive in.
    http = os.path.join(out, "FuzzHTTPRequest")
    body = infer_json()
    header, payload = binary_request()
    requests = {
        "get_live": "GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "post_json": f"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n{body}",
        "chunked": "POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
        "pipelined": "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        "expect": "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    }
    for name, text in requests.items():
        write(http, name, bytes([7]) + text.encode())
    write(http, "binary", bytes([64]) + (f"POST /v2/models/m/infer HTTP/1.1\r\nInference-Header-Content-Length: {len(header)}\r\n"
                                         f"Content-Length: {len(header) + len(payload)}\r\n\r\n{header}").encode() + payload)

    # Infer bodies: two little-endian bytes choose the JSON header length (0xFFFF: JSON only).
    infer = os.path.join(out, "FuzzInferJSON")
    write(infer, "json", b"\xff\xff" + infer_json().encode())
    write(infer, "bytes", b"\xff\xff" + infer_json((2,), "BYTES", ("a", "bc")).encode())
    write(infer, "binary", struct.pack("<H", len(header) + 1) + header.encode() + payload)
    write(infer, "shared_memory", b"\xff\xff" + json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": {
        "shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 0}}]}).encode())

    # gRPC ModelInferRequest messages, serialized by tritonclient's generated protobuf code.
    try:
        from tritonclient.grpc import service_pb2
    except ImportError:
        from tritonclient.grpc import grpc_service_pb2 as service_pb2
    grpc_dir = os.path.join(out, "FuzzGRPCInfer")
    raw = service_pb2.ModelInferRequest(model_name="identity_fp64", id="seed")
    tensor = raw.inputs.add(name="INPUT0", datatype="FP64", shape=[1, 2])
    raw.raw_input_contents.append(np.array([[1.0, 2.0]]).tobytes())
    raw.outputs.add(name="OUTPUT0")
    write(grpc_dir, "raw", raw.SerializeToString())
    typed = service_pb2.ModelInferRequest(model_name="identity_int32")
    tensor = typed.inputs.add(name="INPUT0", datatype="INT32", shape=[3])
    tensor.contents.int_contents.extend([1, -2, 3])
    typed.parameters["sequence_id"].int64_param = 7
    write(grpc_dir, "typed", typed.SerializeToString())
    strings = service_pb2.ModelInferRequest(model_name="identity_bytes")
    tensor = strings.inputs.add(name="INPUT0", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"ab", b""])
    write(grpc_dir, "bytes", strings.SerializeToString())

    # Configs: the examples' config.pbtxt files, and one as JSON (a load request's config).
    configs = os.path.join(out, "FuzzModelConfig")
    examples = os.path.join(ROOT, "examples", "models")
    for model in sorted(os.listdir(examples)):
        path = os.path.join(examples, model, "config.pbtxt")
        if os.path.exists(path):
            write(configs, model, open(path, "rb").read())
    write(configs, "json", json.dumps({"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
                                       "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
                                       "dynamic_batching": {"preferred_batch_size": [4]}}))

    # .npy files as numpy writes them (format 1.0).
    npy = os.path.join(out, "FuzzNumpy")
    for name, array in {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "i64": np.array([1, 2], dtype=np.int64),
                        "u8": np.zeros((2, 2, 2), dtype=np.uint8), "scalar": np.array(3.5)}.items():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write(npy, name, buffer.getvalue())

    # Real tegrastats lines (one seed per line).
    tegra = os.path.join(out, "FuzzTegrastats")
    samples = os.path.join(ROOT, "..", "shared", "jetson", "tegrastats-samples.txt")
    for index, line in enumerate(l for l in open(samples) if l.strip() and not l.startswith("#")):
        write(tegra, f"line{index}", line.rstrip("\n"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Fuzz", "Corpus"))
