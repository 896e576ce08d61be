/*
 * rtp_g711.h: the plain-C packet building blocks shared by _mediacore.c (the Python functions)
 * and engine_core.c (the native packet loop): a strict RFC 3550 RTP parser/builder and G.711
 * tables and kernels.  No Python objects: safe to use from a thread that never holds the GIL.
 */
#ifndef MEDIACORE_RTP_G711_H
#define MEDIACORE_RTP_G711_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RTP_HEADER_SIZE 12
#define RTP_MAX_CSRCS 15

/* ======================================================================== RTP (plain C) === */

static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void put_be16(uint8_t *p, unsigned value)
{
    p[0] = (uint8_t)(value >> 8);
    p[1] = (uint8_t)value;
}

static inline void put_be32(uint8_t *p, uint32_t value)
{
    p[0] = (uint8_t)(value >> 24);
    p[1] = (uint8_t)(value >> 16);
    p[2] = (uint8_t)(value >> 8);
    p[3] = (uint8_t)value;
}

enum rtp_status {
    RTP_OK = 0,
    RTP_TOO_SHORT,           /* fewer than 12 bytes */
    RTP_BAD_VERSION,         /* V != 2 */
    RTP_CSRC_OVERFLOW,       /* CC * 4 bytes of CSRCs do not fit */
    RTP_EXT_HEADER_OVERFLOW, /* X set but no room for the 4-byte extension header */
    RTP_EXT_OVERFLOW,        /* extension length (in 32-bit words) does not fit */
    RTP_PAD_NO_ROOM,         /* P set but no byte after the header to hold the count */
    RTP_PAD_ZERO,            /* P set and the padding count is 0 */
    RTP_PAD_TOO_BIG,         /* padding count larger than the bytes after the header */
};

typedef struct {
    unsigned version, padding, extension, csrc_count, marker, payload_type;
    uint16_t sequence_number;
    uint32_t timestamp, ssrc;
    uint32_t csrcs[RTP_MAX_CSRCS];
    uint16_t extension_profile, extension_words; /* valid when extension */
    size_t extension_offset;                     /* start of the extension body */
    size_t payload_offset, payload_length;       /* payload_length excludes padding */
    unsigned padding_count;
    size_t size; /* packet size */
    size_t need; /* on overflow errors: the size the packet would need */
} rtp_header;

/* Parse and validate an RTP packet.  On error, h holds what the message needs. */
static inline enum rtp_status rtp_parse(const uint8_t *p, size_t size, rtp_header *h)
{
    memset(h, 0, sizeof *h);
    h->size = size;
    if (size < RTP_HEADER_SIZE)
        return RTP_TOO_SHORT;
    h->version = p[0] >> 6;
    if (h->version != 2)
        return RTP_BAD_VERSION;
    h->padding = (p[0] >> 5) & 1;
    h->extension = (p[0] >> 4) & 1;
    h->csrc_count = p[0] & 0x0F;
    h->marker = p[1] >> 7;
    h->payload_type = p[1] & 0x7F;
    h->sequence_number = get_be16(p + 2);
    h->timestamp = get_be32(p + 4);
    h->ssrc = get_be32(p + 8);

    size_t offset = RTP_HEADER_SIZE + 4 * (size_t)h->csrc_count;
    h->need = offset;
    if (offset > size)
        return RTP_CSRC_OVERFLOW;
    for (unsigned i = 0; i < h->csrc_count; i++)
        h->csrcs[i] = get_be32(p + RTP_HEADER_SIZE + 4 * i);

    if (h->extension) {
        h->need = offset + 4;
        if (offset + 4 > size)
            return RTP_EXT_HEADER_OVERFLOW;
        h->extension_profile = get_be16(p + offset);
        h->extension_words = get_be16(p + offset + 2);
        h->extension_offset = offset + 4;
        offset = h->extension_offset + 4 * (size_t)h->extension_words;
        h->need = offset;
        if (offset > size)
            return RTP_EXT_OVERFLOW;
    }

    h->payload_offset = offset;
    h->payload_length = size - offset;
    if (h->padding) {
        if (h->payload_length == 0)
            return RTP_PAD_NO_ROOM;
        h->padding_count = p[size - 1];
        if (h->padding_count == 0)
            return RTP_PAD_ZERO;
        if (h->padding_count > h->payload_length)
            return RTP_PAD_TOO_BIG;
        h->payload_length -= h->padding_count;
    }
    return RTP_OK;
}

