/* The benchmark's RTP sink: counts what arrives (recvmmsg batches) and reports it as one JSON line.
 *
 *   sink [--port P] [--duration S] [--idle-ms MS] [--expect N] [--batch B]
 *        [--ssrc-base N --flows F] [--kernel-time --lazy-us US]
 *
 * Prints {"port": P} once bound. Stops at --duration (default 60 s), at SIGTERM/SIGINT, when
 * --expect packets have arrived, or when nothing arrived for --idle-ms after the first packet
 * (default 0: never). Then prints
 *   {"received", "bytes", "elapsed_s", "pps", "pt": {"0": n, "8": n, ...}, "not_rtp",
 *    "stamped", "latency_ms": {"p50","p90","p99","p999","max","mean"} | null,
 *    "flows_seen", "seq_lost", "cpu_s"}
 * elapsed_s/pps span the first to the last packet. Latency: for packets carrying the RFC 8285
 * send-time element (ID 1, 8 bytes, CLOCK_MONOTONIC ns), now - stamp on arrival, in a histogram
 * of 1 us bins up to 1 s. seq_lost: per flow (SSRC ssrc_base + i, i < flows) the RFC 3550 A.3
 * count expected - received from the extended highest sequence number.
 */
#include "common.h"

#include <getopt.h>

#define MAX_BATCH 256
#define HIST_BINS 1000000 /* 1 us bins, up to 1 s */
#define CMSG_BYTES 64

typedef struct {
    int seen;
    uint32_t base_seq, max_ext;
    long long received;
} flowstat_t;

static uint32_t hist[HIST_BINS + 1];

/* The send time of an RFC 8285 one-byte-header element with ID 1 and 8 data bytes, or 0. */
static uint64_t find_stamp(const uint8_t *p, size_t len) {
    if (len < RTP_HEADER || (p[0] & 0x10) == 0) return 0;
    size_t off = RTP_HEADER + 4u * (p[0] & 0x0F);
    if (off + 4 > len) return 0;
    if (((p[off] << 8) | p[off + 1]) != STAMP_PROFILE) return 0;
    size_t words = (size_t)((p[off + 2] << 8) | p[off + 3]);
    size_t i = off + 4, end = off + 4 + 4 * words;
    if (end > len) return 0;
    while (i < end) {
        uint8_t b = p[i];
        if (b == 0) { i++; continue; } /* padding */
        unsigned id = b >> 4, l = (b & 0x0F) + 1u;
        if (id == 15) return 0;
        if (id == 1 && l == 8 && i + 1 + 8 <= end) {
            uint64_t t = 0;
            for (int k = 0; k < 8; k++) t = (t << 8) | p[i + 1 + k];
            return t;
        }
        i += 1 + l;
    }
    return 0;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC in ns, from the closest of a few paired readings. */
static int64_t realtime_offset(void) {
    int64_t best = 0;
    uint64_t best_gap = UINT64_MAX;
    for (int i = 0; i < 16; i++) {
        struct timespec r;
        uint64_t m0 = now_ns();
        clock_gettime(CLOCK_REALTIME, &r);
        uint64_t m1 = now_ns();
        if (m1 - m0 < best_gap) {
            best_gap = m1 - m0;
            best = ((int64_t)r.tv_sec * 1000000000 + r.tv_nsec) - (int64_t)(m0 + (m1 - m0) / 2);
        }
    }
    return best;
}

/* The SCM_TIMESTAMPNS of a received message as CLOCK_MONOTONIC ns, or 0 if it has none. */
static uint64_t kernel_arrival(struct msghdr *h, int64_t offset) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            return (uint64_t)(((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec) - offset);
        }
    }
    return 0;
}

static double hist_quantile(long long total, double q) {
    long long rank = (long long)(q * (double)total + 0.999999);
    if (rank < 1) rank = 1;
    long long acc = 0;
    for (int b = 0; b <= HIST_BINS; b++) {
        acc += hist[b];
        if (acc >= rank) return (double)(b + 1) / 1000.0; /* upper edge of the bin, ms */
    }
    return (double)HIST_BINS / 1000.0;
}

