#!/usr/bin/env bash
# Runs every test: Swift unit and socket tests, then the interop and crash tests against the
# real control-server binary (Python grpcio from the .proto, nghttp2's HTTP/2 client).
# The e2e tests build a small cluster of network namespaces and run control-server and
# node-applier against the real kernel nftables (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build
swift test
python3 -m pytest -q interop e2e
