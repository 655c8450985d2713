#!/usr/bin/env bash
# What loading proxy-bench's full-program elements costs through libnftnl (one netlink batch)
# against libnftables (`nft -f`, the same elements as script text), each into a fresh namespace,
# and whether both leave the same ruleset. Needs root, gcc, libnftnl-dev and libmnl-dev.
#   tools/nftnl-floor/run.sh [SERVICES ENDPOINTS]...   (default: 10000 10 50000 5)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
namespace="nftnl-floor-$$"
cleanup() {
    ip netns del "$namespace" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -o "$work/load" "$here/load.c" -lnftnl -lmnl

skeleton() {
    cat <<SKELETON
table ip kpb {
    map backends-tcp { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport; }
    map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
    set cluster-ips { type ipv4_addr; }
    set hairpin { type ipv4_addr . ipv4_addr; }
    chain pick-tcp-$1 { dnat ip to ip daddr . meta l4proto . th dport . numgen random mod $1 map @backends-tcp; }
    chain nat-output { type nat hook output priority -100; policy accept; ip daddr . meta l4proto . th dport vmap @service-ips; }
}
SKELETON
}

# The same elements as load.c, as nft script text.
script() {
    python3 - "$1" "$2" <<'PYTHON'
import sys
services, endpoints = int(sys.argv[1]), int(sys.argv[2])
def ip(value): return "%d.%d.%d.%d" % (value >> 24, value >> 16 & 255, value >> 8 & 255, value & 255)
def service(s): return ip(0x0A600000 + s + 1)
def pod(s, i): return ip(0x0A000000 + (s % 60000) * 256 + i + 1)
print("add element ip kpb backends-tcp { " + ", ".join(
    "%s . tcp . 80 . %d : %s . 8080" % (service(s), i, pod(s, i)) for s in range(services) for i in range(endpoints)) + " }")
print("add element ip kpb service-ips { " + ", ".join(
    "%s . tcp . 80 : goto pick-tcp-%d" % (service(s), endpoints) for s in range(services)) + " }")
print("add element ip kpb cluster-ips { " + ", ".join(service(s) for s in range(services)) + " }")
pairs = (pod(g // endpoints, g % endpoints) for g in range(0, services * endpoints, 100))
print("add element ip kpb hairpin { " + ", ".join("%s . %s" % (a, a) for a in pairs) + " }")
PYTHON
}

fresh() {
    ip netns del "$namespace" 2>/dev/null || true
    ip netns add "$namespace"
    skeleton "$1" | ip netns exec "$namespace" nft -f -
}

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 10 50000 5)
for ((i = 0; i < ${#sizes[@]}; i += 2)); do
    services=${sizes[i]} endpoints=${sizes[i + 1]}
    script "$services" "$endpoints" >"$work/elements.nft"
    fresh "$endpoints"
    ip netns exec "$namespace" /usr/bin/time -f "  peak RSS %M KB" "$work/load" "$services" "$endpoints"
    ip netns exec "$namespace" nft list ruleset >"$work/nftnl.txt"
    fresh "$endpoints"
    echo "libnftables: $services x $endpoints: $(du -h "$work/elements.nft" | cut -f1) of script text"
    ip netns exec "$namespace" /usr/bin/time -f "  nft -f: %e s (user %U s, sys %S s), peak RSS %M KB" nft -f "$work/elements.nft"
    ip netns exec "$namespace" nft list ruleset >"$work/nft.txt"
    if cmp -s "$work/nftnl.txt" "$work/nft.txt"; then
        echo "  both leave the same ruleset ($(wc -l <"$work/nft.txt") lines as nft lists it)"
    else
        echo "  the rulesets differ" >&2
        exit 1
    fi
done
