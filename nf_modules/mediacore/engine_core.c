/*
 * engine_core.c: the media engine's per-packet logic (see engine_core.h).  Runs on the engine's
 * packet thread (never with the GIL), in the differential-test entry point, and in the fuzz
 * harness.  pure_packet.py mirrors every function here; keep the two in step.
 */
#include "engine_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const mc_drop_names[MC_N_DROPS] = {
    "truncated",   "bad_version",      "csrc_overrun",     "bad_extension", "bad_padding",    "unknown_flow",
    "removed_flow", "hold_overflow",   "instruction_drop", "send_error",    "recording_full",
};

#define RTP_SEQ_MOD (1u << 16)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define CLOCK_RATE_NS_PER_TICK 125000 /* 8 kHz G.711 media clock */
#define BYTES_PER_MS 8                /* G.711: one byte per sample at 8 kHz */

/* ------------------------------------------------------------------ latency histogram --- */

static unsigned msb64(uint64_t v) { return 63u - (unsigned)__builtin_clzll(v); }

unsigned mc_hist_index(uint64_t us)
{
    if (us > HIST_MAX_US)
        us = HIST_MAX_US;
    if (us < (1u << HIST_SUB_BITS))
        return (unsigned)us;
    unsigned e = msb64(us) - (HIST_SUB_BITS - 1);
    return e * HIST_HALF + (unsigned)(us >> e);
}

uint64_t mc_hist_lower(unsigned index)
{
    if (index < (1u << HIST_SUB_BITS))
        return index;
    unsigned e = index / HIST_HALF - 1;
    return (uint64_t)(index - e * HIST_HALF) << e;
}

uint64_t mc_hist_upper(unsigned index)
{
    if (index < (1u << HIST_SUB_BITS))
        return index;
    unsigned e = index / HIST_HALF - 1;
    uint64_t m = index - e * HIST_HALF;
    return ((m + 1) << e) - 1;
}

void mc_hist_record(mc_hist *h, uint64_t us)
{
    if (us > HIST_MAX_US)
        us = HIST_MAX_US;
    h->counts[mc_hist_index(us)]++;
    h->total++;
    if (us > h->max_us)
        h->max_us = us;
}

uint64_t mc_hist_percentile(const mc_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    double want = ceil(q / 100.0 * (double)h->total);
    uint64_t rank = want < 1.0 ? 1 : (uint64_t)want;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t upper = mc_hist_upper(i);
            return upper < h->max_us ? upper : h->max_us;
        }
    }
    return h->max_us;
}

/* ------------------------------------------------------------------------ flow state --- */

void mc_flow_init(mc_flow *f, int record, size_t rec_limit, int64_t now_ns)
{
    memset(f, 0, sizeof *f);
    f->record = record;
    f->rec_limit = rec_limit;
    f->iv_start_ns = now_ns;
}

void mc_flow_free(mc_flow *f)
{
    free(f->rec);
    f->rec = NULL;
    f->rec_len = f->rec_cap = 0;
}

/* RFC 3550 A.1 without the probation of MIN_SEQUENTIAL packets. */
static void init_seq(mc_flow *f, uint16_t seq)
{
    f->base_seq = seq;
    f->max_seq = seq;
    f->bad_seq = RTP_SEQ_MOD + 1;
    f->cycles = 0;
    f->received = 0;
}

static void update_seq(mc_flow *f, uint16_t seq)
{
    if (!f->seq_init) {
        f->seq_init = 1;
        init_seq(f, seq);
        f->received++;
        return;
    }
    uint16_t udelta = (uint16_t)(seq - f->max_seq);
    if (udelta < MAX_DROPOUT) {
        if (seq < f->max_seq)
            f->cycles += RTP_SEQ_MOD;
        f->max_seq = seq;
    } else if (udelta <= RTP_SEQ_MOD - MAX_MISORDER) {
        if (seq == f->bad_seq) {
            init_seq(f, seq); /* the source restarted: resync */
        } else {
            f->bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1);
            return;
        }
    }
    /* else: duplicate or reordered packet */
    f->received++;
}

int64_t mc_lost(const mc_flow *f)
{
    if (!f->seq_init)
        return 0;
    int64_t expected = (int64_t)f->cycles + f->max_seq - (int64_t)f->base_seq + 1;
    int64_t lost = expected - (int64_t)f->received;
    return lost > 0 ? lost : 0;
}

double mc_jitter_ms(const mc_flow *f) { return (double)f->jitter_q4 / 16.0 / 8.0; }

/* RFC 3550 A.8, integer form: jitter kept times 16. */
static void update_jitter(mc_flow *f, uint32_t rtp_ts, int64_t arrival_ns)
{
    uint32_t arrival = (uint32_t)((uint64_t)arrival_ns / CLOCK_RATE_NS_PER_TICK);
    uint32_t transit = arrival - rtp_ts;
    if (f->have_transit) {
        int64_t d = (int32_t)(transit - f->transit);
        if (d < 0)
            d = -d;
        f->jitter_q4 += d - ((f->jitter_q4 + 8) >> 4);
    }
    f->transit = transit;
    f->have_transit = 1;
}

