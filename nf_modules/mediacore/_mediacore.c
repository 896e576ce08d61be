/*
 * _mediacore: the per-packet core of the media plane (DESIGN.md, "The C media core").
 *
 * This file holds the packet-level building blocks: a strict RFC 3550 RTP header parser and
 * builder, and G.711 mu-law/A-law/linear conversions.  The pure-Python twin in pure.py is the
 * reference: same names, signatures, values, error types and messages, enforced by the
 * differential tests in tests/unit/test_mediacore_*.py.
 *
 * Layout: plain C first (no Python objects, usable from a native packet thread), then the thin
 * Python wrappers (validate arguments, then one tight loop), then the module definition
 * (multi-phase init, per-module state holding RtpError and the RtpHeader struct sequence).
 *
 * Inputs are taken through "y*" (any C-contiguous bytes-like object: bytes, bytearray,
 * memoryview, array, mmap).  lin16 means native-endian signed 16-bit samples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RTP_HEADER_SIZE 12
#define RTP_MAX_CSRCS 15

/* Conversions of at least this many input bytes run with the GIL released. */
#define NOGIL_THRESHOLD 16384

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
static enum rtp_status rtp_parse(const uint8_t *p, size_t size, rtp_header *h)
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

static size_t rtp_packet_size(const rtp_fields *f)
{
    return RTP_HEADER_SIZE + 4 * (size_t)f->csrc_count + (f->has_extension ? 4 + f->extension_length : 0) +
           f->payload_length + f->padding;
}

/* Write the packet front to back into p, which has rtp_packet_size(f) bytes. */
static void rtp_write(uint8_t *p, const rtp_fields *f)
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
static const uint8_t ulaw_to_alaw_table[256] = {
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
static const uint8_t alaw_to_ulaw_table[256] = {
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
static const int16_t ulaw_to_lin16_table[256] = {
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
static const int16_t alaw_to_lin16_table[256] = {
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

static const int16_t ulaw_segment_ends[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
static const int16_t alaw_segment_ends[8] = {0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};

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

static void ulaw_to_alaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_to_alaw_table[src[i]];
}

static void alaw_to_ulaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_to_ulaw_table[src[i]];
}

static void ulaw_to_lin16_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(dst + 2 * i, &ulaw_to_lin16_table[src[i]], 2);
}

static void alaw_to_lin16_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memcpy(dst + 2 * i, &alaw_to_lin16_table[src[i]], 2);
}

static void lin16_to_ulaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int16_t sample;
        memcpy(&sample, src + 2 * i, 2);
        dst[i] = lin16_to_ulaw_sample(sample);
    }
}

static void lin16_to_alaw_kernel(const uint8_t *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int16_t sample;
        memcpy(&sample, src + 2 * i, 2);
        dst[i] = lin16_to_alaw_sample(sample);
    }
}

/* ===================================================================== Python interface === */

typedef struct {
    PyObject *RtpError;       /* ValueError subclass */
    PyTypeObject *RtpHeader;  /* struct sequence returned by parse_rtp */
} mediacore_state;

static inline mediacore_state *get_state(PyObject *module) { return (mediacore_state *)PyModule_GetState(module); }

/* ------------------------------------------------------------------------- parse_rtp --- */

enum {
    F_VERSION,
    F_PADDING,
    F_EXTENSION,
    F_CSRC_COUNT,
    F_MARKER,
    F_PAYLOAD_TYPE,
    F_SEQUENCE_NUMBER,
    F_TIMESTAMP,
    F_SSRC,
    F_CSRCS,
    F_EXTENSION_PROFILE,
    F_EXTENSION_DATA,
    F_PAYLOAD_OFFSET,
    F_PAYLOAD_LENGTH,
    RTP_HEADER_NFIELDS
};

static PyStructSequence_Field rtp_header_fields[] = {
    {"version", "RTP version (always 2)"},
    {"padding", "P bit: the packet ends with padding"},
    {"extension", "X bit: a header extension follows the CSRC list"},
    {"csrc_count", "CC: number of CSRC identifiers"},
    {"marker", "M bit"},
    {"payload_type", "PT (0..127)"},
    {"sequence_number", "16-bit sequence number"},
    {"timestamp", "32-bit RTP timestamp"},
    {"ssrc", "32-bit synchronisation source"},
    {"csrcs", "tuple of the CSRC identifiers"},
    {"extension_profile", "16-bit extension profile, or None without X"},
    {"extension_data", "extension body (bytes, a multiple of 4 long), or None without X"},
    {"payload_offset", "offset of the payload in the packet"},
    {"payload_length", "payload length, excluding padding"},
    {NULL, NULL},
};

