#!/usr/bin/env bash
# Regenerates the committed Swift code from schema/proto: the messages in
# Sources/ProxyAPI/Generated, the gRPC services in Sources/ProxyGRPC/Generated (which imports
# ProxyAPI, so that the store can use the messages without knowing gRPC).
# Needs Debian's protobuf-compiler; builds the two protoc plugins once (about 1.5 minutes)
# in tools/codegen, a separate package so that ordinary builds never compile them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools/codegen"
command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
(cd "$tools" && swift build -c release --product protoc-gen-swift >&2 && swift build -c release --product protoc-gen-grpc-swift-2 >&2)
bin="$(cd "$tools" && swift build -c release --show-bin-path)"
messages="$root/Sources/ProxyAPI/Generated"
services="$root/Sources/ProxyGRPC/Generated"
rm -f "$messages"/*.swift "$services"/*.swift
protoc --proto_path="$root/schema/proto" \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$messages" --swift_opt=Visibility=Public \
  --grpc-swift_out="$services" --grpc-swift_opt=Visibility=Public,Client=true,Server=true,ExtraModuleImports=ProxyAPI \
  "$root"/schema/proto/*.proto
echo "generated: $(ls "$messages" "$services")"