int main(int argc, char **argv) {
    const char *prog = "sink";
    int port = 0, batch = 64, nflows = 0, kernel_time = 0;
    double lazy_us = 0;
    double duration = 60.0, idle_ms = 0;
    long long expect = 0;
    uint32_t ssrc_base = 0x10000000u;
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'},      {"duration", required_argument, 0, 't'},
        {"idle-ms", required_argument, 0, 'i'},   {"expect", required_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},     {"ssrc-base", required_argument, 0, 'S'},
        {"flows", required_argument, 0, 'F'},     {"kernel-time", no_argument, 0, 'k'},
        {"lazy-us", required_argument, 0, 'l'},   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = (int)parse_double(prog, "--port", optarg, 0); break;
        case 't': duration = parse_double(prog, "--duration", optarg, 0.001); break;
        case 'i': idle_ms = parse_double(prog, "--idle-ms", optarg, 0); break;
        case 'e': expect = (long long)parse_double(prog, "--expect", optarg, 0); break;
        case 'b': batch = (int)parse_double(prog, "--batch", optarg, 1); break;
        case 'S': ssrc_base = (uint32_t)parse_double(prog, "--ssrc-base", optarg, 0); break;
        case 'k': kernel_time = 1; break;
        case 'l': lazy_us = parse_double(prog, "--lazy-us", optarg, 0); break;
        case 'F': nflows = (int)parse_double(prog, "--flows", optarg, 0); break;
        default: usage_error(prog, "unknown option");
        }
    }
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    install_signals();
    flowstat_t *flows = calloc((size_t)(nflows > 0 ? nflows : 1), sizeof *flows);
    if (flows == NULL) die("calloc");

    int bound;
    int fd = bind_udp(port, 16 << 20, &bound);
    recv_timeout(fd, 20000);
    int64_t offset = 0;
    if (kernel_time) {
        int on = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) die("SO_TIMESTAMPNS");
        offset = realtime_offset();
    } else {
        lazy_us = 0; /* arrival = when we read it: reading late would count as latency */
    }
    printf("{\"port\": %d}\n", bound);
    fflush(stdout);

    static uint8_t bufs[MAX_BATCH][MAX_PACKET];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    static uint8_t cmsgs[MAX_BATCH][CMSG_BYTES];
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = MAX_PACKET;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const struct timespec lazy = {.tv_sec = 0, .tv_nsec = (long)(lazy_us * 1000)};
    long long received = 0, bytes = 0, not_rtp = 0, stamped = 0, pt[128] = {0};
    double lat_sum_ms = 0, lat_max_ms = 0;
    uint64_t first = 0, last = 0;
    const uint64_t t_end = now_ns() + (uint64_t)(duration * 1e9);
    const uint64_t idle_ns = (uint64_t)(idle_ms * 1e6);
    while (!g_stop) {
        for (int i = 0; i < batch; i++) {
            iov[i].iov_len = MAX_PACKET;
            msgs[i].msg_hdr.msg_control = kernel_time ? cmsgs[i] : NULL;
            msgs[i].msg_hdr.msg_controllen = kernel_time ? CMSG_BYTES : 0;
        }
        int n = recvmmsg(fd, msgs, (unsigned)batch, MSG_WAITFORONE, NULL);
        uint64_t now = now_ns();
        if (n > 0) {
            if (first == 0) first = now;
            last = now;
            for (int i = 0; i < n; i++) {
                const uint8_t *p = bufs[i];
                size_t len = msgs[i].msg_len;
                if (len < RTP_HEADER || (p[0] >> 6) != 2) {
                    not_rtp++;
                    continue;
                }
                received++;
                bytes += (long long)len;
                pt[p[1] & 0x7F]++;
                uint64_t t = find_stamp(p, len);
                if (t != 0) {
                    uint64_t at = kernel_time ? kernel_arrival(&msgs[i].msg_hdr, offset) : 0;
                    uint64_t arrival = at != 0 ? at : now;
                    stamped++;
                    uint64_t us = arrival > t ? (arrival - t) / 1000u : 0;
                    hist[us < HIST_BINS ? us : HIST_BINS]++;
                    double ms = arrival > t ? (double)(arrival - t) / 1e6 : 0.0;
                    lat_sum_ms += ms;
                    if (ms > lat_max_ms) lat_max_ms = ms;
                }
                uint32_t ssrc = ((uint32_t)p[8] << 24) | ((uint32_t)p[9] << 16) | ((uint32_t)p[10] << 8) | p[11];
                uint32_t idx = ssrc - ssrc_base;
                if (nflows > 0 && idx < (uint32_t)nflows) {
                    flowstat_t *f = &flows[idx];
                    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
                    if (!f->seen) {
                        f->seen = 1;
                        f->base_seq = seq;
                        f->max_ext = seq;
                    } else {
                        int16_t delta = (int16_t)(seq - (uint16_t)f->max_ext);
                        if (delta > 0) f->max_ext += (uint32_t)delta;
                    }
                    f->received++;
                }
            }
            if (expect > 0 && received >= expect) break;
            if (lazy_us > 0 && n < batch) nanosleep(&lazy, NULL);
        }
        if (now >= t_end) break;
        if (idle_ns > 0 && first != 0 && now - last >= idle_ns) break;
    }
    long long flows_seen = 0, seq_lost = 0;
    for (int i = 0; i < nflows; i++) {
        if (!flows[i].seen) continue;
        flows_seen++;
        seq_lost += (long long)(flows[i].max_ext - flows[i].base_seq + 1) - flows[i].received;
    }
    double elapsed = last > first ? (double)(last - first) / 1e9 : 0.0;
    printf("{\"received\": %lld, \"bytes\": %lld, \"elapsed_s\": %.6f, \"pps\": %.1f, \"pt\": {", received, bytes,
           elapsed, elapsed > 0 ? (double)(received - 1) / elapsed : 0.0);
    int comma = 0;
    for (int i = 0; i < 128; i++)
        if (pt[i]) {
            printf("%s\"%d\": %lld", comma ? ", " : "", i, pt[i]);
            comma = 1;
        }
    printf("}, \"not_rtp\": %lld, \"stamped\": %lld, \"latency_ms\": ", not_rtp, stamped);
    if (stamped > 0)
        printf("{\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f, \"mean\": %.3f}",
               hist_quantile(stamped, 0.50), hist_quantile(stamped, 0.90), hist_quantile(stamped, 0.99),
               hist_quantile(stamped, 0.999), lat_max_ms, lat_sum_ms / (double)stamped);
    else
        printf("null");
    printf(", \"flows_seen\": %lld, \"seq_lost\": %lld, \"cpu_s\": %.3f}\n", flows_seen, seq_lost, cpu_seconds());
    fflush(stdout);
    return 0;
}
