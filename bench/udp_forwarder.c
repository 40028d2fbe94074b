/* The limit for a user-space relay, for bench/relay_scale.py: a minimal UDP
 * forwarder in C that moves the datagrams a relay moves and nothing more.
 *
 *     udp_forwarder LISTEN_PORT SERVER_PORT   (both on 127.0.0.1)
 *
 * Datagrams to LISTEN_PORT from each source address go to SERVER_PORT through one
 * socket of that source's own (as a relay's group socket: the server sees one peer
 * per source); what the server sends back on it goes back to that source. Reads
 * are batched (recvmmsg, 64 at a time), sends are one each. No protocol: no
 * registration, no acknowledgements, no limits, no statistics.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SOURCES 1024
#define SIZE 2048

struct source { struct sockaddr_in addr; int fd; };

static struct source sources[SOURCES];
static int nsources;
static struct sockaddr_in server;

static int udp(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (port >= 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    }
    return fd;
}

static int upstream_of(const struct sockaddr_in *from, int ep) {
    for (int i = 0; i < nsources; i++)
        if (sources[i].addr.sin_port == from->sin_port && sources[i].addr.sin_addr.s_addr == from->sin_addr.s_addr)
            return sources[i].fd;
    if (nsources == SOURCES) return -1;
    int fd = udp(-1);
    connect(fd, (struct sockaddr *)&server, sizeof server);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)nsources + 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    sources[nsources].addr = *from;
    sources[nsources].fd = fd;
    nsources++;
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s LISTEN_PORT SERVER_PORT\n", argv[0]); return 2; }
    int lfd = udp(atoi(argv[1]));
    server = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char bufs[BATCH][SIZE];
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    static struct sockaddr_in names[BATCH];
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct epoll_event events[64];
        int n = epoll_wait(ep, events, 64, -1);
        for (int e = 0; e < n; e++) {
            unsigned who = events[e].data.u32;
            int fd = who == 0 ? lfd : sources[who - 1].fd;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iov[i] = (struct iovec){bufs[i], SIZE};
                    msgs[i].msg_hdr = (struct msghdr){.msg_name = &names[i], .msg_namelen = sizeof names[i],
                                                      .msg_iov = &iov[i], .msg_iovlen = 1};
                }
                int got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                for (int i = 0; i < got; i++) {
                    if (who == 0) {
                        int up = upstream_of(&names[i], ep);
                        if (up >= 0) send(up, bufs[i], msgs[i].msg_len, 0);
                    } else {
                        sendto(lfd, bufs[i], msgs[i].msg_len, 0, (struct sockaddr *)&sources[who - 1].addr,
                               sizeof sources[who - 1].addr);
                    }
                }
                if (got < BATCH) break;
            }
        }
    }
}
