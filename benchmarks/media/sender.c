/* The benchmark's RTP sender: G.711 mu-law packets (12-byte header + 160-byte payload) to one or
 * more destinations, paced at a total rate or blasted, in batches through sendmmsg.
 *
 *   sender --dest HOST:PORT [--dest ...] | --dests-file FILE   (one HOST:PORT a line)
 *          [--rate PPS] [--duration S] [--count N] [--batch B] [--stamp] [--ssrc-base N]
 *          [--tick-us US]
 *
 * Flows: destination i is flow i (SSRC ssrc_base + i, its own sequence number and timestamp).
 * Packet j of the run goes to flow j mod F, so pacing the total rate R = F * r gives every flow
 * the rate r with the flows spread evenly over the packet interval (calls: r = 50, ptime 20 ms).
 * --rate 0 blasts as fast as sendmmsg goes. Stops after --duration or --count packets (whichever
 * comes first) and prints {"sent", "send_errors", "elapsed_s", "pps", "flows", "max_late_ms",
 * "bytes_per_packet", "cpu_s"}.
 * A paced sender sleeps at least --tick-us (default 0) between batches: with a tick it sends
 * what fell due meanwhile in one go (a real host's timer granularity) instead of waking per packet.
 * --stamp adds the RFC 8285 send-time extension (ID 1, CLOCK_MONOTONIC ns, big-endian) written
 * just before each batch is handed to the kernel: the packet is 188 bytes then.
 * max_late_ms: how far the sender fell behind its schedule at worst (a starved sender, not the
 * path under test, if large).
 */
#include "common.h"

#include <getopt.h>
#include <math.h>
#include <sys/prctl.h>

#define MAX_BATCH 256

typedef struct {
    struct sockaddr_in addr;
    uint16_t seq;
    uint32_t ts;
} flow_t;

static uint8_t linear_to_ulaw(int sample) {
    const int bias = 0x84, clip = 32635;
    int sign = (sample >> 8) & 0x80;
    if (sign) sample = -sample;
    if (sample > clip) sample = clip;
    sample += bias;
    int exponent = 7;
    for (int mask = 0x4000; (sample & mask) == 0 && exponent > 0; mask >>= 1) exponent--;
    int mantissa = (sample >> (exponent + 3)) & 0x0F;
    return (uint8_t)~(sign | (exponent << 4) | mantissa);
}

static flow_t *read_dests(const char *prog, const char *path, int *n) {
    FILE *f = fopen(path, "r");
    if (f == NULL) die(path);
    int cap = 64, count = 0;
    flow_t *flows = calloc((size_t)cap, sizeof *flows);
    char line[128];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') continue;
        if (count == cap) {
            cap *= 2;
            flows = realloc(flows, (size_t)cap * sizeof *flows);
            if (flows == NULL) die("realloc");
        }
        memset(&flows[count], 0, sizeof flows[count]);
        parse_hostport(prog, line, &flows[count].addr);
        count++;
    }
    fclose(f);
    *n = count;
    return flows;
}

