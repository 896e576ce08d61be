/*
 * engine_loop.h: the media engine's packet thread and its state, in plain C (no Python).
 *
 * mc_engine_main runs on a pthread that never takes the GIL: it waits in epoll on the flows'
 * sockets, a wake-up eventfd and a timerfd; receives (recvmsg for a flow that brings one
 * datagram per wake-up, recvmmsg batches for a busy one), runs the per-packet logic of
 * engine_core.c, sends (sendto for a lone datagram, sendmmsg for a run on one socket), sends the
 * generators' packets when due, and every metadata interval queues one record per active flow
 * and signals the metadata eventfd.  Everything in mc_engine is guarded by its mutex: the thread
 * holds it for one iteration (one wake-up: every ready socket), the control calls
 * (_mediaengine.c) for one operation; it never holds it while waiting.
 *
 * Many low-rate flows (one socket per call side, 50 packets/s each) would otherwise cost one
 * wake-up per datagram: when a wake-up finds at least COALESCE_MIN_FLOWS ready sockets, the
 * thread lets the next ones accumulate until COALESCE_NS after that wake-up (never past a due
 * generator or metadata tick) before it waits again, so a packet waits at most COALESCE_NS more
 * and one wake-up serves tens of flows.
 */
#ifndef MEDIACORE_ENGINE_LOOP_H
#define MEDIACORE_ENGINE_LOOP_H

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "engine_core.h"

#define TAG_FLOW 0ull
#define TAG_WAKE 1ull
#define TAG_TIMER 2ull
#define MD_QUEUE_CAP 65536
#define REMOVE_DRAIN_MAX 100000
#define GEN_BURST_MAX 8
#define RECV_ROUNDS_MAX 8
/* Generator scans are O(generators): at most one per tick bounds that cost with thousands of
 * UE senders; a packet leaves at most one tick after its due time (a real host's timer slack). */
#define GEN_TICK_NS 200000
/* Wake-up coalescing under load (see above): 0.3 ms of added latency at most, well under the
 * 5 ms one-way budget; light load (fewer ready sockets per wake-up) keeps waking per datagram. */
#define COALESCE_NS 300000
#define COALESCE_MIN_FLOWS 8
/* Ready sockets taken per epoll_wait (the rest come with the next call, without waiting). */
#define EPOLL_EVENTS_MAX 1024

typedef struct hold_item {
    struct hold_item *next;
    size_t len;
    uint8_t data[];
} hold_item;

typedef struct {
    /* what every packet reads, together at the front; the rest after */
    long long flow_id;
    int fd;
    uint32_t gen;
    mc_rule rule;
    int out_fd;
    socklen_t dest_len;
    int held;
    /* Receive mode: one recvmsg per readiness while the flow brings one datagram per wake-up;
     * recvmmsg batches once it is ready in consecutive wake-ups, until a batch brings one. */
    int rx_batch;
    uint32_t rx_wake; /* the wake-up that last served it */
    struct sockaddr_storage dest;
    long long version;
    int hold_on_metadata, release_pending;
    int64_t held_since_ns, hold_time_ns;
    uint64_t held_packets;
    hold_item *hq_head, *hq_tail;
    size_t hq_len;
    mc_flow core;
} flow_t;

typedef struct {
    long long gen_id;
    int fd;
    struct sockaddr_storage dest;
    socklen_t dest_len;
    uint8_t *payload;
    size_t payload_len, pos;
    unsigned pt;
    uint32_t ssrc, ts;
    uint16_t seq;
    int ptime_ms, stamp;
    long long count; /* -1: unbounded */
    uint64_t sent, errors;
    int64_t next_due_ns;
} gen_t;

typedef struct {
    long long flow_id;
    mc_snapshot s;
    int64_t at_ns;
    int held;
} md_rec;

typedef struct mc_engine {
    pthread_mutex_t lock;
    pthread_t thread;
    int started, running, closed;
    int epfd, wakefd, timerfd, mdfd;
    int batch;
    int64_t md_interval_ns, next_md_ns, armed_ns;
    size_t hold_limit, rec_limit;
    flow_t **flows; /* slots; NULL when free */
    size_t nslots;
    uint32_t next_gen;
    gen_t **gens;
    size_t ngens;
    int64_t gen_due_min;   /* earliest next_due_ns of a generator with packets left */
    int64_t gen_last_scan; /* generators are scanned at most every GEN_TICK_NS */
    md_rec *mdq;
    size_t md_head, md_len;
    int release_flag;
    uint32_t wake_seq; /* wake-ups of the packet thread, for flows' receive mode */
    uint64_t rx, tx, drops[MC_N_DROPS], md_records, md_overflow, generated;
    /* batch buffers (packet thread and remove_flow, always under the lock) */
    struct mmsghdr *rmsg;
    struct iovec *riov;
    uint8_t *rbuf;
    struct mmsghdr *smsg;
    struct iovec *siov;
    uint8_t *sbuf;
    mc_out *souts;
    int *sfd;
    size_t nsend, send_cap;
} mc_engine;

int64_t mc_mono_ns(void);
/* Allocate the batch buffers and the fds; 0, or -1 with errno set (ENOMEM, EMFILE, ...). */
int mc_engine_setup(mc_engine *e, int batch, int64_t md_interval_ns, size_t hold_limit, size_t rec_limit);
/* Free everything (the thread must be stopped). */
void mc_engine_teardown(mc_engine *e);
void *mc_engine_main(void *arg);
void mc_engine_wake(mc_engine *e);
void mc_flush_sends(mc_engine *e);
void mc_drop_hold_queue(flow_t *fl, uint64_t *counter);
flow_t *mc_find_flow(mc_engine *e, long long flow_id, size_t *slot);

#endif /* MEDIACORE_ENGINE_LOOP_H */