/* Everything build_rtp needs, already validated. */
typedef struct {
    unsigned payload_type, marker, csrc_count, has_extension, padding;
    uint16_t sequence_number, extension_profile;
    uint32_t timestamp, ssrc;
    uint32_t csrcs[RTP_MAX_CSRCS];
    const uint8_t *extension; /* body, extension_length (a multiple of 4) bytes */
    size_t extension_length;
    const uint8_t *payload;
    size_t payload_length;
} rtp_fields;

static inline size_t rtp_packet_size(const rtp_fields *f)
{
    return RTP_HEADER_SIZE + 4 * (size_t)f->csrc_count + (f->has_extension ? 4 + f->extension_length : 0) +
           f->payload_length + f->padding;
}

/* Write the packet front to back into p, which has rtp_packet_size(f) bytes. */
static inline void rtp_write(uint8_t *p, const rtp_fields *f)
{
    p[0] = (uint8_t)(0x80 | (f->padding ? 0x20 : 0) | (f->has_extension ? 0x10 : 0) | f->csrc_count);
    p[1] = (uint8_t)((f->marker ? 0x80 : 0) | f->payload_type);
    put_be16(p + 2, f->sequence_number);
    put_be32(p + 4, f->timestamp);
    put_be32(p + 8, f->ssrc);
    p += RTP_HEADER_SIZE;
    for (unsigned i = 0; i < f->csrc_count; i++, p += 4)
        put_be32(p, f->csrcs[i]);
    if (f->has_extension) {
        put_be16(p, f->extension_profile);
        put_be16(p + 2, (unsigned)(f->extension_length / 4));
        p += 4;
        if (f->extension_length > 0)
            memcpy(p, f->extension, f->extension_length);
        p += f->extension_length;
    }
    if (f->payload_length > 0)
        memcpy(p, f->payload, f->payload_length);
    p += f->payload_length;
    if (f->padding) {
        memset(p, 0, f->padding - 1);
        p[f->padding - 1] = (uint8_t)f->padding;
    }
}

/* ======================================================================= G.711 (plain C) === */

/*
 * The ITU-T G.711 reference algorithm as in Sun's g711.c and CPython's former audioop module.
 * Decoding is a table lookup (tables generated from that algorithm); encoding truncates the
 * 16-bit sample to 14 bits (mu-law) or 13 bits (A-law) first.  mu-law <-> A-law uses the G.711
 * transcoding tables (Tables 3 and 4, Sun's two typos corrected), not a trip through linear.
 */

