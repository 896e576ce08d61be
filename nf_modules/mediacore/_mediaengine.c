/*
 * _mediaengine: the native media engine (paper 004 V-A: the Media Processor's packet loop).
 *
 * The Python type Engine wraps an mc_engine (engine_loop.c: the packet thread, plain C) and the
 * module function process() exposes the per-packet logic (engine_core.c) to the differential tests.
 *
 * Python configures it with coarse calls; every call and every iteration of the packet thread
 * runs under one mutex, so an instruction is replaced atomically between two batches and the
 * thread never sees a half-updated flow.  Python waits for the mutex with the GIL released.
 * engine.py is the typed face; pure_engine.py the pure-Python twin with the same methods.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* recvmmsg, sendmmsg */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "engine_loop.h"

#define LOCK(e)                                                                                                     \
    do {                                                                                                            \
        Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&(e)->lock);                                                      \
        Py_END_ALLOW_THREADS                                                                                        \
    } while (0)
#define UNLOCK(e) pthread_mutex_unlock(&(e)->lock)

/* ==================================================================== Python helpers === */

static int parse_dest(PyObject *host, int port, struct sockaddr_storage *ss, socklen_t *len, const char *field)
{
    memset(ss, 0, sizeof *ss);
    *len = 0;
    if (host == Py_None)
        return 0;
    const char *s = PyUnicode_AsUTF8(host);
    if (!s)
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "%s: port must be in 0..65535, got %d", field, port);
        return -1;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
    } else {
        PyErr_Format(PyExc_ValueError, "%s: not a numeric IP address: %R", field, host);
        return -1;
    }
    return 0;
}

static int check_rule(const mc_rule *r)
{
    if (r->action < ACTION_FORWARD || r->action > ACTION_SINK) {
        PyErr_Format(PyExc_ValueError, "action: unknown code %d", r->action);
        return -1;
    }
    if (r->transcode < TRANSCODE_NONE || r->transcode > TRANSCODE_ALAW2ULAW) {
        PyErr_Format(PyExc_ValueError, "transcode: unknown code %d", r->transcode);
        return -1;
    }
    if (r->ptime_ms != 0 && (r->ptime_ms < 10 || r->ptime_ms > 200)) {
        PyErr_Format(PyExc_ValueError, "ptime_ms must be in 10..200, got %d", r->ptime_ms);
        return -1;
    }
    if (r->payload_type < -1 || r->payload_type > 127) {
        PyErr_Format(PyExc_ValueError, "payload_type must be in 0..127, got %d", r->payload_type);
        return -1;
    }
    return 0;
}

/* rule tuple: (action, dest_host|None, dest_port, out_fd, transcode, ptime_ms, payload_type, version) */
typedef struct {
    mc_rule rule;
    int out_fd;
    struct sockaddr_storage dest;
    socklen_t dest_len;
    long long version;
} full_rule;

static int parse_full_rule(PyObject *obj, full_rule *fr)
{
    PyObject *host;
    int port;
    if (!PyArg_ParseTuple(obj, "iOiiiiiL;instruction must be (action, host, port, out_fd, transcode, ptime_ms, "
                               "payload_type, version)",
                          &fr->rule.action, &host, &port, &fr->out_fd, &fr->rule.transcode, &fr->rule.ptime_ms,
                          &fr->rule.payload_type, &fr->version))
        return -1;
    if (check_rule(&fr->rule) < 0 || parse_dest(host, port, &fr->dest, &fr->dest_len, "dest") < 0)
        return -1;
    if (fr->rule.action == ACTION_FORWARD && fr->dest_len == 0) {
        PyErr_SetString(PyExc_ValueError, "dest: a forward instruction needs a destination");
        return -1;
    }
    return 0;
}

static void install_rule(flow_t *fl, const full_rule *fr)
{
    fl->rule = fr->rule;
    fl->out_fd = fr->out_fd >= 0 ? fr->out_fd : fl->fd;
    fl->dest = fr->dest;
    fl->dest_len = fr->dest_len;
    fl->version = fr->version;
}

static int set_item(PyObject *d, const char *key, PyObject *v)
{
    if (!v)
        return -1;
    int r = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return r;
}