int main(int argc, char **argv) {
    const char *prog = "sender";
    double rate = 0, duration = 1.0;
    long long count = 0;
    int batch = 64, stamp = 0, nflows = 0, cap = 0;
    double tick_us = 0;
    uint32_t ssrc_base = 0x10000000u;
    flow_t *flows = NULL;
    static const struct option opts[] = {
        {"dest", required_argument, 0, 'd'},   {"dests-file", required_argument, 0, 'f'},
        {"rate", required_argument, 0, 'r'},   {"duration", required_argument, 0, 't'},
        {"count", required_argument, 0, 'n'},  {"batch", required_argument, 0, 'b'},
        {"stamp", no_argument, 0, 's'},        {"ssrc-base", required_argument, 0, 'S'},
        {"tick-us", required_argument, 0, 'T'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (nflows == cap) {
                cap = cap ? cap * 2 : 8;
                flows = realloc(flows, (size_t)cap * sizeof *flows);
                if (flows == NULL) die("realloc");
            }
            memset(&flows[nflows], 0, sizeof flows[nflows]);
            parse_hostport(prog, optarg, &flows[nflows++].addr);
            break;
        case 'f': free(flows); flows = read_dests(prog, optarg, &nflows); cap = nflows; break;
        case 'r': rate = parse_double(prog, "--rate", optarg, 0); break;
        case 't': duration = parse_double(prog, "--duration", optarg, 0.001); break;
        case 'n': count = (long long)parse_double(prog, "--count", optarg, 0); break;
        case 'b': batch = (int)parse_double(prog, "--batch", optarg, 1); break;
        case 's': stamp = 1; break;
        case 'T': tick_us = parse_double(prog, "--tick-us", optarg, 0); break;
        case 'S': ssrc_base = (uint32_t)parse_double(prog, "--ssrc-base", optarg, 0); break;
        default: usage_error(prog, "unknown option");
        }
    }
    if (nflows == 0) usage_error(prog, "no destination: give --dest HOST:PORT or --dests-file FILE");
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    install_signals();
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake on time: pacing at 10 us per packet */

    int port;
    int fd = bind_udp(0, 4 << 20, &port);

    uint8_t payload[G711_PAYLOAD]; /* a 1 kHz tone at 8 kHz: 8 samples a period, 20 periods */
    for (int i = 0; i < G711_PAYLOAD; i++)
        payload[i] = linear_to_ulaw((int)lround(8000.0 * sin(2.0 * M_PI * (double)i / 8.0)));
    const size_t hdr = RTP_HEADER + (stamp ? STAMP_EXT_BYTES : 0);
    const size_t plen = hdr + G711_PAYLOAD;

    static uint8_t bufs[MAX_BATCH][MAX_PACKET];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        uint8_t *p = bufs[i];
        p[0] = 0x80 | (stamp ? 0x10 : 0); /* V=2, X when stamped */
        p[1] = 0;                         /* PT 0 = PCMU */
        if (stamp) {
            p[12] = STAMP_PROFILE >> 8;
            p[13] = STAMP_PROFILE & 0xFF;
            p[14] = 0;
            p[15] = 3; /* 3 words follow */
            p[16] = STAMP_ID_LEN;
            memset(p + 25, 0, 3);
        }
        memcpy(p + hdr, payload, G711_PAYLOAD);
        iov[i].iov_base = p;
        iov[i].iov_len = plen;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    for (int f = 0; f < nflows; f++) {
        flows[f].seq = (uint16_t)(f * 7919u);
        flows[f].ts = (uint32_t)f * 104729u;
    }

    long long sent = 0, errors = 0, attempted = 0;
    double max_late = 0;
    const uint64_t t0 = now_ns();
    const uint64_t t_end = t0 + (uint64_t)(duration * 1e9);
    long long next_flow = 0;
    while (!g_stop) {
        uint64_t now = now_ns();
        if (now >= t_end) break;
        long long want = batch;
        if (rate > 0) {
            long long due = (long long)((double)(now - t0) * 1e-9 * rate) + 1;
            want = due - attempted;
            if (want <= 0) { /* sleep until the next packet is due */
                uint64_t at = t0 + (uint64_t)((double)attempted / rate * 1e9);
                uint64_t earliest = now + (uint64_t)(tick_us * 1e3);
                if (at < earliest) at = earliest;
                struct timespec ts = {.tv_sec = (time_t)(at / 1000000000ull), .tv_nsec = (long)(at % 1000000000ull)};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                continue;
            }
            double late = ((double)now - (double)t0 - (double)attempted / rate * 1e9) / 1e6;
            if (late > max_late) max_late = late;
            if (want > batch) want = batch;
        }
        if (count > 0 && attempted + want > count) want = count - attempted;
        if (want <= 0) break;
        for (long long i = 0; i < want; i++) {
            flow_t *fl = &flows[next_flow];
            uint8_t *p = bufs[i];
            p[2] = (uint8_t)(fl->seq >> 8);
            p[3] = (uint8_t)fl->seq;
            p[4] = (uint8_t)(fl->ts >> 24);
            p[5] = (uint8_t)(fl->ts >> 16);
            p[6] = (uint8_t)(fl->ts >> 8);
            p[7] = (uint8_t)fl->ts;
            uint32_t ssrc = ssrc_base + (uint32_t)next_flow;
            p[8] = (uint8_t)(ssrc >> 24);
            p[9] = (uint8_t)(ssrc >> 16);
            p[10] = (uint8_t)(ssrc >> 8);
            p[11] = (uint8_t)ssrc;
            fl->seq++;
            fl->ts += G711_PAYLOAD;
            msgs[i].msg_hdr.msg_name = &fl->addr;
            if (++next_flow == nflows) next_flow = 0;
        }
        if (stamp) {
            uint64_t t = now_ns();
            for (long long i = 0; i < want; i++)
                for (int b = 0; b < 8; b++) bufs[i][17 + b] = (uint8_t)(t >> (56 - 8 * b));
        }
        int off = 0;
        while (off < want) {
            int n = sendmmsg(fd, msgs + off, (unsigned)(want - off), 0);
            if (n < 0) {
                if (errno == EINTR && g_stop) break;
                errors++; /* this packet is lost; go on with the rest of the batch */
                off++;
                continue;
            }
            sent += n;
            off += n;
        }
        attempted += want;
        if (count > 0 && attempted >= count) break;
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    printf("{\"sent\": %lld, \"send_errors\": %lld, \"elapsed_s\": %.6f, \"pps\": %.1f, \"flows\": %d, "
           "\"max_late_ms\": %.3f, \"bytes_per_packet\": %zu, \"cpu_s\": %.3f}\n",
           sent, errors, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0, nflows, max_late, plen, cpu_seconds());
    fflush(stdout);
    return 0;
}
