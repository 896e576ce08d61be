/*
 * engine_loop.c: the media engine's packet thread (see engine_loop.h).  Runs without the GIL;
 * every function here is called with the engine's mutex held, except the waits of
 * mc_engine_main (epoll_wait and coalesce_wait).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* recvmmsg, sendmmsg */
#endif
#include "engine_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

int64_t mc_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mc_flush_sends(mc_engine *e)
{
    size_t i = 0;
    while (i < e->nsend) {
        size_t run = 1;
        while (i + run < e->nsend && e->sfd[i + run] == e->sfd[i])
            run++;
        int r;
        if (run == 1) { /* a lone datagram (the common case with a socket per flow): sendto is cheaper */
            struct msghdr *m = &e->smsg[i].msg_hdr;
            r = sendto(e->sfd[i], e->siov[i].iov_base, e->siov[i].iov_len, MSG_DONTWAIT, m->msg_name, m->msg_namelen) < 0
                    ? -1
                    : 1;
        } else {
            r = sendmmsg(e->sfd[i], &e->smsg[i], (unsigned)run, MSG_DONTWAIT);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            e->drops[DROP_SEND_ERROR]++;
            i++;
        } else {
            e->tx += (uint64_t)r;
            i += (size_t)r;
        }
    }
    e->nsend = 0;
}

static void send_outputs(mc_engine *e, flow_t *fl, const uint8_t *p, size_t n, const rtp_header *h)
{
    /* Pending outputs leave as soon as another socket's begin: with a socket per flow nothing
     * would batch with them, and the rest of the wake-up's flows need not delay them. */
    if (e->send_cap - e->nsend < MC_MAX_OUTS || (e->nsend && e->sfd[e->nsend - 1] != fl->out_fd))
        mc_flush_sends(e);
    size_t k = mc_apply(&fl->core, &fl->rule, p, n, h, &e->souts[e->nsend]);
    if (k && fl->dest_len == 0) { /* forward without a route cannot be configured; belt and braces */
        e->drops[DROP_SEND_ERROR] += k;
        return;
    }
    for (size_t i = 0; i < k; i++) {
        size_t j = e->nsend + i;
        e->siov[j].iov_base = e->souts[j].buf;
        e->siov[j].iov_len = e->souts[j].len;
        e->smsg[j].msg_hdr.msg_name = &fl->dest;
        e->smsg[j].msg_hdr.msg_namelen = fl->dest_len;
        e->sfd[j] = fl->out_fd;
    }
    e->nsend += k;
}

static void flow_input(mc_engine *e, flow_t *fl, const uint8_t *p, size_t n, int64_t now)
{
    rtp_header h;
    if (mc_receive(&fl->core, p, n, now, &h) >= 0)
        return;
    if (fl->held) {
        if (fl->hq_len >= e->hold_limit) {
            fl->core.drops[DROP_HOLD_OVERFLOW]++;
            return;
        }
        hold_item *it = malloc(sizeof *it + n);
        if (!it) {
            fl->core.drops[DROP_HOLD_OVERFLOW]++;
            return;
        }
        it->next = NULL;
        it->len = n;
        memcpy(it->data, p, n);
        if (fl->hq_tail)
            fl->hq_tail->next = it;
        else
            fl->hq_head = it;
        fl->hq_tail = it;
        fl->hq_len++;
        fl->held_packets++;
        return;
    }
    send_outputs(e, fl, p, n, &h);
}

static void release_flow(mc_engine *e, flow_t *fl, int64_t now)
{
    fl->release_pending = 0;
    if (fl->held) {
        fl->hold_time_ns += now - fl->held_since_ns;
        fl->held = 0;
    }
    while (fl->hq_head) {
        hold_item *it = fl->hq_head;
        fl->hq_head = it->next;
        rtp_header h;
        if (rtp_parse(it->data, it->len, &h) == RTP_OK)
            send_outputs(e, fl, it->data, it->len, &h);
        free(it);
    }
    fl->hq_tail = NULL;
    fl->hq_len = 0;
}

void mc_drop_hold_queue(flow_t *fl, uint64_t *counter)
{
    while (fl->hq_head) {
        hold_item *it = fl->hq_head;
        fl->hq_head = it->next;
        free(it);
        (*counter)++;
    }
    fl->hq_tail = NULL;
    fl->hq_len = 0;
}

