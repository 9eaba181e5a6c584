/* Load generator for the TCP echo benchmark (benchmarks/bench_echo.py).
 *
 * Opens --conns connections to --host:--port and ping-pongs on each: send one
 * message of --size bytes, read back exactly --size bytes, compare them with
 * what was sent, send the next. One thread and epoll, so that the same small
 * C program (not a Python client that would be the bottleneck) loads every
 * server alike.
 *
 * Every message carries the connection number and a sequence number in its
 * first and last bytes on top of per-connection random filler, and every
 * reply is compared in full with memcmp: a server that drops, reorders,
 * truncates or replays data fails the run (exit 2) instead of posting a rate.
 *
 * The client busy-polls (epoll_wait with a zero timeout) on its own CPU: it
 * never sleeps, so the server never waits on a cross-CPU wake-up of the
 * client, which in a VM costs tens of microseconds and made the rates bimodal.
 *
 * Requests completed during --warmup seconds are not counted; the ones
 * completed during the following --seconds are. Prints one JSON line:
 *   {"requests": N, "elapsed": S, "bytes": B, "connections": C, "size": Z}
 *
 * Build: gcc -O2 -Wall -Wextra -o echo_client echo_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    uint32_t id;
    uint64_t seq;
    size_t sent;      /* bytes of the current message written */
    size_t received;  /* bytes of the current reply read */
    int want_out;     /* EPOLLOUT registered */
    unsigned char *out;
    unsigned char *in;
};

static size_t msg_size = 64;

static void die(const char *what) {
    fprintf(stderr, "echo_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fail(const char *what, const struct conn *c) {
    fprintf(stderr, "echo_client: connection %u, request %llu: %s\n", c->id,
            (unsigned long long)c->seq, what);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Stamp the connection and sequence numbers at both ends of the message. */
static void stamp(struct conn *c) {
    unsigned char tag[12];
    memcpy(tag, &c->id, 4);
    memcpy(tag + 4, &c->seq, 8);
    size_t n = msg_size < sizeof tag ? msg_size : sizeof tag;
    memcpy(c->out, tag, n);
    memcpy(c->out + msg_size - n, tag, n);
    c->sent = 0;
    c->received = 0;
}

static void set_out(int ep, struct conn *c, int want) {
    if (c->want_out == want) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->want_out = want;
}

static void flush_out(int ep, struct conn *c) {
    while (c->sent < msg_size) {
        ssize_t n = send(c->fd, c->out + c->sent, msg_size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(ep, c, 1);
                return;
            }
            if (errno == EINTR) continue;
            die("send");
        }
        c->sent += (size_t)n;
    }
    set_out(ep, c, 0);
}

/* Read what is there; returns 1 when the whole reply has arrived. */
static int pull_in(struct conn *c) {
    for (;;) {
        if (c->received == msg_size) return 1;
        ssize_t n = recv(c->fd, c->in + c->received, msg_size - c->received, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR) continue;
            die("recv");
        }
        if (n == 0) fail("the server closed the connection", c);
        c->received += (size_t)n;
        if (c->received > c->sent) fail("reply bytes arrived before they were sent", c);
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, nconns = 50;
    double warmup = 0.3, seconds = 2.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conns")) nconns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) msg_size = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else {
            fprintf(stderr, "echo_client: unknown option %s\n", argv[i]);
            return 1;
        }
    }
    if (port <= 0 || nconns <= 0 || msg_size == 0 || seconds <= 0) {
        fprintf(stderr, "usage: echo_client --port P [--host H] [--conns N] [--size B] "
                        "[--warmup S] [--seconds S]\n");
        return 1;
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo_client: bad IPv4 address %s\n", host);
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die("calloc");
    srand(12345);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->id = (uint32_t)i;
        c->out = malloc(msg_size);
        c->in = malloc(msg_size);
        if (!c->out || !c->in) die("malloc");
        for (size_t k = 0; k < msg_size; k++) c->out[k] = (unsigned char)rand();
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    }

    double t0 = now();
    double start = t0 + warmup, end = start + seconds;
    int measuring = 0;
    unsigned long long requests = 0;
    for (int i = 0; i < nconns; i++) {
        stamp(&conns[i]);
        flush_out(ep, &conns[i]);
    }
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        if (!measuring && t >= start) {
            measuring = 1;
            requests = 0;
            start = t;
        }
        if (t >= end) {
            end = t;
            break;
        }
        int n = epoll_wait(ep, events, 256, 0); /* busy-poll: see the top */
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (events[k].events & (EPOLLERR | EPOLLHUP)) {
                if (!(events[k].events & EPOLLIN)) fail("the connection failed", c);
            }
            if ((events[k].events & EPOLLOUT) && c->sent < msg_size) flush_out(ep, c);
            if ((events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && pull_in(c)) {
                if (memcmp(c->in, c->out, msg_size) != 0)
                    fail("the reply differs from the message", c);
                requests++;
                c->seq++;
                stamp(c);
                flush_out(ep, c);
            }
        }
    }
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    printf("{\"requests\": %llu, \"elapsed\": %.6f, \"bytes\": %llu, \"connections\": %d, "
           "\"size\": %zu}\n",
           requests, end - start, requests * (unsigned long long)msg_size * 2ULL, nconns,
           msg_size);
    return 0;
}