int mc_stamp(const uint8_t *p, const rtp_header *h, int64_t *stamp_ns)
{
    if (!h->extension || h->extension_profile != 0xBEDE)
        return 0;
    const uint8_t *e = p + h->extension_offset;
    size_t len = 4 * (size_t)h->extension_words, i = 0;
    while (i < len) {
        uint8_t b = e[i];
        if (b == 0) {
            i++;
            continue;
        }
        unsigned id = b >> 4, l = (b & 0x0F) + 1u;
        if (id == 15 || i + 1 + l > len)
            break;
        if (id == 1 && l == 8) {
            uint64_t v = ((uint64_t)get_be32(e + i + 1) << 32) | get_be32(e + i + 5);
            *stamp_ns = (int64_t)(v & INT64_MAX);
            return 1;
        }
        i += 1 + l;
    }
    return 0;
}

static void record_payload(mc_flow *f, const uint8_t *payload, size_t len)
{
    size_t room = f->rec_limit - f->rec_len;
    if (len > room) {
        f->drops[DROP_RECORDING_FULL]++;
        len = room;
    }
    if (len == 0)
        return;
    if (f->rec_len + len > f->rec_cap) {
        size_t cap = f->rec_cap ? f->rec_cap : 8000;
        while (cap < f->rec_len + len)
            cap *= 2;
        if (cap > f->rec_limit)
            cap = f->rec_limit;
        uint8_t *grown = realloc(f->rec, cap);
        if (!grown) {
            f->drops[DROP_RECORDING_FULL]++;
            return;
        }
        f->rec = grown;
        f->rec_cap = cap;
    }
    memcpy(f->rec + f->rec_len, payload, len);
    f->rec_len += len;
}

static int drop_for(enum rtp_status st)
{
    switch (st) {
    case RTP_TOO_SHORT:
        return DROP_TRUNCATED;
    case RTP_BAD_VERSION:
        return DROP_BAD_VERSION;
    case RTP_CSRC_OVERFLOW:
        return DROP_CSRC_OVERRUN;
    case RTP_EXT_HEADER_OVERFLOW:
    case RTP_EXT_OVERFLOW:
        return DROP_BAD_EXTENSION;
    default:
        return DROP_BAD_PADDING;
    }
}

int mc_receive(mc_flow *f, const uint8_t *p, size_t n, int64_t arrival_ns, rtp_header *h)
{
    enum rtp_status st = rtp_parse(p, n, h);
    if (st == RTP_OK && n > MC_MAX_PACKET)
        st = RTP_TOO_SHORT; /* cannot happen from a socket; keeps mc_apply's buffers safe */
    if (st != RTP_OK) {
        int reason = drop_for(st);
        f->drops[reason]++;
        return reason;
    }
    if (f->packets > 0 && h->ssrc != f->ssrc) {
        f->seq_init = 0; /* a new source on the flow: RFC 3550 state restarts */
        f->have_transit = 0;
    }
    f->packets++;
    f->bytes += n;
    f->payload_bytes += h->payload_length;
    f->ssrc = h->ssrc;
    update_seq(f, h->sequence_number);
    update_jitter(f, h->timestamp, arrival_ns);
    f->iv_packets++;
    f->iv_payload_bytes += h->payload_length;
    int64_t stamp;
    if (mc_stamp(p, h, &stamp)) {
        int64_t latency = stamp > arrival_ns ? 0 : arrival_ns - stamp;
        if (latency > (int64_t)HIST_MAX_US * 1000)
            latency = (int64_t)HIST_MAX_US * 1000; /* a garbage stamp must not overflow the sum */
        mc_hist_record(&f->hist, (uint64_t)latency / 1000);
        f->iv_latency_sum_ns = f->iv_latency_sum_ns > INT64_MAX - latency ? INT64_MAX : f->iv_latency_sum_ns + latency;
        f->iv_latency_count++;
    }
    if (f->record)
        record_payload(f, p + h->payload_offset, h->payload_length);
    return -1;
}

/* ----------------------------------------------------------------- instruction apply --- */

static unsigned out_payload_type(const mc_rule *r, unsigned pt)
{
    if (r->payload_type >= 0)
        return (unsigned)r->payload_type & 0x7F;
    if (r->transcode == TRANSCODE_ULAW2ALAW)
        return 8;
    if (r->transcode == TRANSCODE_ALAW2ULAW)
        return 0;
    return pt;
}