static void receive_datagrams(mc_engine *e, flow_t *fl, int r)
{
    int64_t now = mc_mono_ns();
    e->rx += (uint64_t)r;
    for (int i = 0; i < r; i++) {
        size_t n = e->rmsg[i].msg_len;
        if (e->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
            fl->core.drops[DROP_TRUNCATED]++;
            continue;
        }
        flow_input(e, fl, e->rbuf + (size_t)i * MC_MAX_PACKET, n, now);
    }
}

static void receive_flow(mc_engine *e, size_t slot, uint32_t gen)
{
    flow_t *fl = slot < e->nslots ? e->flows[slot] : NULL;
    if (!fl || fl->gen != gen)
        return; /* an event from before remove_flow: its packets were counted there */
    int consecutive = fl->rx_wake + 1 == e->wake_seq;
    fl->rx_wake = e->wake_seq;
    if (!fl->rx_batch && !consecutive) {
        /* One datagram per wake-up (a low-rate flow): a recvmmsg would pay a second, empty
         * receive to learn that.  Level-triggered epoll reports the socket again if more wait. */
        e->riov[0].iov_len = MC_MAX_PACKET;
        ssize_t n = recvmsg(fl->fd, &e->rmsg[0].msg_hdr, MSG_DONTWAIT);
        if (n < 0)
            return;
        e->rmsg[0].msg_len = (unsigned)n;
        receive_datagrams(e, fl, 1);
        return;
    }
    /* Read while full batches keep coming (bounded, for fairness between flows): one epoll_wait
     * per burst instead of one per batch. */
    for (int round = 0; round < RECV_ROUNDS_MAX; round++) {
        for (int i = 0; i < e->batch; i++)
            e->riov[i].iov_len = MC_MAX_PACKET;
        int r = recvmmsg(fl->fd, e->rmsg, (unsigned)e->batch, MSG_DONTWAIT, NULL);
        if (r <= 0)
            return;
        if (round == 0)
            fl->rx_batch = r > 1; /* one came: back to recvmsg unless it stays ready */
        receive_datagrams(e, fl, r);
        if (r < e->batch)
            return;
        mc_flush_sends(e);
    }
}

static void build_generated(gen_t *g, uint8_t *b, size_t *len, int64_t now)
{
    size_t per = (size_t)g->ptime_ms * 8;
    b[0] = (uint8_t)(0x80 | (g->stamp ? 0x10 : 0));
    b[1] = (uint8_t)((g->sent == 0 ? 0x80 : 0) | g->pt);
    put_be16(b + 2, g->seq);
    put_be32(b + 4, g->ts);
    put_be32(b + 8, g->ssrc);
    size_t off = RTP_HEADER_SIZE;
    if (g->stamp) {
        put_be16(b + off, 0xBEDE);
        put_be16(b + off + 2, 3);
        b[off + 4] = 0x17; /* id 1, 8 bytes */
        uint64_t t = (uint64_t)now;
        put_be32(b + off + 5, (uint32_t)(t >> 32));
        put_be32(b + off + 9, (uint32_t)t);
        memset(b + off + 13, 0, 3);
        off += 16;
    }
    for (size_t i = 0; i < per; i++) {
        b[off + i] = g->payload[g->pos];
        g->pos = (g->pos + 1) % g->payload_len;
    }
    *len = off + per;
}

static void run_generators(mc_engine *e, int64_t now)
{
    uint8_t b[RTP_HEADER_SIZE + 16 + 8 * 200];
    if (now < e->gen_due_min || now < e->gen_last_scan + GEN_TICK_NS)
        return;
    e->gen_last_scan = now;
    e->gen_due_min = INT64_MAX;
    for (size_t i = 0; i < e->ngens; i++) {
        gen_t *g = e->gens[i];
        int64_t period = (int64_t)g->ptime_ms * 1000000;
        for (int burst = 0; burst < GEN_BURST_MAX && g->next_due_ns <= now; burst++) {
            if (g->count >= 0 && (long long)g->sent >= g->count)
                break;
            size_t len;
            build_generated(g, b, &len, mc_mono_ns());
            ssize_t r = sendto(g->fd, b, len, MSG_DONTWAIT, (struct sockaddr *)&g->dest, g->dest_len);
            if (r < 0) {
                g->errors++;
                e->drops[DROP_SEND_ERROR]++;
            } else {
                e->generated++;
            }
            g->sent++;
            g->seq++;
            g->ts += (uint32_t)g->ptime_ms * 8;
            g->next_due_ns += period;
        }
        if (now - g->next_due_ns > 1000000000) /* fell a second behind: resynchronise, don't burst */
            g->next_due_ns = now + period;
        if ((g->count < 0 || (long long)g->sent < g->count) && g->next_due_ns < e->gen_due_min)
            e->gen_due_min = g->next_due_ns;
    }
}