static PyStructSequence_Desc rtp_header_desc = {
    "nf_modules.mediacore._mediacore.RtpHeader",
    "The parsed header of an RTP packet (RFC 3550 section 5.1); a tuple of 14 fields.",
    rtp_header_fields,
    RTP_HEADER_NFIELDS,
};

static PyObject *raise_rtp_error(PyObject *rtp_error, enum rtp_status status, const rtp_header *h)
{
    switch (status) {
    case RTP_TOO_SHORT:
        PyErr_Format(rtp_error, "RTP packet too short: %zu bytes, the fixed header needs %d", h->size,
                     RTP_HEADER_SIZE);
        break;
    case RTP_BAD_VERSION:
        PyErr_Format(rtp_error, "unsupported RTP version %u, expected 2", h->version);
        break;
    case RTP_CSRC_OVERFLOW:
        PyErr_Format(rtp_error, "RTP CSRC list overflows the packet: %u CSRCs need %zu bytes, packet has %zu",
                     h->csrc_count, h->need, h->size);
        break;
    case RTP_EXT_HEADER_OVERFLOW:
        PyErr_Format(rtp_error,
                     "RTP header extension overflows the packet: its 4-byte header needs %zu bytes, packet has %zu",
                     h->need, h->size);
        break;
    case RTP_EXT_OVERFLOW:
        PyErr_Format(rtp_error, "RTP header extension overflows the packet: %u words need %zu bytes, packet has %zu",
                     (unsigned)h->extension_words, h->need, h->size);
        break;
    case RTP_PAD_NO_ROOM:
        PyErr_Format(rtp_error, "RTP padding bit set but no bytes follow the %zu-byte header", h->payload_offset);
        break;
    case RTP_PAD_ZERO:
        PyErr_SetString(rtp_error, "RTP padding count is 0");
        break;
    case RTP_PAD_TOO_BIG:
        PyErr_Format(rtp_error, "RTP padding count %u exceeds the %zu bytes after the %zu-byte header",
                     h->padding_count, h->payload_length, h->payload_offset);
        break;
    case RTP_OK:
        PyErr_SetString(PyExc_SystemError, "raise_rtp_error() called without an error");
        break;
    }
    return NULL;
}

/* Steal value into seq[index]; -1 if value is NULL (its exception stays set). */
static int put(PyObject *seq, Py_ssize_t index, PyObject *value)
{
    if (value == NULL)
        return -1;
    PyStructSequence_SetItem(seq, index, value);
    return 0;
}