static void transcode(int how, const uint8_t *src, uint8_t *dst, size_t n)
{
    if (how == TRANSCODE_ULAW2ALAW)
        ulaw_to_alaw_kernel(src, dst, n);
    else if (how == TRANSCODE_ALAW2ULAW)
        alaw_to_ulaw_kernel(src, dst, n);
    else if (src != dst)
        memcpy(dst, src, n);
}

static void rp_take_ext(mc_flow *f, const uint8_t *p, const rtp_header *h)
{
    size_t len = h->extension ? 4 + 4 * (size_t)h->extension_words : 0;
    if (len > RP_EXT_CAP)
        len = 0;
    if (len)
        memcpy(f->rp_ext, p + h->extension_offset - 4, len);
    f->rp_ext_len = len;
}

/* Emit the first len buffered payload bytes as one packet. */
static size_t rp_emit(mc_flow *f, size_t len, mc_out *out)
{
    uint8_t *b = out->buf;
    b[0] = (uint8_t)(0x80 | (f->rp_ext_len ? 0x10 : 0));
    b[1] = (uint8_t)((f->rp_marker ? 0x80 : 0) | f->rp_pt);
    put_be16(b + 2, f->rp_seq++);
    put_be32(b + 4, f->rp_ts);
    put_be32(b + 8, f->ssrc);
    size_t off = RTP_HEADER_SIZE;
    memcpy(b + off, f->rp_ext, f->rp_ext_len);
    off += f->rp_ext_len;
    memcpy(b + off, f->rp_buf, len);
    out->len = off + len;
    memmove(f->rp_buf, f->rp_buf + len, f->rp_len - len);
    f->rp_len -= len;
    f->rp_ts += (uint32_t)len;
    f->rp_marker = 0;
    return 1;
}

size_t mc_apply(mc_flow *f, const mc_rule *r, const uint8_t *p, size_t n, const rtp_header *h, mc_out *outs)
{
    if (r->action == ACTION_DROP) {
        f->drops[DROP_INSTRUCTION]++;
        return 0;
    }
    if (r->action != ACTION_FORWARD || n > MC_MAX_PACKET)
        return 0;
    unsigned pt = out_payload_type(r, h->payload_type);
    size_t k = 0;
    if (!f->rp_seq_init) {
        f->rp_seq = h->sequence_number;
        f->rp_seq_init = 1;
    }
    if (r->ptime_ms <= 0) {
        if (f->rp_len)
            k += rp_emit(f, f->rp_len, &outs[k]);
        uint8_t *b = outs[k].buf;
        memcpy(b, p, n);
        b[1] = (uint8_t)((b[1] & 0x80) | pt);
        transcode(r->transcode, b + h->payload_offset, b + h->payload_offset, h->payload_length);
        outs[k].len = n;
        f->rp_seq = (uint16_t)(h->sequence_number + 1);
        return k + 1;
    }
    unsigned target = (unsigned)r->ptime_ms * BYTES_PER_MS;
    if (target > RP_CAP)
        target = RP_CAP;
    size_t plen = h->payload_length;
    if (f->rp_len && (h->timestamp != (uint32_t)(f->rp_ts + f->rp_len) || target != f->rp_target || pt != f->rp_pt))
        k += rp_emit(f, f->rp_len, &outs[k]);
    if (f->rp_len + plen > RP_CAP)
        k += rp_emit(f, f->rp_len, &outs[k]);
    if (f->rp_len == 0) {
        f->rp_ts = h->timestamp;
        f->rp_pt = pt;
        f->rp_marker = h->marker;
        f->rp_target = target;
        rp_take_ext(f, p, h);
    }
    transcode(r->transcode, p + h->payload_offset, f->rp_buf + f->rp_len, plen);
    f->rp_len += plen;
    while (f->rp_len >= target) {
        k += rp_emit(f, target, &outs[k]);
        rp_take_ext(f, p, h); /* the rest of the buffer came with this packet */
    }
    return k;
}

void mc_snapshot_take(mc_flow *f, int64_t now_ns, mc_snapshot *s)
{
    s->packets = f->packets;
    s->bytes = f->bytes;
    s->ssrc = f->ssrc;
    s->payload_size = f->iv_packets ? (double)f->iv_payload_bytes / (double)f->iv_packets : 0.0;
    int64_t span = now_ns - f->iv_start_ns;
    s->packet_rate = span > 0 ? (double)f->iv_packets * 1e9 / (double)span : 0.0;
    s->jitter_ms = mc_jitter_ms(f);
    s->lost = mc_lost(f);
    s->latency_ms = f->iv_latency_count ? (double)f->iv_latency_sum_ns / (double)f->iv_latency_count / 1e6 : NAN;
    s->seq = f->record_seq++;
    f->iv_packets = f->iv_payload_bytes = f->iv_latency_count = 0;
    f->iv_latency_sum_ns = 0;
    f->iv_start_ns = now_ns;
}