static void push_metadata(mc_engine *e, long long flow_id, const mc_snapshot *s, int64_t now, int held)
{
    if (e->md_len == MD_QUEUE_CAP) {
        e->md_overflow++;
        return;
    }
    md_rec *m = &e->mdq[(e->md_head + e->md_len) % MD_QUEUE_CAP];
    m->flow_id = flow_id;
    m->s = *s;
    m->at_ns = now;
    m->held = held;
    e->md_len++;
    e->md_records++;
}

static void metadata_tick(mc_engine *e, int64_t now)
{
    if (e->md_interval_ns <= 0 || now < e->next_md_ns)
        return;
    int any = 0;
    for (size_t i = 0; i < e->nslots; i++) {
        flow_t *fl = e->flows[i];
        if (!fl || fl->core.iv_packets == 0)
            continue;
        mc_snapshot s;
        mc_snapshot_take(&fl->core, now, &s);
        if (fl->hold_on_metadata && !fl->held) {
            fl->held = 1;
            fl->held_since_ns = now;
        }
        push_metadata(e, fl->flow_id, &s, now, fl->held);
        any = 1;
    }
    if (any) {
        uint64_t one = 1;
        ssize_t r = write(e->mdfd, &one, sizeof one);
        (void)r;
    }
    e->next_md_ns += e->md_interval_ns;
    if (e->next_md_ns <= now)
        e->next_md_ns = now + e->md_interval_ns;
}