static PyObject *csrc_tuple(const rtp_header *h)
{
    PyObject *tuple = PyTuple_New(h->csrc_count);
    if (tuple == NULL)
        return NULL;
    for (unsigned i = 0; i < h->csrc_count; i++) {
        PyObject *item = PyLong_FromUnsignedLong(h->csrcs[i]);
        if (item == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

static PyObject *rtp_header_to_python(PyTypeObject *type, const rtp_header *h, const uint8_t *packet)
{
    PyObject *seq = PyStructSequence_New(type);
    if (seq == NULL)
        return NULL;
    PyObject *profile = h->extension ? PyLong_FromLong(h->extension_profile) : Py_NewRef(Py_None);
    PyObject *data = h->extension ? PyBytes_FromStringAndSize((const char *)packet + h->extension_offset,
                                                              4 * (Py_ssize_t)h->extension_words)
                                  : Py_NewRef(Py_None);
    if (put(seq, F_EXTENSION_PROFILE, profile) < 0 || put(seq, F_EXTENSION_DATA, data) < 0 ||
        put(seq, F_VERSION, PyLong_FromLong(h->version)) < 0 ||
        put(seq, F_PADDING, PyBool_FromLong(h->padding)) < 0 ||
        put(seq, F_EXTENSION, PyBool_FromLong(h->extension)) < 0 ||
        put(seq, F_CSRC_COUNT, PyLong_FromLong(h->csrc_count)) < 0 ||
        put(seq, F_MARKER, PyBool_FromLong(h->marker)) < 0 ||
        put(seq, F_PAYLOAD_TYPE, PyLong_FromLong(h->payload_type)) < 0 ||
        put(seq, F_SEQUENCE_NUMBER, PyLong_FromLong(h->sequence_number)) < 0 ||
        put(seq, F_TIMESTAMP, PyLong_FromUnsignedLong(h->timestamp)) < 0 ||
        put(seq, F_SSRC, PyLong_FromUnsignedLong(h->ssrc)) < 0 || put(seq, F_CSRCS, csrc_tuple(h)) < 0 ||
        put(seq, F_PAYLOAD_OFFSET, PyLong_FromSize_t(h->payload_offset)) < 0 ||
        put(seq, F_PAYLOAD_LENGTH, PyLong_FromSize_t(h->payload_length)) < 0) {
        Py_DECREF(seq); /* frees the items set so far; unset ones are NULL */
        return NULL;
    }
    return seq;
}

PyDoc_STRVAR(parse_rtp_doc,
             "parse_rtp($module, data, /)\n--\n\n"
             "Parse and strictly validate an RTP packet (RFC 3550 section 5.1).\n\n"
             "Return an RtpHeader; raise RtpError (a ValueError) if the packet is malformed:\n"
             "shorter than 12 bytes, version other than 2, CSRC list or header extension\n"
             "running past the end, or a padding count of 0 or larger than what follows the\n"
             "header.  The payload is data[payload_offset:payload_offset + payload_length].");

static PyObject *mediacore_parse_rtp(PyObject *module, PyObject *args)
{
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:parse_rtp", &view))
        return NULL;
    mediacore_state *state = get_state(module);
    rtp_header h;
    enum rtp_status status = rtp_parse(view.buf, (size_t)view.len, &h);
    PyObject *result = status == RTP_OK ? rtp_header_to_python(state->RtpHeader, &h, view.buf)
                                        : raise_rtp_error(state->RtpError, status, &h);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------------- build_rtp --- */

/* operator.index(value), required to lie in 0..maximum (ValueError naming the field if not). */
static int unsigned_field(PyObject *value, const char *name, unsigned long long maximum, unsigned long long *out)
{
    PyObject *number = PyNumber_Index(value);
    if (number == NULL)
        return -1;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(number, &overflow);
    int rc = 0;
    if (v == -1 && PyErr_Occurred())
        rc = -1;
    else if (overflow != 0 || v < 0 || (unsigned long long)v > maximum) {
        PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu, got %S", name, maximum, number);
        rc = -1;
    }
    else
        *out = (unsigned long long)v;
    Py_DECREF(number);
    return rc;
}

/* csrcs: any iterable of at most 15 integers in 0..2**32-1.  It is copied into a tuple first so
 * that __index__ methods cannot change it under our feet. */
static int csrcs_field(PyObject *obj, rtp_fields *f)
{
    if (obj == NULL)
        return 0;
    PyObject *iter = PyObject_GetIter(obj);
    if (iter == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError))
            PyErr_SetString(PyExc_TypeError, "csrcs must be an iterable of integers");
        return -1;
    }
    PyObject *items = PySequence_Tuple(iter);
    Py_DECREF(iter);
    if (items == NULL)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    int rc = 0;
    if (n > RTP_MAX_CSRCS) {
        PyErr_Format(PyExc_ValueError, "at most 15 CSRCs fit in an RTP header, got %zd", n);
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        char name[32];
        unsigned long long csrc;
        snprintf(name, sizeof name, "csrcs[%zd]", i);
        rc = unsigned_field(PyTuple_GET_ITEM(items, i), name, 0xFFFFFFFF, &csrc);
        f->csrcs[i] = (uint32_t)csrc;
    }
    if (rc == 0)
        f->csrc_count = (unsigned)n;
    Py_DECREF(items);
    return rc;
}

/* Validate every build_rtp argument into f (same order and messages as pure.build_rtp). */
static int rtp_fields_from_python(rtp_fields *f, PyObject *pt, PyObject *seq, PyObject *ts, PyObject *ssrc,
                                  const Py_buffer *payload, int marker, PyObject *csrcs, PyObject *profile,
                                  const Py_buffer *ext, PyObject *padding)
{
    unsigned long long v;
    memset(f, 0, sizeof *f);
    f->marker = marker != 0;
    f->payload = payload->buf;
    f->payload_length = (size_t)payload->len;
    f->extension = ext->buf;
    f->extension_length = (size_t)ext->len;

    if (unsigned_field(pt, "payload_type", 0x7F, &v) < 0)
        return -1;
    f->payload_type = (unsigned)v;
    if (unsigned_field(seq, "sequence_number", 0xFFFF, &v) < 0)
        return -1;
    f->sequence_number = (uint16_t)v;
    if (unsigned_field(ts, "timestamp", 0xFFFFFFFF, &v) < 0)
        return -1;
    f->timestamp = (uint32_t)v;
    if (unsigned_field(ssrc, "ssrc", 0xFFFFFFFF, &v) < 0)
        return -1;
    f->ssrc = (uint32_t)v;
    if (csrcs_field(csrcs, f) < 0)
        return -1;

    f->has_extension = profile != Py_None;
    if (f->has_extension) {
        if (unsigned_field(profile, "extension_profile", 0xFFFF, &v) < 0)
            return -1;
        f->extension_profile = (uint16_t)v;
    }
    if (!f->has_extension && ext->len > 0) {
        PyErr_SetString(PyExc_ValueError, "extension data given without extension_profile");
        return -1;
    }
    if (ext->len % 4 != 0) {
        PyErr_Format(PyExc_ValueError, "extension length must be a multiple of 4, got %zd bytes", ext->len);
        return -1;
    }
    if (ext->len > 4 * 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "extension too long: %zd bytes, at most %d", ext->len, 4 * 0xFFFF);
        return -1;
    }
    if (padding != NULL) {
        if (unsigned_field(padding, "padding", 0xFF, &v) < 0)
            return -1;
        f->padding = (unsigned)v;
    }
    if (f->payload_length > (size_t)PY_SSIZE_T_MAX - (RTP_HEADER_SIZE + 4 * RTP_MAX_CSRCS + 4 + 4 * 0xFFFF + 0xFF)) {
        PyErr_SetString(PyExc_OverflowError, "RTP payload too large");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(build_rtp_doc,
             "build_rtp($module, /, payload_type, sequence_number, timestamp, ssrc, payload, *,\n"
             "          marker=False, csrcs=(), extension_profile=None, extension=b'', padding=0)\n"
             "--\n\n"
             "Serialise an RTP packet; every field is range-checked (ValueError).\n\n"
             "payload_type 0..127, sequence_number 0..65535, timestamp and ssrc 0..2**32-1,\n"
             "at most 15 csrcs.  extension is the header-extension body (a multiple of 4 bytes)\n"
             "and needs extension_profile (0..65535); a profile alone sets X with an empty body.\n"
             "padding (0..255) is the number of padding bytes including the final count byte.");

static PyObject *mediacore_build_rtp(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"payload_type", "sequence_number", "timestamp", "ssrc", "payload", "marker",
                             "csrcs", "extension_profile", "extension", "padding", NULL};
    PyObject *pt, *seq, *ts, *ssrc, *csrcs = NULL, *profile = Py_None, *padding = NULL;
    Py_buffer payload = {0}, ext = {0};
    int marker = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOy*|$pOOy*O:build_rtp", kwlist, &pt, &seq, &ts, &ssrc,
                                     &payload, &marker, &csrcs, &profile, &ext, &padding))
        return NULL;

    PyObject *result = NULL;
    rtp_fields f;
    if (rtp_fields_from_python(&f, pt, seq, ts, ssrc, &payload, marker, csrcs, profile, &ext, padding) == 0) {
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rtp_packet_size(&f));
        if (result != NULL)
            rtp_write((uint8_t *)PyBytes_AS_STRING(result), &f);
    }
    PyBuffer_Release(&payload);
    PyBuffer_Release(&ext);
    return result;
}

