/* The ceiling: a bare C relay. Receives a batch (recvmmsg), rewrites one header byte of every
 * packet (byte 1: payload type set to 8 = PCMA, marker bit kept), sends the batch (sendmmsg) to
 * the destination from a second socket, as the MRFP sends from the other side's port.
 *
 *   relay --dest HOST:PORT [--port P] [--batch B] [--duration S]
 *
 * Prints {"port": P} once bound, then runs until --duration (default 60 s) or SIGTERM/SIGINT and
 * prints {"received", "forwarded", "send_errors", "batches"}.
 */
#include "common.h"

#include <getopt.h>

#define MAX_BATCH 256

int main(int argc, char **argv) {
    const char *prog = "relay";
    struct sockaddr_in dest;
    int have_dest = 0, port = 0, batch = 64;
    double duration = 60.0;
    static const struct option opts[] = {
        {"dest", required_argument, 0, 'd'},  {"port", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'}, {"duration", required_argument, 0, 't'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': parse_hostport(prog, optarg, &dest); have_dest = 1; break;
        case 'p': port = (int)parse_double(prog, "--port", optarg, 0); break;
        case 'b': batch = (int)parse_double(prog, "--batch", optarg, 1); break;
        case 't': duration = parse_double(prog, "--duration", optarg, 0.001); break;
        default: usage_error(prog, "unknown option");
        }
    }
    if (!have_dest) usage_error(prog, "--dest HOST:PORT is required");
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    install_signals();

    int bound, out_port;
    int in = bind_udp(port, 8 << 20, &bound);
    int out = bind_udp(0, 8 << 20, &out_port);
    if (connect(out, (struct sockaddr *)&dest, sizeof dest) != 0) die("connect");
    recv_timeout(in, 100000);
    printf("{\"port\": %d}\n", bound);
    fflush(stdout);

    static uint8_t bufs[MAX_BATCH][MAX_PACKET];
    static struct iovec iov[MAX_BATCH];
    static struct mmsghdr msgs[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = MAX_PACKET;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long received = 0, forwarded = 0, errors = 0, batches = 0;
    const uint64_t t_end = now_ns() + (uint64_t)(duration * 1e9);
    while (!g_stop && now_ns() < t_end) {
        for (int i = 0; i < batch; i++) iov[i].iov_len = MAX_PACKET;
        int n = recvmmsg(in, msgs, (unsigned)batch, MSG_WAITFORONE, NULL);
        if (n <= 0) continue; /* timeout or signal: check the stop conditions */
        received += n;
        batches++;
        for (int i = 0; i < n; i++) {
            uint8_t *p = bufs[i];
            if (msgs[i].msg_len >= RTP_HEADER) p[1] = (uint8_t)((p[1] & 0x80) | 8);
            iov[i].iov_len = msgs[i].msg_len;
        }
        int off = 0;
        while (off < n) {
            int s = sendmmsg(out, msgs + off, (unsigned)(n - off), 0);
            if (s < 0) {
                errors++;
                off++;
                continue;
            }
            forwarded += s;
            off += s;
        }
    }
    printf("{\"received\": %lld, \"forwarded\": %lld, \"send_errors\": %lld, \"batches\": %lld}\n", received,
           forwarded, errors, batches);
    fflush(stdout);
    return 0;
}
