/*
 * Fuzz harness for the media engine's per-packet core (nf_modules/mediacore/engine_core.c):
 * mc_receive + mc_apply + mc_snapshot_take + the latency histogram, fed with mutated RTP.
 *
 * Built and run by test_fuzz_engine.py under -fsanitize=address,undefined (any report aborts).
 * Standalone:  fuzz_engine SEED SECONDS   (seeded xorshift mutator, bounded time)
 * libFuzzer:   clang -DMC_LIBFUZZER -fsanitize=fuzzer,address,undefined ... (LLVMFuzzerTestOneInput)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_core.h"

static uint64_t rng_state;

static uint64_t next_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static unsigned below(unsigned n) { return n ? (unsigned)(next_rand() % n) : 0; }

#define N_FLOWS 4
static mc_flow flows[N_FLOWS];
static uint8_t out_mem[MC_MAX_OUTS][MC_OUT_CAP];

/* One input through one flow with one rule; checks the outputs stay inside their buffers. */
static void run_one(mc_flow *f, const mc_rule *r, const uint8_t *p, size_t n, int64_t now)
{
    mc_out outs[MC_MAX_OUTS];
    for (int i = 0; i < MC_MAX_OUTS; i++)
        outs[i].buf = out_mem[i];
    rtp_header h;
    if (n > MC_MAX_PACKET)
        n = MC_MAX_PACKET;
    /* Copy into an exact-size heap block so ASan sees any read past the datagram. */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    if (mc_receive(f, copy, n, now, &h) < 0) {
        size_t k = mc_apply(f, r, copy, n, &h, outs);
        if (k > MC_MAX_OUTS)
            abort();
        for (size_t i = 0; i < k; i++)
            if (outs[i].len > MC_OUT_CAP)
                abort();
    }
#ifdef MC_FUZZ_SELFTEST
    volatile uint8_t sink = copy[n + 8]; /* planted bug: proves the test sees sanitizer reports */
    (void)sink;
#endif
    free(copy);
}

static void rule_from(uint64_t bits, mc_rule *r)
{
    static const int ptimes[] = {0, 0, 10, 20, 30, 60, 200};
    r->action = (int)(bits % 3);
    r->transcode = (int)((bits >> 2) % 3);
    r->ptime_ms = ptimes[(bits >> 4) % 7];
    r->payload_type = (int)((bits >> 8) % 129) - 1;
}

static void reset_flows(int64_t now)
{
    for (int i = 0; i < N_FLOWS; i++) {
        mc_flow_free(&flows[i]);
        mc_flow_init(&flows[i], i & 1, (size_t)(i * 1000), now);
    }
}

#ifdef MC_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        reset_flows(0);
        ready = 1;
    }
    if (size < 2)
        return 0;
    mc_rule r;
    rule_from(data[0], &r);
    run_one(&flows[data[1] % N_FLOWS], &r, data + 2, size - 2, (int64_t)size * 1000000);
    return 0;
}
#else
/* A valid packet to mutate: CSRCs, a stamped one-byte extension and padding, sometimes. */
static size_t template_packet(uint8_t *b, int64_t now)
{
    unsigned cc = below(3), ext = below(2), pad = below(3) == 0 ? 1 + below(8) : 0;
    size_t payload = below(4) == 0 ? below(MC_MAX_PACKET - 100) : 160;
    size_t off = 12;
    b[0] = (uint8_t)(0x80 | (pad ? 0x20 : 0) | (ext ? 0x10 : 0) | cc);
    b[1] = (uint8_t)below(256);
    for (int i = 2; i < 12; i++)
        b[i] = (uint8_t)below(256);
    off += 4 * cc;
    if (ext) {
        b[off] = 0xBE;
        b[off + 1] = 0xDE;
        b[off + 2] = 0;
        b[off + 3] = 3;
        b[off + 4] = 0x17;
        uint64_t stamp = (uint64_t)now - below(1000000000);
        for (int i = 0; i < 8; i++)
            b[off + 5 + i] = (uint8_t)(stamp >> (56 - 8 * i));
        memset(b + off + 13, 0, 3);
        off += 16;
    }
    for (size_t i = 0; i < payload; i++)
        b[off + i] = (uint8_t)below(256);
    off += payload;
    if (pad) {
        memset(b + off, 0, pad - 1);
        b[off + pad - 1] = (uint8_t)pad;
        off += pad;
    }
    return off;
}

static size_t mutate(uint8_t *b, size_t n)
{
    unsigned edits = below(4);
    for (unsigned e = 0; e < edits; e++) {
        switch (below(5)) {
        case 0: /* flip a bit in the first bytes (where the header lives) */
            if (n)
                b[below((unsigned)(n < 32 ? n : 32))] ^= (uint8_t)(1u << below(8));
            break;
        case 1: /* random byte anywhere */
            if (n)
                b[below((unsigned)n)] = (uint8_t)below(256);
            break;
        case 2: /* truncate */
            n = below((unsigned)n + 1);
            break;
        case 3: /* the last byte (padding count) */
            if (n)
                b[n - 1] = (uint8_t)below(256);
            break;
        default: /* extension length word */
            if (n > 16)
                b[15] = (uint8_t)below(256);
            break;
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) * 2654435761u + 1 : 1;
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    static uint8_t buf[MC_MAX_PACKET + 64];
    int64_t t = 1000000000000LL;
    unsigned long long iterations = 0;
    reset_flows(t);
    for (;;) {
        for (int i = 0; i < 1000; i++, iterations++) {
            t += below(40000000);
            size_t n = below(8) == 0 ? below(64) : template_packet(buf, t);
            if (n && below(8) == 0)
                for (size_t j = 0; j < n; j++)
                    buf[j] = (uint8_t)below(256);
            n = mutate(buf, n);
            mc_rule r;
            rule_from(next_rand(), &r);
            mc_flow *f = &flows[below(N_FLOWS)];
            run_one(f, &r, buf, n, below(50) == 0 ? (int64_t)below(1u << 31) : t);
            if (below(64) == 0) {
                mc_snapshot s;
                mc_snapshot_take(f, t, &s);
                (void)mc_hist_percentile(&f->hist, (double)below(101));
            }
        }
        if (below(20) == 0)
            reset_flows(t);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (elapsed >= seconds)
            break;
    }
    for (int i = 0; i < N_FLOWS; i++)
        mc_flow_free(&flows[i]);
    printf("iterations %llu\n", iterations);
    return 0;
}
#endif