/* mu-law code -> A-law code (G.711 Table 3, expanded to all 256 codes). */
__attribute__((unused)) static const uint8_t ulaw_to_alaw_table[256] = {
     42,  43,  40,  41,  46,  47,  44,  45,  34,  35,  32,  33,  38,  39,  36,  37,
     58,  59,  56,  57,  62,  63,  60,  61,  50,  51,  48,  49,  54,  55,  52,  53,
     10,  11,   8,   9,  14,  15,  12,  13,   2,   3,   0,   1,   6,   7,   4,  26,
     27,  24,  25,  30,  31,  28,  29,  18,  19,  16,  17,  22,  23,  20,  21, 106,
    104, 105, 110, 111, 108, 109,  98,  99,  96,  97, 102, 103, 100, 101, 122, 120,
    126, 127, 124, 125, 114, 115, 112, 113, 118, 119, 116, 117,  75,  73,  79,  77,
     66,  67,  64,  65,  70,  71,  68,  69,  90,  91,  88,  89,  94,  95,  92,  93,
     82,  82,  83,  83,  80,  80,  81,  81,  86,  86,  87,  87,  84,  84,  85,  85,
    170, 171, 168, 169, 174, 175, 172, 173, 162, 163, 160, 161, 166, 167, 164, 165,
    186, 187, 184, 185, 190, 191, 188, 189, 178, 179, 176, 177, 182, 183, 180, 181,
    138, 139, 136, 137, 142, 143, 140, 141, 130, 131, 128, 129, 134, 135, 132, 154,
    155, 152, 153, 158, 159, 156, 157, 146, 147, 144, 145, 150, 151, 148, 149, 234,
    232, 233, 238, 239, 236, 237, 226, 227, 224, 225, 230, 231, 228, 229, 250, 248,
    254, 255, 252, 253, 242, 243, 240, 241, 246, 247, 244, 245, 203, 201, 207, 205,
    194, 195, 192, 193, 198, 199, 196, 197, 218, 219, 216, 217, 222, 223, 220, 221,
    210, 210, 211, 211, 208, 208, 209, 209, 214, 214, 215, 215, 212, 212, 213, 213,
};

/* A-law code -> mu-law code (G.711 Table 4, expanded to all 256 codes). */
__attribute__((unused)) static const uint8_t alaw_to_ulaw_table[256] = {
     42,  43,  40,  41,  46,  47,  44,  45,  34,  35,  32,  33,  38,  39,  36,  37,
     57,  58,  55,  56,  61,  62,  59,  60,  49,  50,  47,  48,  53,  54,  51,  52,
     10,  11,   8,   9,  14,  15,  12,  13,   2,   3,   0,   1,   6,   7,   4,   5,
     26,  27,  24,  25,  30,  31,  28,  29,  18,  19,  16,  17,  22,  23,  20,  21,
     98,  99,  96,  97, 102, 103, 100, 101,  93,  93,  92,  92,  95,  95,  94,  94,
    116, 118, 112, 114, 124, 126, 120, 122, 106, 107, 104, 105, 110, 111, 108, 109,
     72,  73,  70,  71,  76,  77,  74,  75,  64,  65,  63,  63,  68,  69,  66,  67,
     86,  87,  84,  85,  90,  91,  88,  89,  79,  79,  78,  78,  82,  83,  80,  81,
    170, 171, 168, 169, 174, 175, 172, 173, 162, 163, 160, 161, 166, 167, 164, 165,
    185, 186, 183, 184, 189, 190, 187, 188, 177, 178, 175, 176, 181, 182, 179, 180,
    138, 139, 136, 137, 142, 143, 140, 141, 130, 131, 128, 129, 134, 135, 132, 133,
    154, 155, 152, 153, 158, 159, 156, 157, 146, 147, 144, 145, 150, 151, 148, 149,
    226, 227, 224, 225, 230, 231, 228, 229, 221, 221, 220, 220, 223, 223, 222, 222,
    244, 246, 240, 242, 252, 254, 248, 250, 234, 235, 232, 233, 238, 239, 236, 237,
    200, 201, 198, 199, 204, 205, 202, 203, 192, 193, 191, 191, 196, 197, 194, 195,
    214, 215, 212, 213, 218, 219, 216, 217, 207, 207, 206, 206, 210, 211, 208, 209,
};