static void arm_timer(mc_engine *e)
{
    int64_t due = e->md_interval_ns > 0 ? e->next_md_ns : INT64_MAX;
    if (e->gen_due_min != INT64_MAX) {
        int64_t gen_due = e->gen_due_min > e->gen_last_scan + GEN_TICK_NS ? e->gen_due_min
                                                                           : e->gen_last_scan + GEN_TICK_NS;
        if (gen_due < due)
            due = gen_due;
    }
    if (due == e->armed_ns)
        return;
    struct itimerspec its = {0};
    if (due != INT64_MAX) {
        if (due <= 0)
            due = 1;
        its.it_value.tv_sec = due / 1000000000;
        its.it_value.tv_nsec = due % 1000000000;
    }
    timerfd_settime(e->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
    e->armed_ns = due;
}

/* Under load, let ready sockets accumulate until `until` (see engine_loop.h); EINTR just retries. */
static void coalesce_wait(int64_t until)
{
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

void *mc_engine_main(void *arg)
{
    mc_engine *e = arg;
    struct epoll_event evs[EPOLL_EVENTS_MAX];
    int64_t coalesce_until = 0;
    for (;;) {
        if (coalesce_until)
            coalesce_wait(coalesce_until);
        int n = epoll_wait(e->epfd, evs, EPOLL_EVENTS_MAX, -1);
        int64_t woke = mc_mono_ns();
        int flows = 0;
        pthread_mutex_lock(&e->lock);
        if (!e->running) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
        e->wake_seq++;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64, kind = tag >> 62, junk;
            if (kind == TAG_FLOW) {
                flows++;
                receive_flow(e, (size_t)(tag & 0xFFFFFFFFu), (uint32_t)((tag >> 32) & 0x3FFFFFFFu));
            } else if (kind == TAG_WAKE) {
                ssize_t r = read(e->wakefd, &junk, sizeof junk);
                (void)r;
            } else {
                ssize_t r = read(e->timerfd, &junk, sizeof junk);
                (void)r;
                e->armed_ns = 0; /* expired: re-arm whatever is due next */
            }
        }
        int64_t now = mc_mono_ns();
        if (e->release_flag) {
            e->release_flag = 0;
            for (size_t i = 0; i < e->nslots; i++)
                if (e->flows[i] && e->flows[i]->release_pending)
                    release_flow(e, e->flows[i], now);
        }
        run_generators(e, now);
        metadata_tick(e, now);
        mc_flush_sends(e);
        arm_timer(e);
        coalesce_until = 0;
        if (flows >= COALESCE_MIN_FLOWS && n < EPOLL_EVENTS_MAX) {
            coalesce_until = woke + COALESCE_NS;
            if (e->armed_ns != INT64_MAX && e->armed_ns < coalesce_until)
                coalesce_until = e->armed_ns; /* a generator or the metadata tick is due sooner */
            if (coalesce_until <= now)
                coalesce_until = 0;
        }
        pthread_mutex_unlock(&e->lock);
    }
    return NULL;
}

void mc_engine_wake(mc_engine *e)
{
    uint64_t one = 1;
    ssize_t r = write(e->wakefd, &one, sizeof one);
    (void)r;
}

flow_t *mc_find_flow(mc_engine *e, long long flow_id, size_t *slot)
{
    for (size_t i = 0; i < e->nslots; i++)
        if (e->flows[i] && e->flows[i]->flow_id == flow_id) {
            if (slot)
                *slot = i;
            return e->flows[i];
        }
    return NULL;
}

void mc_engine_teardown(mc_engine *e)
{
    for (size_t i = 0; i < e->nslots; i++)
        if (e->flows[i]) {
            uint64_t junk = 0;
            mc_drop_hold_queue(e->flows[i], &junk);
            mc_flow_free(&e->flows[i]->core);
            free(e->flows[i]);
        }
    free(e->flows);
    e->flows = NULL;
    e->nslots = 0;
    for (size_t i = 0; i < e->ngens; i++) {
        free(e->gens[i]->payload);
        free(e->gens[i]);
    }
    free(e->gens);
    e->gens = NULL;
    e->ngens = 0;
    free(e->mdq);
    free(e->rmsg);
    free(e->riov);
    free(e->rbuf);
    free(e->smsg);
    free(e->siov);
    free(e->sbuf);
    free(e->souts);
    free(e->sfd);
    e->mdq = NULL;
    e->rmsg = NULL;
    e->riov = NULL;
    e->rbuf = e->sbuf = NULL;
    e->smsg = NULL;
    e->siov = NULL;
    e->souts = NULL;
    e->sfd = NULL;
    int *fds[] = {&e->epfd, &e->wakefd, &e->timerfd, &e->mdfd};
    for (size_t i = 0; i < 4; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
}


int mc_engine_setup(mc_engine *e, int batch, int64_t md_interval_ns, size_t hold_limit, size_t rec_limit)
{
    e->batch = batch;
    e->md_interval_ns = md_interval_ns;
    e->hold_limit = hold_limit;
    e->rec_limit = rec_limit;
    e->send_cap = (size_t)batch + MC_MAX_OUTS;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->mdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    e->mdq = calloc(MD_QUEUE_CAP, sizeof *e->mdq);
    e->rmsg = calloc((size_t)batch, sizeof *e->rmsg);
    e->riov = calloc((size_t)batch, sizeof *e->riov);
    e->rbuf = malloc((size_t)batch * MC_MAX_PACKET);
    e->smsg = calloc(e->send_cap, sizeof *e->smsg);
    e->siov = calloc(e->send_cap, sizeof *e->siov);
    e->sbuf = malloc(e->send_cap * MC_OUT_CAP);
    e->souts = calloc(e->send_cap, sizeof *e->souts);
    e->sfd = calloc(e->send_cap, sizeof *e->sfd);
    if (e->epfd < 0 || e->wakefd < 0 || e->mdfd < 0 || e->timerfd < 0)
        return -1;
    if (!e->mdq || !e->rmsg || !e->riov || !e->rbuf || !e->smsg || !e->siov || !e->sbuf || !e->souts || !e->sfd) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < batch; i++) {
        e->riov[i].iov_base = e->rbuf + (size_t)i * MC_MAX_PACKET;
        e->riov[i].iov_len = MC_MAX_PACKET;
        e->rmsg[i].msg_hdr.msg_iov = &e->riov[i];
        e->rmsg[i].msg_hdr.msg_iovlen = 1;
    }
    for (size_t i = 0; i < e->send_cap; i++) {
        e->souts[i].buf = e->sbuf + i * MC_OUT_CAP;
        e->smsg[i].msg_hdr.msg_iov = &e->siov[i];
        e->smsg[i].msg_hdr.msg_iovlen = 1;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = TAG_WAKE << 62;
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev);
    ev.data.u64 = TAG_TIMER << 62;
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->timerfd, &ev);
    e->next_md_ns = mc_mono_ns() + e->md_interval_ns;
    e->armed_ns = 0;
    e->gen_due_min = INT64_MAX;
    e->wake_seq = 1; /* a new flow (rx_wake 0) is not taken for one served by the previous wake-up */
    return 0;
}
