#!/usr/bin/env bash
# The demo: installs what it needs (system packages), builds, then brings up a control server on
# SQLite, a node-applier in a network namespace with pods behind it, applies a sample Service and
# EndpointSlice with proxyctl and sends requests through the ClusterIP. It removes everything it
# created when it ends. Needs root (network namespaces, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libsqlite3-dev libnftables-dev libnftnl-dev libmnl-dev nftables iproute2 python3)
missing=()
for package in "${packages[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
swift build
exec python3 e2e/demo.py
