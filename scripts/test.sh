#!/usr/bin/env bash
# Runs every test: Swift unit and socket tests, then the interop and crash tests against the
# real control-server binary (Python grpcio from the .proto, nghttp2's HTTP/2 client).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build
swift test
python3 -m pytest -q interop
