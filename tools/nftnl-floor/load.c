// Loads the elements of proxy-bench's full program (SERVICES x ENDPOINTS, one TCP port each)
// into an existing table `ip kpb` through libnftnl: one netlink batch, one kernel transaction,
// no script text. It measures the floor an in-process netlink path would have, for comparison
// with libnftables parsing the same elements (run.sh does both and checks the results match).
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { ELEMENTS_PER_MESSAGE = 500 };

static struct nftnl_batch *batch;
static uint32_t sequence = 1;
static struct nftnl_set *pending;
static const char *pendingName;
static int pendingCount;

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec / 1e9;
}

static void flushMessage(void) {
    if (!pending) return;
    struct nlmsghdr *header = nftnl_nlmsg_build_hdr(
        nftnl_batch_buffer(batch), NFT_MSG_NEWSETELEM, NFPROTO_IPV4, NLM_F_CREATE, sequence++);
    nftnl_set_elems_nlmsg_build_payload(header, pending);
    nftnl_batch_update(batch);
    nftnl_set_free(pending);
    pending = NULL;
    pendingCount = 0;
}

// Key and data are nft registers: each concatenated field padded to 4 bytes, network byte order
// except the slot number (numgen writes host order).
static void addElement(const char *set, const void *key, int keyLength, const void *data, int dataLength, const char *gotoChain) {
    if (pending && (strcmp(set, pendingName) != 0 || pendingCount == ELEMENTS_PER_MESSAGE)) flushMessage();
    if (!pending) {
        pending = nftnl_set_alloc();
        nftnl_set_set_str(pending, NFTNL_SET_TABLE, "kpb");
        nftnl_set_set_str(pending, NFTNL_SET_NAME, set);
        pendingName = set;
    }
    struct nftnl_set_elem *element = nftnl_set_elem_alloc();
    nftnl_set_elem_set(element, NFTNL_SET_ELEM_KEY, key, keyLength);
    if (data) nftnl_set_elem_set(element, NFTNL_SET_ELEM_DATA, data, dataLength);
    if (gotoChain) {
        nftnl_set_elem_set_u32(element, NFTNL_SET_ELEM_VERDICT, NFT_GOTO);
        nftnl_set_elem_set_str(element, NFTNL_SET_ELEM_CHAIN, gotoChain);
    }
    nftnl_set_elem_add(pending, element);
    pendingCount++;
}

static uint32_t serviceAddress(int service) { return htonl(0x0A600000 + service + 1); }
static uint32_t podAddress(int service, int index) { return htonl(0x0A000000 + (service % 60000) * 256 + index + 1); }

static void frontend(int service, uint8_t key[12]) {
    uint32_t address = serviceAddress(service);
    uint16_t port = htons(80);
    memset(key, 0, 12);
    memcpy(key, &address, 4);
    key[4] = IPPROTO_TCP;
    memcpy(key + 8, &port, 2);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SERVICES ENDPOINTS\n", argv[0]);
        return 2;
    }
    int services = atoi(argv[1]), endpoints = atoi(argv[2]);
    char pickChain[32];
    snprintf(pickChain, sizeof pickChain, "pick-tcp-%d", endpoints);

    double start = seconds();
    batch = nftnl_batch_alloc(128 * 1024, 128 * 1024);
    nftnl_batch_begin(nftnl_batch_buffer(batch), sequence++);
    nftnl_batch_update(batch);
    for (int service = 0; service < services; service++) {
        uint8_t key[16];
        frontend(service, key);
        for (int index = 0; index < endpoints; index++) {
            uint32_t slot = index, address = podAddress(service, index);
            uint16_t port = htons(8080);
            uint8_t data[8] = {0};
            memcpy(key + 12, &slot, 4);
            memcpy(data, &address, 4);
            memcpy(data + 4, &port, 2);
            addElement("backends-tcp", key, 16, data, 8, NULL);
        }
    }
    for (int service = 0; service < services; service++) {
        uint8_t key[12];
        frontend(service, key);
        addElement("service-ips", key, 12, NULL, 0, pickChain);
    }
    for (int service = 0; service < services; service++) {
        uint32_t address = serviceAddress(service);
        addElement("cluster-ips", &address, 4, NULL, 0, NULL);
    }
    // This node hosts 1 % of the endpoints, as in proxy-bench: their hairpin pairs.
    for (int global = 0; global < services * endpoints; global += 100) {
        uint32_t address = podAddress(global / endpoints, global % endpoints);
        uint32_t pair[2] = {address, address};
        addElement("hairpin", pair, 8, NULL, 0, NULL);
    }
    flushMessage();
    nftnl_batch_end(nftnl_batch_buffer(batch), sequence++);
    nftnl_batch_update(batch);

    // One transaction is one message to the kernel: join the batch's pages.
    int pages = nftnl_batch_iovec_len(batch);
    struct iovec *iov = calloc(pages, sizeof *iov);
    nftnl_batch_iovec(batch, iov, pages);
    size_t length = 0;
    for (int page = 0; page < pages; page++) length += iov[page].iov_len;
    char *message = malloc(length);
    for (size_t page = 0, offset = 0; page < (size_t)pages; offset += iov[page].iov_len, page++)
        memcpy(message + offset, iov[page].iov_base, iov[page].iov_len);
    double built = seconds();

    struct mnl_socket *socket = mnl_socket_open(NETLINK_NETFILTER);
    if (!socket || mnl_socket_bind(socket, 0, MNL_SOCKET_AUTOPID) < 0) {
        perror("netlink");
        return 1;
    }
    int bufferSize = 256 << 20;
    setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_SNDBUFFORCE, &bufferSize, sizeof bufferSize);
    // The kernel runs the whole batch, commit included, inside this call.
    if (mnl_socket_sendto(socket, message, length) < 0) {
        perror("sendmsg");
        return 1;
    }
    double sent = seconds();

    // No acknowledgements were asked for: an error is the only reply the kernel can send.
    struct timeval wait = {0, 200000};
    setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    char reply[MNL_SOCKET_BUFFER_SIZE];
    if (recv(mnl_socket_get_fd(socket), reply, sizeof reply, 0) > 0) {
        struct nlmsghdr *header = (struct nlmsghdr *)reply;
        if (header->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr *error = mnl_nlmsg_get_payload(header);
            fprintf(stderr, "kernel refused the batch: %s\n", strerror(-error->error));
            return 1;
        }
    }
    printf("libnftnl: %d x %d: batch built in %.3f s (%zu bytes), kernel transaction %.3f s\n", services, endpoints,
        built - start, length, sent - built);
    return 0;
}