static PyObject *ms_or_none(const mc_hist *h, double q)
{
    if (h->total == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)mc_hist_percentile(h, q) / 1000.0);
}

/* The non-empty latency buckets as [(low_us, high_us, count), ...], ascending; bounds inclusive. */
static PyObject *hist_buckets(const mc_hist *h)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (unsigned i = 0; i < HIST_BUCKETS && h->total; i++) {
        if (!h->counts[i])
            continue;
        PyObject *item = Py_BuildValue("(KKk)", (unsigned long long)mc_hist_lower(i),
                                       (unsigned long long)mc_hist_upper(i), (unsigned long)h->counts[i]);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

/* The counters of one flow core; the shared part of flow_stats() and process(). */
static PyObject *core_stats(const mc_flow *f)
{
    PyObject *d = PyDict_New(), *drops = PyDict_New();
    if (!d || !drops)
        goto fail;
    for (int i = 0; i < MC_N_DROPS; i++)
        if (set_item(drops, mc_drop_names[i], PyLong_FromUnsignedLongLong(f->drops[i])) < 0)
            goto fail;
    if (set_item(d, "packets", PyLong_FromUnsignedLongLong(f->packets)) < 0 ||
        set_item(d, "bytes", PyLong_FromUnsignedLongLong(f->bytes)) < 0 ||
        set_item(d, "payload_bytes", PyLong_FromUnsignedLongLong(f->payload_bytes)) < 0 ||
        set_item(d, "ssrc", PyLong_FromUnsignedLong(f->ssrc)) < 0 ||
        set_item(d, "lost", PyLong_FromLongLong(mc_lost(f))) < 0 ||
        set_item(d, "highest_seq", PyLong_FromLongLong(f->seq_init ? (long long)f->cycles + f->max_seq : 0)) < 0 ||
        set_item(d, "jitter_ms", PyFloat_FromDouble(mc_jitter_ms(f))) < 0 ||
        set_item(d, "latency_count", PyLong_FromUnsignedLongLong(f->hist.total)) < 0 ||
        set_item(d, "latency_p50_ms", ms_or_none(&f->hist, 50.0)) < 0 ||
        set_item(d, "latency_p90_ms", ms_or_none(&f->hist, 90.0)) < 0 ||
        set_item(d, "latency_p99_ms", ms_or_none(&f->hist, 99.0)) < 0 ||
        set_item(d, "latency_p999_ms", ms_or_none(&f->hist, 99.9)) < 0 ||
        set_item(d, "latency_max_ms", ms_or_none(&f->hist, 100.0)) < 0 ||
        set_item(d, "latency_buckets", hist_buckets(&f->hist)) < 0 ||
        set_item(d, "recorded_bytes", PyLong_FromSize_t(f->rec_len)) < 0 || PyDict_SetItemString(d, "drops", drops) < 0)
        goto fail;
    Py_DECREF(drops);
    return d;
fail:
    Py_XDECREF(d);
    Py_XDECREF(drops);
    return NULL;
}

static PyObject *flow_stats_dict(const flow_t *fl, int64_t now)
{
    PyObject *d = core_stats(&fl->core);
    if (!d)
        return NULL;
    int64_t hold_ns = fl->hold_time_ns + (fl->held ? now - fl->held_since_ns : 0);
    if (set_item(d, "flow_id", PyLong_FromLongLong(fl->flow_id)) < 0 ||
        set_item(d, "held", PyBool_FromLong(fl->held)) < 0 ||
        set_item(d, "held_packets", PyLong_FromUnsignedLongLong(fl->held_packets)) < 0 ||
        set_item(d, "hold_queue", PyLong_FromSize_t(fl->hq_len)) < 0 ||
        set_item(d, "hold_time_ms", PyFloat_FromDouble((double)hold_ns / 1e6)) < 0 ||
        set_item(d, "version", PyLong_FromLongLong(fl->version)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ======================================================================= Engine type === */

typedef struct {
    PyObject_HEAD
    mc_engine core;
} Engine;

static void engine_stop(mc_engine *e)
{
    if (e->closed)
        return;
    if (e->started) {
        LOCK(e);
        e->running = 0;
        mc_engine_wake(e);
        UNLOCK(e);
        Py_BEGIN_ALLOW_THREADS pthread_join(e->thread, NULL);
        Py_END_ALLOW_THREADS
    }
    e->closed = 1;
    mc_engine_teardown(e);
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kwargs)
{
    mc_engine *e = &self->core;
    static char *kwlist[] = {"batch", "metadata_interval", "hold_limit", "recording_limit", NULL};
    int batch = 32;
    double interval = 0.1;
    Py_ssize_t hold_limit = 256, rec_limit = 60 * 8000;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|idnn", kwlist, &batch, &interval, &hold_limit, &rec_limit))
        return -1;
    if (e->epfd >= 0 || e->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    if (batch < 1 || batch > 1024) {
        PyErr_Format(PyExc_ValueError, "batch must be in 1..1024, got %d", batch);
        return -1;
    }
    if (!(interval >= 0.0) || interval > 3600.0) {
        PyErr_SetString(PyExc_ValueError, "metadata_interval must be in [0, 3600] seconds");
        return -1;
    }
    if (hold_limit < 0 || rec_limit < 0) {
        PyErr_SetString(PyExc_ValueError, "hold_limit and recording_limit must be >= 0");
        return -1;
    }
    if (mc_engine_setup(&self->core, batch, (int64_t)(interval * 1e9), (size_t)hold_limit, (size_t)rec_limit) < 0) {
        if (errno == ENOMEM)
            PyErr_NoMemory();
        else
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    Engine *self = (Engine *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->core.lock, NULL);
    self->core.epfd = self->core.wakefd = self->core.timerfd = self->core.mdfd = -1;
    return (PyObject *)self;
}

static void Engine_dealloc(Engine *self)
{
    PyTypeObject *type = Py_TYPE(self);
    engine_stop(&self->core);
    pthread_mutex_destroy(&self->core.lock);
    type->tp_free((PyObject *)self);
    Py_DECREF(type); /* heap type */
}

static int check_open(mc_engine *e)
{
    if (e->closed || e->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the media engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *Engine_start(Engine *self, PyObject *Py_UNUSED(ignored))
{
    mc_engine *e = &self->core;
    if (check_open(e) < 0)
        return NULL;
    if (e->started)
        Py_RETURN_NONE;
    e->running = 1;
    int rc = pthread_create(&e->thread, NULL, mc_engine_main, e);
    if (rc != 0) {
        e->running = 0;
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    e->started = 1;
    Py_RETURN_NONE;
}

static PyObject *Engine_close(Engine *self, PyObject *Py_UNUSED(ignored))
{
    mc_engine *e = &self->core;
    engine_stop(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_add_flow(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    long long flow_id;
    int fd, hold, record;
    PyObject *rule_obj;
    full_rule fr;
    if (!PyArg_ParseTuple(args, "LiOpp", &flow_id, &fd, &rule_obj, &hold, &record) || check_open(e) < 0 ||
        parse_full_rule(rule_obj, &fr) < 0)
        return NULL;
    flow_t *fl = calloc(1, sizeof *fl);
    if (!fl)
        return PyErr_NoMemory();
    LOCK(e);
    size_t slot = e->nslots;
    if (mc_find_flow(e, flow_id, NULL)) {
        UNLOCK(e);
        free(fl);
        return PyErr_Format(PyExc_ValueError, "flow_id %lld already exists", flow_id);
    }
    for (size_t i = 0; i < e->nslots; i++)
        if (!e->flows[i]) {
            slot = i;
            break;
        }
    if (slot == e->nslots) {
        flow_t **grown = realloc(e->flows, (e->nslots + 1) * sizeof *grown);
        if (!grown) {
            UNLOCK(e);
            free(fl);
            return PyErr_NoMemory();
        }
        e->flows = grown;
        e->flows[e->nslots++] = NULL;
    }
    fl->flow_id = flow_id;
    fl->fd = fd;
    fl->gen = (e->next_gen++) & 0x3FFFFFFFu;
    fl->hold_on_metadata = hold;
    mc_flow_init(&fl->core, record, e->rec_limit, mc_mono_ns());
    install_rule(fl, &fr);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (TAG_FLOW << 62) | ((uint64_t)fl->gen << 32) | slot;
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        UNLOCK(e);
        free(fl);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    e->flows[slot] = fl;
    UNLOCK(e);
    Py_RETURN_NONE;
}

/* The flow named by ``args`` (one flow id), found with the engine locked: returned with the
 * lock held, or NULL with the lock released and the error (bad argument, closed engine,
 * KeyError for an unknown flow) set. */
static flow_t *lock_flow(mc_engine *e, PyObject *args, size_t *slot)
{
    long long flow_id;
    if (!PyArg_ParseTuple(args, "L", &flow_id) || check_open(e) < 0)
        return NULL;
    LOCK(e);
    flow_t *fl = mc_find_flow(e, flow_id, slot);
    if (!fl) {
        UNLOCK(e);
        PyErr_Format(PyExc_KeyError, "no flow %lld", flow_id);
    }
    return fl;
}

static PyObject *Engine_remove_flow(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    size_t slot;
    flow_t *fl = lock_flow(e, args, &slot);
    if (!fl)
        return NULL;
    mc_flush_sends(e); /* pending outputs may still use this flow's sockets */
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fl->fd, NULL);
    e->flows[slot] = NULL;
    /* What is already queued on the socket belongs to the removed flow: count it, drop it. */
    for (size_t drained = 0; drained < REMOVE_DRAIN_MAX;) {
        for (int i = 0; i < e->batch; i++)
            e->riov[i].iov_len = MC_MAX_PACKET;
        int r = recvmmsg(fl->fd, e->rmsg, (unsigned)e->batch, MSG_DONTWAIT, NULL);
        if (r <= 0)
            break;
        e->rx += (uint64_t)r;
        fl->core.drops[DROP_REMOVED_FLOW] += (uint64_t)r;
        drained += (size_t)r;
    }
    mc_drop_hold_queue(fl, &fl->core.drops[DROP_REMOVED_FLOW]);
    PyObject *d = flow_stats_dict(fl, mc_mono_ns());
    for (int i = 0; i < MC_N_DROPS; i++)
        e->drops[i] += fl->core.drops[i];
    UNLOCK(e);
    mc_flow_free(&fl->core);
    free(fl);
    return d;
}

static PyObject *Engine_set_instructions(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "O", &items) || check_open(e) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(items, "set_instructions takes a sequence of (flow_id, instruction)");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    full_rule *rules = PyMem_Calloc((size_t)n + 1, sizeof *rules);
    long long *ids = PyMem_Calloc((size_t)n + 1, sizeof *ids);
    PyObject *result = NULL;
    if (!rules || !ids) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rule_obj;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "LO;each item must be (flow_id, instruction)", &ids[i],
                              &rule_obj) ||
            parse_full_rule(rule_obj, &rules[i]) < 0)
            goto done;
    }
    LOCK(e);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!mc_find_flow(e, ids[i], NULL)) {
            UNLOCK(e);
            PyErr_Format(PyExc_KeyError, "no flow %lld", ids[i]);
            goto done;
        }
    int any_release = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        flow_t *fl = mc_find_flow(e, ids[i], NULL);
        install_rule(fl, &rules[i]);
        if (fl->held) {
            fl->release_pending = 1;
            any_release = 1;
        }
    }
    if (any_release) {
        e->release_flag = 1;
        mc_engine_wake(e);
    }
    UNLOCK(e);
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(rules);
    PyMem_Free(ids);
    Py_DECREF(seq);
    return result;
}

static PyObject *Engine_release(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    flow_t *fl = lock_flow(e, args, NULL);
    if (!fl)
        return NULL;
    if (fl->held) {
        fl->release_pending = 1;
        e->release_flag = 1;
        mc_engine_wake(e);
    }
    UNLOCK(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_flow_stats(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    flow_t *fl = lock_flow(e, args, NULL);
    if (!fl)
        return NULL;
    PyObject *d = flow_stats_dict(fl, mc_mono_ns());
    UNLOCK(e);
    return d;
}

static PyObject *Engine_stats(Engine *self, PyObject *Py_UNUSED(ignored))
{
    mc_engine *e = &self->core;
    if (check_open(e) < 0)
        return NULL;
    uint64_t drops[MC_N_DROPS];
    LOCK(e);
    memcpy(drops, e->drops, sizeof drops);
    size_t flows = 0;
    for (size_t i = 0; i < e->nslots; i++)
        if (e->flows[i]) {
            flows++;
            for (int j = 0; j < MC_N_DROPS; j++)
                drops[j] += e->flows[i]->core.drops[j];
        }
    uint64_t rx = e->rx, tx = e->tx, mdr = e->md_records, mdo = e->md_overflow, gen = e->generated;
    size_t ngens = e->ngens;
    UNLOCK(e);
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    for (int j = 0; j < MC_N_DROPS; j++)
        if (set_item(d, mc_drop_names[j], PyLong_FromUnsignedLongLong(drops[j])) < 0)
            goto fail;
    if (set_item(d, "rx", PyLong_FromUnsignedLongLong(rx)) < 0 || set_item(d, "tx", PyLong_FromUnsignedLongLong(tx)) < 0 ||
        set_item(d, "metadata_records", PyLong_FromUnsignedLongLong(mdr)) < 0 ||
        set_item(d, "metadata_overflow", PyLong_FromUnsignedLongLong(mdo)) < 0 ||
        set_item(d, "generated", PyLong_FromUnsignedLongLong(gen)) < 0 ||
        set_item(d, "flows", PyLong_FromSize_t(flows)) < 0 || set_item(d, "generators", PyLong_FromSize_t(ngens)) < 0)
        goto fail;
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *Engine_fileno(Engine *self, PyObject *Py_UNUSED(ignored))
{
    mc_engine *e = &self->core;
    if (check_open(e) < 0)
        return NULL;
    return PyLong_FromLong(e->mdfd);
}

static PyObject *Engine_drain_metadata(Engine *self, PyObject *Py_UNUSED(ignored))
{
    mc_engine *e = &self->core;
    if (check_open(e) < 0)
        return NULL;
    LOCK(e);
    uint64_t junk;
    ssize_t r = read(e->mdfd, &junk, sizeof junk);
    (void)r;
    size_t n = e->md_len;
    md_rec *recs = n ? malloc(n * sizeof *recs) : NULL;
    if (n && !recs) {
        UNLOCK(e);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++)
        recs[i] = e->mdq[(e->md_head + i) % MD_QUEUE_CAP];
    e->md_head = (e->md_head + n) % MD_QUEUE_CAP;
    e->md_len = 0;
    UNLOCK(e);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        const md_rec *m = &recs[i];
        PyObject *latency = isnan(m->s.latency_ms) ? Py_NewRef(Py_None) : PyFloat_FromDouble(m->s.latency_ms);
        PyObject *t = latency ? Py_BuildValue("(LKdkKKdddLNO)", m->flow_id, (unsigned long long)m->s.seq,
                                              (double)m->at_ns / 1e9, (unsigned long)m->s.ssrc,
                                              (unsigned long long)m->s.packets, (unsigned long long)m->s.bytes,
                                              m->s.payload_size, m->s.packet_rate, m->s.jitter_ms,
                                              (long long)m->s.lost, latency, m->held ? Py_True : Py_False)
                              : NULL;
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    free(recs);
    return list;
}

static PyObject *Engine_take_recording(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    flow_t *fl = lock_flow(e, args, NULL);
    if (!fl)
        return NULL;
    PyObject *b = PyBytes_FromStringAndSize((const char *)fl->core.rec, (Py_ssize_t)fl->core.rec_len);
    fl->core.rec_len = 0;
    UNLOCK(e);
    return b;
}

static PyObject *Engine_add_generator(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    long long gen_id, count;
    int fd, port, pt, ptime, stamp;
    unsigned long ssrc;
    PyObject *host;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "LiOiy*ikipL", &gen_id, &fd, &host, &port, &payload, &pt, &ssrc, &ptime, &stamp,
                          &count))
        return NULL;
    gen_t *g = NULL;
    if (check_open(e) < 0)
        goto fail;
    if (payload.len == 0) {
        PyErr_SetString(PyExc_ValueError, "payload must not be empty");
        goto fail;
    }
    if (pt < 0 || pt > 127) {
        PyErr_Format(PyExc_ValueError, "payload_type must be in 0..127, got %d", pt);
        goto fail;
    }
    if (ptime < 10 || ptime > 200) {
        PyErr_Format(PyExc_ValueError, "ptime_ms must be in 10..200, got %d", ptime);
        goto fail;
    }
    if (ssrc > 0xFFFFFFFFul) {
        PyErr_Format(PyExc_ValueError, "ssrc must be in 0..4294967295, got %lu", ssrc);
        goto fail;
    }
    g = calloc(1, sizeof *g);
    if (!g || !(g->payload = malloc((size_t)payload.len))) {
        PyErr_NoMemory();
        goto fail;
    }
    if (parse_dest(host, port, &g->dest, &g->dest_len, "dest") < 0)
        goto fail;
    if (g->dest_len == 0) {
        PyErr_SetString(PyExc_ValueError, "dest: a generator needs a destination");
        goto fail;
    }
    memcpy(g->payload, payload.buf, (size_t)payload.len);
    g->payload_len = (size_t)payload.len;
    g->gen_id = gen_id;
    g->fd = fd;
    g->pt = (unsigned)pt;
    g->ssrc = (uint32_t)ssrc;
    g->seq = (uint16_t)(ssrc * 2654435761u >> 7); /* arbitrary but reproducible start */
    g->ts = (uint32_t)(ssrc * 40503u);
    g->ptime_ms = ptime;
    g->stamp = stamp;
    g->count = count;
    PyBuffer_Release(&payload);
    LOCK(e);
    for (size_t i = 0; i < e->ngens; i++)
        if (e->gens[i]->gen_id == gen_id) {
            UNLOCK(e);
            free(g->payload);
            free(g);
            return PyErr_Format(PyExc_ValueError, "gen_id %lld already exists", gen_id);
        }
    gen_t **grown = realloc(e->gens, (e->ngens + 1) * sizeof *grown);
    if (!grown) {
        UNLOCK(e);
        free(g->payload);
        free(g);
        return PyErr_NoMemory();
    }
    e->gens = grown;
    g->next_due_ns = mc_mono_ns();
    e->gens[e->ngens++] = g;
    if (g->next_due_ns < e->gen_due_min)
        e->gen_due_min = g->next_due_ns;
    mc_engine_wake(e);
    UNLOCK(e);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&payload);
    if (g) {
        free(g->payload);
        free(g);
    }
    return NULL;
}

static PyObject *gen_stats(const gen_t *g)
{
    return Py_BuildValue("{sKsKsisk}", "sent", (unsigned long long)g->sent, "errors", (unsigned long long)g->errors,
                         "sequence_number", (int)g->seq, "ssrc", (unsigned long)g->ssrc);
}

static PyObject *Engine_remove_generator(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    long long gen_id;
    if (!PyArg_ParseTuple(args, "L", &gen_id) || check_open(e) < 0)
        return NULL;
    LOCK(e);
    for (size_t i = 0; i < e->ngens; i++)
        if (e->gens[i]->gen_id == gen_id) {
            gen_t *g = e->gens[i];
            e->gens[i] = e->gens[--e->ngens];
            UNLOCK(e);
            PyObject *d = gen_stats(g);
            free(g->payload);
            free(g);
            return d;
        }
    UNLOCK(e);
    return PyErr_Format(PyExc_KeyError, "no generator %lld", gen_id);
}

static PyObject *Engine_generator_stats(Engine *self, PyObject *args)
{
    mc_engine *e = &self->core;
    long long gen_id;
    if (!PyArg_ParseTuple(args, "L", &gen_id) || check_open(e) < 0)
        return NULL;
    LOCK(e);
    for (size_t i = 0; i < e->ngens; i++)
        if (e->gens[i]->gen_id == gen_id) {
            PyObject *d = gen_stats(e->gens[i]);
            UNLOCK(e);
            return d;
        }
    UNLOCK(e);
    return PyErr_Format(PyExc_KeyError, "no generator %lld", gen_id);
}

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_NOARGS, "Start the packet thread (idempotent)."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Stop and join the packet thread; idempotent."},
    {"add_flow", (PyCFunction)Engine_add_flow, METH_VARARGS, "add_flow(flow_id, fd, rule, hold_on_metadata, record)"},
    {"remove_flow", (PyCFunction)Engine_remove_flow, METH_VARARGS, "remove_flow(flow_id) -> stats dict"},
    {"set_instructions", (PyCFunction)Engine_set_instructions, METH_VARARGS,
     "set_instructions([(flow_id, rule), ...]): atomic; releases held flows"},
    {"release", (PyCFunction)Engine_release, METH_VARARGS, "release(flow_id): let a held flow go"},
    {"flow_stats", (PyCFunction)Engine_flow_stats, METH_VARARGS, "flow_stats(flow_id) -> dict"},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "stats() -> dict"},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The metadata eventfd."},
    {"drain_metadata", (PyCFunction)Engine_drain_metadata, METH_NOARGS, "drain_metadata() -> list of tuples"},
    {"take_recording", (PyCFunction)Engine_take_recording, METH_VARARGS, "take_recording(flow_id) -> bytes"},
    {"add_generator", (PyCFunction)Engine_add_generator, METH_VARARGS,
     "add_generator(gen_id, fd, host, port, payload, payload_type, ssrc, ptime_ms, stamp, count)"},
    {"remove_generator", (PyCFunction)Engine_remove_generator, METH_VARARGS, "remove_generator(gen_id) -> dict"},
    {"generator_stats", (PyCFunction)Engine_generator_stats, METH_VARARGS, "generator_stats(gen_id) -> dict"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Engine_slots[] = {
    {Py_tp_new, Engine_new},
    {Py_tp_init, Engine_init},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_methods, Engine_methods},
    {Py_tp_doc, "The native media engine; use nf_modules.mediacore.engine.MediaEngine."},
    {0, NULL},
};

static PyType_Spec Engine_spec = {
    .name = "nf_modules.mediacore._mediaengine.Engine",
    .basicsize = sizeof(Engine),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Engine_slots,
};

/* ====================================================================== process() === */

/* process(packets, rule, record, recording_limit) -> (outputs, stats): the per-packet logic on one
 * flow without sockets, for the differential tests against pure_packet.process.
 * packets: sequence of (bytes, arrival_ns); rule: (action, transcode, ptime_ms, payload_type). */
static PyObject *mediaengine_process(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *packets, *outputs = NULL, *result = NULL, *seq = NULL;
    mc_rule rule;
    int record;
    Py_ssize_t rec_limit;
    if (!PyArg_ParseTuple(args, "O(iiii)pn", &packets, &rule.action, &rule.transcode, &rule.ptime_ms,
                          &rule.payload_type, &record, &rec_limit))
        return NULL;
    if (check_rule(&rule) < 0)
        return NULL;
    if (rec_limit < 0) {
        PyErr_SetString(PyExc_ValueError, "recording_limit must be >= 0");
        return NULL;
    }
    mc_flow *f = malloc(sizeof *f);
    uint8_t *obuf = malloc((size_t)MC_MAX_OUTS * MC_OUT_CAP);
    if (!f || !obuf) {
        free(f);
        free(obuf);
        return PyErr_NoMemory();
    }
    mc_flow_init(f, record, (size_t)rec_limit, 0);
    mc_out outs[MC_MAX_OUTS];
    for (int i = 0; i < MC_MAX_OUTS; i++)
        outs[i].buf = obuf + (size_t)i * MC_OUT_CAP;
    long long last = 0;
    seq = PySequence_Fast(packets, "packets must be a sequence of (bytes, arrival_ns)");
    outputs = PyList_New(0);
    if (!seq || !outputs)
        goto done;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_buffer data;
        long long arrival;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "y*L;each packet must be (bytes, arrival_ns)", &data,
                              &arrival))
            goto done;
        if (data.len > MC_MAX_PACKET || arrival < 0) {
            PyBuffer_Release(&data);
            PyErr_Format(PyExc_ValueError, "packet %zd: at most %d bytes and arrival_ns >= 0", i, MC_MAX_PACKET);
            goto done;
        }
        if (arrival > last)
            last = arrival;
        rtp_header h;
        size_t k = 0;
        if (mc_receive(f, data.buf, (size_t)data.len, arrival, &h) < 0)
            k = mc_apply(f, &rule, data.buf, (size_t)data.len, &h, outs);
        PyBuffer_Release(&data);
        for (size_t j = 0; j < k; j++) {
            PyObject *b = PyBytes_FromStringAndSize((const char *)outs[j].buf, (Py_ssize_t)outs[j].len);
            if (!b || PyList_Append(outputs, b) < 0) {
                Py_XDECREF(b);
                goto done;
            }
            Py_DECREF(b);
        }
    }
    PyObject *stats = core_stats(f);
    if (stats) {
        mc_snapshot s;
        mc_snapshot_take(f, last + 1000000, &s); /* the interval ends 1 ms after the last arrival */
        PyObject *latency = isnan(s.latency_ms) ? Py_NewRef(Py_None) : PyFloat_FromDouble(s.latency_ms);
        PyObject *snap = latency ? Py_BuildValue("(KKkdddLNK)", (unsigned long long)s.packets,
                                                 (unsigned long long)s.bytes, (unsigned long)s.ssrc, s.payload_size,
                                                 s.packet_rate, s.jitter_ms, (long long)s.lost, latency,
                                                 (unsigned long long)s.seq)
                                 : NULL;
        PyObject *rec = PyBytes_FromStringAndSize((const char *)f->rec, (Py_ssize_t)f->rec_len);
        if (rec && snap && PyDict_SetItemString(stats, "recording", rec) == 0 &&
            PyDict_SetItemString(stats, "snapshot", snap) == 0)
            result = PyTuple_Pack(2, outputs, stats);
        Py_XDECREF(rec);
        Py_XDECREF(snap);
        Py_DECREF(stats);
    }
done:
    Py_XDECREF(seq);
    Py_XDECREF(outputs);
    mc_flow_free(f);
    free(f);
    free(obuf);
    return result;
}

