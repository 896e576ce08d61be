/*
 * _mediacore: the per-packet core of the media plane (DESIGN.md, "The C media core").
 *
 * This file holds the packet-level building blocks: a strict RFC 3550 RTP header parser and
 * builder, and G.711 mu-law/A-law/linear conversions.  The pure-Python twin in pure.py is the
 * reference: same names, signatures, values, error types and messages, enforced by the
 * differential tests in tests/unit/test_mediacore_*.py.
 *
 * Layout: the plain C (no Python objects, usable from a native packet thread) lives in
 * rtp_g711.h, shared with the media engine (engine_core.c); this file holds the thin
 * Python wrappers (validate arguments, then one tight loop), then the module definition
 * (multi-phase init, per-module state holding RtpError and the RtpHeader struct sequence).
 *
 * Inputs are taken through "y*" (any C-contiguous bytes-like object: bytes, bytearray,
 * memoryview, array, mmap).  lin16 means native-endian signed 16-bit samples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "rtp_g711.h"

/* Conversions of at least this many input bytes run with the GIL released. */
#define NOGIL_THRESHOLD 16384

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
