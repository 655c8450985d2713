#!/usr/bin/env bash
# Sets up (system packages, release build) and starts only the control server on its embedded
# default: a SQLite database in ./proxy-state.db, gRPC on 127.0.0.1:7700, probes and metrics
# on 127.0.0.1:7701. Extra arguments go to control-server (see --help). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libsqlite3-dev >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsqlite3-dev >/dev/null
fi
swift build -c release --product control-server
exec .build/release/control-server "$@"