/* ----------------------------------------------------------------------------- G.711 --- */

typedef struct {
    const char *format; /* PyArg_ParseTuple format, "y*:name" */
    g711_kernel kernel;
    Py_ssize_t in_width;  /* bytes per input sample */
    Py_ssize_t out_width; /* bytes per output sample */
} g711_conversion;

static PyObject *g711_convert(PyObject *args, const g711_conversion *conv)
{
    Py_buffer in;
    if (!PyArg_ParseTuple(args, conv->format, &in))
        return NULL;
    if (in.len % conv->in_width != 0) {
        PyErr_Format(PyExc_ValueError, "lin16 buffer length must be even, got %zd bytes", in.len);
        PyBuffer_Release(&in);
        return NULL;
    }
    Py_ssize_t n = in.len / conv->in_width; /* samples */
    PyObject *out = n > PY_SSIZE_T_MAX / conv->out_width ? PyErr_NoMemory()
                                                         : PyBytes_FromStringAndSize(NULL, n * conv->out_width);
    if (out != NULL) {
        /* The output is private until returned and the input export is held, so the loop needs
         * no Python state; for big buffers let other threads run meanwhile. */
        const uint8_t *src = in.buf;
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
        if (in.len >= NOGIL_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            conv->kernel(src, dst, (size_t)n);
            Py_END_ALLOW_THREADS
        }
        else
            conv->kernel(src, dst, (size_t)n);
    }
    PyBuffer_Release(&in);
    return out;
}

