// libnftnl and libmnl (the netlink layer libnftables is built on): the elements of a staged full
// program and partial syncs go in as netlink batches, without script text; the names of tables,
// chains and sets, and which chain each rule is in, are read with netlink dumps, and the ruleset's
// generation with a request. Stale UDP flows are read from and deleted in the connection tracking
// table through ctnetlink.
// These come first: libnftables.h defines _GNU_SOURCE, and glibc headers read after it would
// define socket types (fd_set) differently from Swift's Glibc module.
#include <netinet/in.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
