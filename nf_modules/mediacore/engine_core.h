/*
 * engine_core.h: the per-packet logic of the media engine (paper 004 V-A, Fig. 2: the Media
 * Processor's packet work), in plain C with no Python objects, no sockets and no threads.
 *
 * The packet thread of _mediaengine.c calls it for every datagram; the fuzz harness in
 * tests/fuzz/ calls it under ASan/UBSan; pure_packet.py is its line-by-line Python twin, held to
 * it by the differential tests.  Time is always passed in (CLOCK_MONOTONIC nanoseconds).
 */
#ifndef MEDIACORE_ENGINE_CORE_H
#define MEDIACORE_ENGINE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "rtp_g711.h"

/* Why a datagram was dropped; names (mc_drop_names) are the keys of stats(). */
enum mc_drop {
    DROP_TRUNCATED,        /* shorter than the fixed header */
    DROP_BAD_VERSION,      /* V != 2 */
    DROP_CSRC_OVERRUN,     /* CSRC list past the end */
    DROP_BAD_EXTENSION,    /* header extension past the end */
    DROP_BAD_PADDING,      /* padding count 0 or longer than the packet */
    DROP_UNKNOWN_FLOW,     /* readable socket no flow owns any more (race with remove_flow) */
    DROP_REMOVED_FLOW,     /* queued on a flow's socket when the flow was removed */
    DROP_HOLD_OVERFLOW,    /* baseline hold queue full */
    DROP_INSTRUCTION,      /* the instruction says drop */
    DROP_SEND_ERROR,       /* sendmmsg/sendto refused it */
    DROP_RECORDING_FULL,   /* payload not recorded: recording at its limit (packet still processed) */
    MC_N_DROPS
};
extern const char *const mc_drop_names[MC_N_DROPS];

enum mc_action { ACTION_FORWARD = 0, ACTION_DROP = 1, ACTION_SINK = 2 };
enum mc_transcode { TRANSCODE_NONE = 0, TRANSCODE_ULAW2ALAW = 1, TRANSCODE_ALAW2ULAW = 2 };

/* The per-packet part of an instruction (where to send lives with the engine). */
typedef struct {
    int action;       /* enum mc_action */
    int transcode;    /* enum mc_transcode */
    int ptime_ms;     /* 0: keep the packetisation */
    int payload_type; /* -1: keep (transcode implies 8 / 0) */
} mc_rule;

/* HDR-style log-linear histogram of one-way latency in microseconds: exact below 128 us, then
 * 64 sub-buckets per power of two (relative error < 1/64).  Values are capped at 2^36 us. */
#define HIST_SUB_BITS 7
#define HIST_HALF (1u << (HIST_SUB_BITS - 1))
#define HIST_MAX_US ((1ull << 36) - 1)
#define HIST_BUCKETS ((36 - HIST_SUB_BITS + 2) * HIST_HALF)

typedef struct {
    uint64_t total; /* before the buckets: next to the flow's other per-packet fields */
    uint64_t max_us;
    uint32_t counts[HIST_BUCKETS];
} mc_hist;

unsigned mc_hist_index(uint64_t us);
uint64_t mc_hist_lower(unsigned index); /* lowest value that falls in the bucket */
uint64_t mc_hist_upper(unsigned index); /* highest value that falls in the bucket */
void mc_hist_record(mc_hist *h, uint64_t us);
uint64_t mc_hist_percentile(const mc_hist *h, double q); /* q in [0,100]; 0 when empty */

/* Repacketization buffer (instruction ptime differs from the incoming packet interval). */
#define RP_CAP 4096
#define RP_EXT_CAP 64

/* Largest datagram the engine receives; longer ones are truncated by the kernel (MSG_TRUNC)
 * and counted as truncated. */
#define MC_MAX_PACKET 2048
/* Output packets one input can produce at most (repacketization to 10 ms of 2048 bytes + flush). */
#define MC_MAX_OUTS 28
#define MC_OUT_CAP (RTP_HEADER_SIZE + RP_EXT_CAP + RP_CAP)

typedef struct {
    /* Hot scalars first and the big arrays (histogram, repacketization buffer) last: with
     * thousands of flows each packet finds its flow cold, and this keeps it to few cache lines. */
    /* cumulative */
    uint64_t packets, bytes, payload_bytes;
    uint32_t ssrc;
    /* RFC 3550 A.1 sequence state */
    int seq_init;
    uint16_t max_seq;
    uint32_t cycles, base_seq, bad_seq, received;
    /* RFC 3550 A.8 jitter, in timestamp units (8 kHz) times 16 */
    int have_transit;
    uint32_t transit;
    int64_t jitter_q4;
    /* the current metadata interval */
    uint64_t iv_packets, iv_payload_bytes, iv_latency_count;
    int64_t iv_latency_sum_ns;
    int64_t iv_start_ns;
    uint64_t record_seq;
    /* repacketization state (its buffers below) */
    size_t rp_len;
    unsigned rp_target;
    uint32_t rp_ts;
    uint16_t rp_seq;
    int rp_seq_init;
    unsigned rp_pt, rp_marker;
    size_t rp_ext_len;
    /* recording (record=True flows) */
    int record;
    uint8_t *rec;
    size_t rec_len, rec_cap, rec_limit;
    uint64_t drops[MC_N_DROPS];
    mc_hist hist;
    uint8_t rp_ext[RP_EXT_CAP]; /* raw extension block (4-byte header + body) */
    uint8_t rp_buf[RP_CAP];
} mc_flow;

/* One output datagram, written by mc_apply into caller memory of MC_OUT_CAP bytes. */
typedef struct {
    uint8_t *buf;
    size_t len;
} mc_out;

typedef struct {
    uint64_t packets, bytes;
    uint32_t ssrc;
    double payload_size, packet_rate, jitter_ms;
    int64_t lost;
    double latency_ms; /* NaN when no stamped packet arrived in the interval */
    uint64_t seq;
} mc_snapshot;

void mc_flow_init(mc_flow *f, int record, size_t rec_limit, int64_t now_ns);
void mc_flow_free(mc_flow *f);

/* Parse a datagram and account it in the flow's metadata.  Returns -1 when valid (h filled),
 * else the enum mc_drop reason (already counted in f->drops). */
int mc_receive(mc_flow *f, const uint8_t *p, size_t n, int64_t arrival_ns, rtp_header *h);

/* Apply a rule to a packet mc_receive accepted.  Writes up to MC_MAX_OUTS packets into
 * outs[i].buf (each MC_OUT_CAP bytes) and returns how many.  Counts DROP_INSTRUCTION. */
size_t mc_apply(mc_flow *f, const mc_rule *r, const uint8_t *p, size_t n, const rtp_header *h, mc_out *outs);

/* The metadata record for the interval ending now; resets the interval counters. */
void mc_snapshot_take(mc_flow *f, int64_t now_ns, mc_snapshot *s);

/* Cumulative loss (RFC 3550 A.3), never negative; jitter in ms. */
int64_t mc_lost(const mc_flow *f);
double mc_jitter_ms(const mc_flow *f);

/* The send-time stamp (RFC 8285 one-byte element id 1, 8 bytes) if present. */
int mc_stamp(const uint8_t *p, const rtp_header *h, int64_t *stamp_ns);

#endif /* MEDIACORE_ENGINE_CORE_H */