#define G711_FUNCTION(name, in_width, out_width, doc)                                                            \
    static const g711_conversion name##_conversion = {"y*:" #name, name##_kernel, in_width, out_width};          \
    PyDoc_STRVAR(name##_doc, #name "($module, buf, /)\n--\n\n" doc);                                             \
    static PyObject *mediacore_##name(PyObject *Py_UNUSED(module), PyObject *args)                               \
    {                                                                                                            \
        return g711_convert(args, &name##_conversion);                                                           \
    }

G711_FUNCTION(ulaw_to_alaw, 1, 1, "Transcode G.711 mu-law to A-law with the G.711 conversion table.")
G711_FUNCTION(alaw_to_ulaw, 1, 1, "Transcode G.711 A-law to mu-law with the G.711 conversion table.")
G711_FUNCTION(ulaw_to_lin16, 1, 2, "Decode mu-law to native-endian signed 16-bit samples.")
G711_FUNCTION(alaw_to_lin16, 1, 2, "Decode A-law to native-endian signed 16-bit samples.")
G711_FUNCTION(lin16_to_ulaw, 2, 1, "Encode native-endian signed 16-bit samples to mu-law (ValueError if odd length).")
G711_FUNCTION(lin16_to_alaw, 2, 1, "Encode native-endian signed 16-bit samples to A-law (ValueError if odd length).")

/* ---------------------------------------------------------------------------- module --- */

static PyMethodDef mediacore_methods[] = {
    {"parse_rtp", mediacore_parse_rtp, METH_VARARGS, parse_rtp_doc},
    {"build_rtp", (PyCFunction)(void (*)(void))mediacore_build_rtp, METH_VARARGS | METH_KEYWORDS, build_rtp_doc},
    {"ulaw_to_alaw", mediacore_ulaw_to_alaw, METH_VARARGS, ulaw_to_alaw_doc},
    {"alaw_to_ulaw", mediacore_alaw_to_ulaw, METH_VARARGS, alaw_to_ulaw_doc},
    {"ulaw_to_lin16", mediacore_ulaw_to_lin16, METH_VARARGS, ulaw_to_lin16_doc},
    {"alaw_to_lin16", mediacore_alaw_to_lin16, METH_VARARGS, alaw_to_lin16_doc},
    {"lin16_to_ulaw", mediacore_lin16_to_ulaw, METH_VARARGS, lin16_to_ulaw_doc},
    {"lin16_to_alaw", mediacore_lin16_to_alaw, METH_VARARGS, lin16_to_alaw_doc},
    {NULL, NULL, 0, NULL},
};

static int mediacore_exec(PyObject *module)
{
    mediacore_state *state = get_state(module);
    state->RtpError = PyErr_NewExceptionWithDoc("nf_modules.mediacore._mediacore.RtpError",
                                                "A malformed RTP packet (RFC 3550 section 5.1).",
                                                PyExc_ValueError, NULL);
    if (state->RtpError == NULL || PyModule_AddObjectRef(module, "RtpError", state->RtpError) < 0)
        return -1;
    state->RtpHeader = PyStructSequence_NewType(&rtp_header_desc);
    if (state->RtpHeader == NULL || PyModule_AddObjectRef(module, "RtpHeader", (PyObject *)state->RtpHeader) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "RTP_HEADER_SIZE", RTP_HEADER_SIZE) < 0)
        return -1;
    return 0;
}

static int mediacore_traverse(PyObject *module, visitproc visit, void *arg)
{
    mediacore_state *state = get_state(module);
    Py_VISIT(state->RtpError);
    Py_VISIT(state->RtpHeader);
    return 0;
}

static int mediacore_clear(PyObject *module)
{
    mediacore_state *state = get_state(module);
    Py_CLEAR(state->RtpError);
    Py_CLEAR(state->RtpHeader);
    return 0;
}

static void mediacore_free(void *module) { (void)mediacore_clear((PyObject *)module); }

static PyModuleDef_Slot mediacore_slots[] = {
    {Py_mod_exec, mediacore_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(mediacore_doc, "The C media core: strict RTP parsing/building and G.711 conversions.\n\n"
                            "nf_modules.mediacore.pure is the pure-Python reference twin.");

static struct PyModuleDef mediacore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_mediacore",
    .m_doc = mediacore_doc,
    .m_size = sizeof(mediacore_state),
    .m_methods = mediacore_methods,
    .m_slots = mediacore_slots,
    .m_traverse = mediacore_traverse,
    .m_clear = mediacore_clear,
    .m_free = mediacore_free,
};

PyMODINIT_FUNC PyInit__mediacore(void) { return PyModuleDef_Init(&mediacore_module); }