static PyObject *mediaengine_hist_index(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long us = PyLong_AsUnsignedLongLong(arg);
    if (us == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLong(mc_hist_index(us));
}

static PyMethodDef mediaengine_methods[] = {
    {"process", mediaengine_process, METH_VARARGS,
     "process(packets, rule, record, recording_limit) -> (outputs, stats): one flow's per-packet logic."},
    {"hist_index", mediaengine_hist_index, METH_O, "hist_index(us) -> latency histogram bucket."},
    {NULL, NULL, 0, NULL},
};

static int mediaengine_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Engine_spec, NULL);
    if (!type)
        return -1;
    int r = PyModule_AddObjectRef(module, "Engine", type);
    Py_DECREF(type);
    if (r < 0)
        return -1;
    PyObject *names = PyTuple_New(MC_N_DROPS);
    if (!names)
        return -1;
    for (int i = 0; i < MC_N_DROPS; i++)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(mc_drop_names[i]));
    r = PyModule_AddObjectRef(module, "DROP_REASONS", names);
    Py_DECREF(names);
    if (r < 0 || PyModule_AddIntConstant(module, "MAX_PACKET", MC_MAX_PACKET) < 0 ||
        PyModule_AddIntConstant(module, "HIST_BUCKETS", HIST_BUCKETS) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot mediaengine_slots[] = {
    {Py_mod_exec, mediaengine_exec},
    {0, NULL},
};

static struct PyModuleDef mediaengine_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_mediaengine",
    .m_doc = "The native media engine (packet thread, recvmmsg/sendmmsg) and its per-packet core.",
    .m_size = 0,
    .m_methods = mediaengine_methods,
    .m_slots = mediaengine_slots,
};

PyMODINIT_FUNC PyInit__mediaengine(void) { return PyModuleDef_Init(&mediaengine_module); }
