#!/usr/bin/env bash
# Regenerates the Swift code for Protos/*.proto (and Protos/flwr/proto/transport.proto) and writes it under Sources/*/Generated/: the model
# config messages (TernCore), the KServe messages and gRPC client stubs (TernClient; the messages are
# `package`, so the gRPC frontend, Tern's own server on SwiftNIO HTTP/2, uses the same ones).
# The generated files are committed, so a normal build never runs this: run it after editing a
# .proto. It needs Debian's `protoc` and builds the two protoc plugins from the pinned packages in
# Tools/ (a few minutes the first time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

command -v protoc >/dev/null || { echo "protoc is missing: apt-get install -y protobuf-compiler" >&2; exit 1; }

swift build -c release --package-path Tools --product protoc-gen-swift
swift build -c release --package-path Tools --product protoc-gen-grpc-swift-2
bin="$(swift build -c release --package-path Tools --show-bin-path)"

mapping="$(mktemp)"
trap 'rm -f "$mapping"' EXIT
cat >"$mapping" <<'MAP'
mapping {
  module_name: "TernCore"
  proto_file_path: "model_config.proto"
}
MAP

core_out=Sources/TernCore/Generated
grpc_out=Sources/TernClient/Generated
experiments_out=Sources/TernExperiments/Generated
mkdir -p "$core_out" "$grpc_out" "$experiments_out"

protoc -I Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --swift_out="$core_out" --swift_opt=Visibility=Public \
  model_config.proto

protoc -I Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$grpc_out" --swift_opt=Visibility=Package,ProtoPathModuleMappings="$mapping" \
  --grpc-swift-2_out="$grpc_out" \
  --grpc-swift-2_opt=Visibility=Internal,Server=false,Client=true,ProtoPathModuleMappings="$mapping" \
  grpc_service.proto

# The experiments service's messages (TernExperiments serves the service as a pattern on Tern's gRPC server).
protoc -I Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --swift_out="$experiments_out" --swift_opt=Visibility=Internal \
  experiments.proto

# Flower's transport.proto (rebuilt from the flwr wheel by scripts/flower_proto.py): its messages
# and the FlowerService server stub TernFederated's coordinator implements, plus the client stub
# the Swift edge client uses.
federated_out=Sources/TernFederated/Generated
mkdir -p "$federated_out"
protoc -I Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$federated_out" --swift_opt=Visibility=Internal \
  --grpc-swift-2_out="$federated_out" --grpc-swift-2_opt=Visibility=Internal,Server=true,Client=true \
  flwr/proto/transport.proto

# The parts of an ONNX model that on-device training reads and rewrites (TernTraining).
training_out=Sources/TernTraining/Generated
mkdir -p "$training_out"
protoc -I Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --swift_out="$training_out" --swift_opt=Visibility=Internal \
  onnx_weights.proto

echo "generated:"; ls -1 "$core_out" "$grpc_out" "$experiments_out" "$federated_out" "$training_out"
