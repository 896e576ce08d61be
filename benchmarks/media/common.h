/* Shared helpers of the media benchmark's C programs (sender.c, relay.c, sink.c).
 *
 * Each program is one process with one thread; it prints one JSON line when it has bound its
 * socket ({"port": N}) where that matters, and one JSON line with its counters when it stops.
 * Times are CLOCK_MONOTONIC, the clock of the RFC 8285 send-time stamp (engine_api.md).
 */
#ifndef BENCH_MEDIA_COMMON_H
#define BENCH_MEDIA_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RTP_HEADER 12
#define G711_PAYLOAD 160
#define MAX_PACKET 2048
/* RFC 8285 one-byte header: 0xBEDE, length 3 words; element ID 1, len 8 (L=7); 3 bytes padding. */
#define STAMP_EXT_BYTES 16
#define STAMP_PROFILE 0xBEDE
#define STAMP_ID_LEN 0x17

static volatile sig_atomic_t g_stop = 0;

static inline void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static inline void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU seconds (user + system) this process has used so far. */
static inline double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static inline void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(2);
}

static inline void usage_error(const char *prog, const char *msg) {
    fprintf(stderr, "%s: %s\n", prog, msg);
    exit(64);
}

/* "HOST:PORT" (IPv4) -> sockaddr_in; exits with a message naming the argument when malformed. */
static inline void parse_hostport(const char *prog, const char *text, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) usage_error(prog, "expected HOST:PORT");
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) usage_error(prog, "bad port in HOST:PORT");
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) usage_error(prog, "bad IPv4 host in HOST:PORT");
}

/* Socket buffers as large as root may force (SO_*BUFFORCE), else as large as allowed. */
static inline void big_buffers(int fd, int bytes) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/* A UDP socket bound to 127.0.0.1:port (0 = ephemeral); returns the fd, *bound = the port. */
static inline int bind_udp(int port, int bufbytes, int *bound) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    big_buffers(fd, bufbytes);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) die("getsockname");
    *bound = ntohs(a.sin_port);
    return fd;
}

/* recvmmsg wakes at least this often so the stop conditions are checked. */
static inline void recv_timeout(int fd, long usec) {
    struct timeval tv = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) die("SO_RCVTIMEO");
}

static inline double parse_double(const char *prog, const char *name, const char *text, double min) {
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || !(v >= min)) {
        fprintf(stderr, "%s: bad value for %s: %s\n", prog, name, text);
        exit(64);
    }
    return v;
}

#endif