/* mu-law code -> 16-bit linear sample. */
__attribute__((unused)) static const int16_t ulaw_to_lin16_table[256] = {
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
    -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
    -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412,
    -11900, -11388, -10876, -10364,  -9852,  -9340,  -8828,  -8316,
     -7932,  -7676,  -7420,  -7164,  -6908,  -6652,  -6396,  -6140,
     -5884,  -5628,  -5372,  -5116,  -4860,  -4604,  -4348,  -4092,
     -3900,  -3772,  -3644,  -3516,  -3388,  -3260,  -3132,  -3004,
     -2876,  -2748,  -2620,  -2492,  -2364,  -2236,  -2108,  -1980,
     -1884,  -1820,  -1756,  -1692,  -1628,  -1564,  -1500,  -1436,
     -1372,  -1308,  -1244,  -1180,  -1116,  -1052,   -988,   -924,
      -876,   -844,   -812,   -780,   -748,   -716,   -684,   -652,
      -620,   -588,   -556,   -524,   -492,   -460,   -428,   -396,
      -372,   -356,   -340,   -324,   -308,   -292,   -276,   -260,
      -244,   -228,   -212,   -196,   -180,   -164,   -148,   -132,
      -120,   -112,   -104,    -96,    -88,    -80,    -72,    -64,
       -56,    -48,    -40,    -32,    -24,    -16,     -8,      0,
     32124,  31100,  30076,  29052,  28028,  27004,  25980,  24956,
     23932,  22908,  21884,  20860,  19836,  18812,  17788,  16764,
     15996,  15484,  14972,  14460,  13948,  13436,  12924,  12412,
     11900,  11388,  10876,  10364,   9852,   9340,   8828,   8316,
      7932,   7676,   7420,   7164,   6908,   6652,   6396,   6140,
      5884,   5628,   5372,   5116,   4860,   4604,   4348,   4092,
      3900,   3772,   3644,   3516,   3388,   3260,   3132,   3004,
      2876,   2748,   2620,   2492,   2364,   2236,   2108,   1980,
      1884,   1820,   1756,   1692,   1628,   1564,   1500,   1436,
      1372,   1308,   1244,   1180,   1116,   1052,    988,    924,
       876,    844,    812,    780,    748,    716,    684,    652,
       620,    588,    556,    524,    492,    460,    428,    396,
       372,    356,    340,    324,    308,    292,    276,    260,
       244,    228,    212,    196,    180,    164,    148,    132,
       120,    112,    104,     96,     88,     80,     72,     64,
        56,     48,     40,     32,     24,     16,      8,      0,
};

/* A-law code -> 16-bit linear sample. */
__attribute__((unused)) static const int16_t alaw_to_lin16_table[256] = {
     -5504,  -5248,  -6016,  -5760,  -4480,  -4224,  -4992,  -4736,
     -7552,  -7296,  -8064,  -7808,  -6528,  -6272,  -7040,  -6784,
     -2752,  -2624,  -3008,  -2880,  -2240,  -2112,  -2496,  -2368,
     -3776,  -3648,  -4032,  -3904,  -3264,  -3136,  -3520,  -3392,
    -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944,
    -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136,
    -11008, -10496, -12032, -11520,  -8960,  -8448,  -9984,  -9472,
    -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568,
      -344,   -328,   -376,   -360,   -280,   -264,   -312,   -296,
      -472,   -456,   -504,   -488,   -408,   -392,   -440,   -424,
       -88,    -72,   -120,   -104,    -24,     -8,    -56,    -40,
      -216,   -200,   -248,   -232,   -152,   -136,   -184,   -168,
     -1376,  -1312,  -1504,  -1440,  -1120,  -1056,  -1248,  -1184,
     -1888,  -1824,  -2016,  -1952,  -1632,  -1568,  -1760,  -1696,
      -688,   -656,   -752,   -720,   -560,   -528,   -624,   -592,
      -944,   -912,  -1008,   -976,   -816,   -784,   -880,   -848,
      5504,   5248,   6016,   5760,   4480,   4224,   4992,   4736,
      7552,   7296,   8064,   7808,   6528,   6272,   7040,   6784,
      2752,   2624,   3008,   2880,   2240,   2112,   2496,   2368,
      3776,   3648,   4032,   3904,   3264,   3136,   3520,   3392,
     22016,  20992,  24064,  23040,  17920,  16896,  19968,  18944,
     30208,  29184,  32256,  31232,  26112,  25088,  28160,  27136,
     11008,  10496,  12032,  11520,   8960,   8448,   9984,   9472,
     15104,  14592,  16128,  15616,  13056,  12544,  14080,  13568,
       344,    328,    376,    360,    280,    264,    312,    296,
       472,    456,    504,    488,    408,    392,    440,    424,
        88,     72,    120,    104,     24,      8,     56,     40,
       216,    200,    248,    232,    152,    136,    184,    168,
      1376,   1312,   1504,   1440,   1120,   1056,   1248,   1184,
      1888,   1824,   2016,   1952,   1632,   1568,   1760,   1696,
       688,    656,    752,    720,    560,    528,    624,    592,
       944,    912,   1008,    976,    816,    784,    880,    848,
};

