#!/usr/bin/env bash
# The GPU check: Tern on ONNX Runtime's CUDA execution provider, against in-process ONNX Runtime on
# the same GPU, printed side by side in one run (benchmarks/gpu_check.py does the measuring).
#
# It runs on a machine lent through the `device` tool (one NVIDIA GPU, CUDA 13, cuDNN 9 and
# Python 3.12 there; no Swift, no TensorRT). Only 64 MiB travel per call, and ONNX Runtime's CUDA
# provider alone is 271 MiB (177 MiB compressed), so the payload travels in parts, one per call,
# into /tmp/tern-gpu on the (warm) machine:
#
#   here:     scripts/gpu-check.sh prepare      builds a release tern with the static Swift stdlib,
#                                               fetches onnxruntime-gpu, packs and splits; prints
#                                               the device calls to make, in order
#   device:   scripts/gpu-check.sh stage        (all parts but the last) keeps the carried part
#   device:   scripts/gpu-check.sh run          keeps the last part, checks every part against the
#                                               manifest, unpacks and runs the check
#
# Each device call carries .gpu-check/manifest and that call's part. The machine stays warm for
# about 30 s between calls: make them one after another; if it went cold `run` names the parts
# that are missing (start again from the first). `GPU_CHECK_PROVIDER=cpu scripts/gpu-check.sh run`
# on a machine without a GPU runs the same check on the CPU provider (a test of the script).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$ROOT/.gpu-check"
STAGE="${GPU_CHECK_STAGE:-/tmp/tern-gpu}"
ORT_WHEEL_VERSION="1.31.1"
PART_SIZE="${GPU_CHECK_PART_SIZE:-58M}"

prepare() {
    command -v swift >/dev/null || export PATH=/opt/swift/usr/bin:$PATH
    rm -rf "$WORK" && mkdir -p "$WORK/payload/site" "$WORK/payload/models"
    grep -qx '/.gpu-check/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu-check/' >> "$ROOT/.git/info/exclude"
    echo "== release tern with the static Swift standard library (.build-gpu)"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --product tern --scratch-path .build-gpu)
    strip -o "$WORK/payload/tern" "$ROOT/.build-gpu/release/tern"
    echo "== onnxruntime-gpu $ORT_WHEEL_VERSION for the device's Python 3.12"
    local wheels="$ROOT/.cache/gpu-check"
    mkdir -p "$wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$wheels" "onnxruntime-gpu==$ORT_WHEEL_VERSION"
    python3 -m zipfile -e "$wheels"/onnxruntime_gpu-"$ORT_WHEEL_VERSION"-cp312-*.whl "$WORK/payload/site"
    echo "== the benchmark models"
    python3 "$ROOT/scripts/make_models.py" benchmarks "$WORK/payload/models"
    echo "== pack and split"
    tar -C "$WORK/payload" -cf - . | xz -6 -T0 > "$WORK/payload.tar.xz"
    (cd "$WORK" && split -b "$PART_SIZE" -d -a 2 payload.tar.xz part- && sha256sum part-* > manifest && rm -rf payload payload.tar.xz)
    local parts=("$WORK"/part-*) count=${#parts[@]} index=0
    echo "== $count parts; make these device calls one after another:"
    for part in "${parts[@]}"; do
        index=$((index + 1))
        local verb=stage timeout=120
        if [ "$index" = "$count" ]; then verb=run timeout=540; fi
        echo "  run(command=\"bash scripts/gpu-check.sh $verb\", carry=[\".gpu-check/manifest\", \".gpu-check/$(basename "$part")\"], timeout_s=$timeout)"
    done
}

keep_parts() {
    mkdir -p "$STAGE"
    if compgen -G "$WORK/part-*" >/dev/null; then cp "$WORK"/part-* "$STAGE"/; fi
    cp "$WORK/manifest" "$STAGE/manifest"
    local have=0 total
    total=$(wc -l < "$STAGE/manifest")
    for part in $(cut -d' ' -f3 "$STAGE/manifest"); do [ -f "$STAGE/$part" ] && have=$((have + 1)); done
    echo "parts on this machine: $have of $total"
}

run() {
    keep_parts
    (cd "$STAGE" && sha256sum --quiet -c manifest) || {
        echo "parts missing or damaged (the machine went cold between calls?): start again from the first part" >&2
        exit 3
    }
    rm -rf "$STAGE/payload" && mkdir -p "$STAGE/payload"
    cat $(sed 's/.* //' "$STAGE/manifest" | sed "s|^|$STAGE/|") | xz -d | tar -x -C "$STAGE/payload"
    local out="${OUT:-$STAGE/out}"
    mkdir -p "$out"
    set -o pipefail
    PYTHONUNBUFFERED=1 python3 "$ROOT/benchmarks/gpu_check.py" --tern "$STAGE/payload/tern" --ort-package "$STAGE/payload/site" \
        --models "$STAGE/payload/models" --provider "${GPU_CHECK_PROVIDER:-cuda}" --out "$out" "$@" 2>&1 | tee "$out/gpu-check.log"
}

case "${1:-}" in
    prepare) prepare ;;
    stage) keep_parts ;;
    run) shift; run "$@" ;;
    *) echo "usage: scripts/gpu-check.sh prepare | stage | run [gpu_check.py options]" >&2; exit 2 ;;
esac