#define G711_QUANT_MASK 0x0F
#define ULAW_BIAS 0x84 /* added to the 16-bit magnitude; 0x84 >> 2 in the 14-bit domain */
#define ULAW_CLIP 8159 /* largest 14-bit magnitude before the bias */

__attribute__((unused)) static const int16_t ulaw_segment_ends[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
__attribute__((unused)) static const int16_t alaw_segment_ends[8] = {0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};

/* The first segment whose end is >= value, or 8 when value is beyond the last one. */
static inline int g711_segment(int value, const int16_t ends[8])
{
    for (int seg = 0; seg < 8; seg++)
        if (value <= ends[seg])
            return seg;
    return 8;
}

/* value >> bits rounding toward minus infinity, without relying on signed right shifts. */
static inline int floor_shift(int value, int bits) { return value < 0 ? ~(~value >> bits) : value >> bits; }

static inline uint8_t lin16_to_ulaw_sample(int16_t sample)
{
    int pcm = floor_shift(sample, 2); /* 14-bit */
    int mask = 0xFF;
    if (pcm < 0) {
        pcm = -pcm;
        mask = 0x7F;
    }
    if (pcm > ULAW_CLIP)
        pcm = ULAW_CLIP;
    pcm += ULAW_BIAS >> 2;
    int seg = g711_segment(pcm, ulaw_segment_ends);
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    return (uint8_t)(((seg << 4) | ((pcm >> (seg + 1)) & G711_QUANT_MASK)) ^ mask);
}

static inline uint8_t lin16_to_alaw_sample(int16_t sample)
{
    int pcm = floor_shift(sample, 3); /* 13-bit */
    int mask = 0xD5;
    if (pcm < 0) {
        pcm = -pcm - 1;
        mask = 0x55;
    }
    int seg = g711_segment(pcm, alaw_segment_ends);
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    int quant = (seg < 2 ? pcm >> 1 : pcm >> seg) & G711_QUANT_MASK;
    return (uint8_t)(((seg << 4) | quant) ^ mask);
}

/* Kernels: n is the number of samples.  lin16 is read and written with memcpy, so neither
 * alignment nor strict aliasing matters; the compiler turns it into plain loads/stores. */
typedef void (*g711_kernel)(const uint8_t *src, uint8_t *dst, size_t n);

static inline void ulaw_to_alaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_to_alaw_table[src[i]];
}

static inline void alaw_to_ulaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_to_ulaw_table[src[i]];
}

static inline void ulaw_to_lin16_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(dst + 2 * i, &ulaw_to_lin16_table[src[i]], 2);
}

static inline void alaw_to_lin16_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(dst + 2 * i, &alaw_to_lin16_table[src[i]], 2);
}

static inline void lin16_to_ulaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int16_t sample;
        memcpy(&sample, src + 2 * i, 2);
        dst[i] = lin16_to_ulaw_sample(sample);
    }
}

static inline void lin16_to_alaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int16_t sample;
        memcpy(&sample, src + 2 * i, 2);
        dst[i] = lin16_to_alaw_sample(sample);
    }
}

#endif /* MEDIACORE_RTP_G711_H */
