/* flowagent._medialoop: the native media loop (optional; flowagent/runner/native_player.py).
 *
 * Why: at ~1000 calls the per-frame work (one 323-byte write per call per 20 ms, one read, the
 * AudioSocket parser, one asyncio callback per socket) needs ~1.8 cores in pure Python on one
 * thread. Here ONE native thread owns that work for every call: its own epoll, an absolute
 * 20 ms deadline clock on CLOCK_MONOTONIC (timerfd, TFD_TIMER_ABSTIME: drift-free; up to 3
 * missed frames are caught up, a longer stall re-anchors), a FIFO of ready frames per call that
 * Python fills, and the inbound reader/parser. It never takes the GIL: results go to Python as
 * batched events through an eventfd the asyncio loop watches.
 *
 * Semantics follow flowagent/runner/player.py (OutStream/Player) exactly; see that file for the
 * reasons behind keepalive, kick-start, flush/pause fades and the catch-up rule.
 *
 * Locking: engine->lmu guards the call list and dead list; conn->mu guards one call;
 * engine->emu guards the event queue. Order: conn->mu before emu; lmu never with conn->mu.
 * Only the media thread frees closed calls (after a full epoll round), so a pointer it got
 * from epoll or a tick snapshot is always valid.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CATCH_UP 3
#define RING 8192
#define IBUF 32768
#define MAX_PAYLOAD 16384
/* what we sent, kept for the echo check (runner/echo_guard.py): the last SENT_N frames */
#define SENT_N 32
#define TAG_TIMER ((uint64_t)1)
#define TAG_WAKE ((uint64_t)2)

enum { EV_FRAME = 0, EV_FIRST = 1, EV_DONE = 2, EV_IDLE = 3, EV_WERR = 4, EV_EOF = 5,
       EV_PROTO = 6 };

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct QFrame {
    struct QFrame *next;
    int64_t sid;
    int is_end;
    uint32_t len; /* header + payload */
    unsigned char data[];
} QFrame;

typedef struct { int64_t sid; int64_t bytes; } Played;

struct Engine;

typedef struct Conn {
    pthread_mutex_t mu;
    struct Engine *eng;
    uint64_t id;
    int fd;
    int closed;
    int reading;
    int in_done;
    int wfailed;
    /* outbound */
    QFrame *head, *tail;
    long nq_audio, nq;
    int kind;
    uint32_t frame_bytes;
    unsigned char *silence; /* header + zeros */
    unsigned char *pend;
    uint32_t pend_len, pend_off;
    int64_t current_say;
    uint64_t frames_sent, underruns, blocked;
    double keepalive_s, last_sent, kicked_at;
    int paused, has_partial;
    /* ducking (a possible barge-in): Q15 gain for our audio frames not yet sent (32768 = as
     * made) and the gain the last frame ended at (each frame ramps from one to the other) */
    int32_t gain, gain_prev;
    Played *played;
    int nplayed, capplayed;
    /* the last SENT_N frames written (payload as sent, after the gain) and when: what the
     * caller's line may echo back; read only when an echo check runs (sent_tail) */
    unsigned char *sent;
    uint32_t sent_len[SENT_N];
    double sent_t[SENT_N];
    uint64_t sent_w;
    /* inbound */
    unsigned char *ibuf;
    uint32_t ilen;
} Conn;

typedef struct {
    uint64_t id;
    int type;
    int64_t a;
    double t;
    size_t off;
    uint32_t len;
} Ev;

typedef struct { double start, end, late; } TickRec;

typedef struct Engine {
    PyObject_HEAD
    pthread_mutex_t lmu, emu;
    Conn **conns;
    int nconns, capconns;
    Conn **dead;
    int ndead, capdead;
    pthread_t th;
    int running;
    volatile int stop_flag;
    int epfd, evfd, wakefd, tfd;
    /* events (guarded by emu) */
    Ev *ev;
    size_t nev, capev;
    unsigned char *edata;
    size_t elen, ecap;
    int signaled;
    double last_signal, batch_s;
    /* clock (media thread only, stats read under emu) */
    double frame_s, t0, next;
    int64_t n;
    uint64_t ticks, late_ticks, reanchors;
    double max_late;
    TickRec ring[RING];
    uint64_t ring_w, ring_r;
    uint64_t next_id;
    double poll_s; /* inbound coalescing interval (see media_thread) */
    int rt_prio;   /* >0: ask for SCHED_RR at this priority for the media thread */
    int rt_state;  /* 1 real-time granted, -errno refused, 0 not asked */
} Engine;

/* ------------------------------------------------------------------------------------------ */
/* events                                                                                      */

static int ev_push(Engine *e, uint64_t id, int type, int64_t a, double t, const void *data,
                   uint32_t len) {
    pthread_mutex_lock(&e->emu);
    if (e->nev == e->capev) {
        size_t cap = e->capev ? e->capev * 2 : 1024;
        Ev *nv = realloc(e->ev, cap * sizeof(Ev));
        if (!nv) { pthread_mutex_unlock(&e->emu); return -1; }
        e->ev = nv; e->capev = cap;
    }
    if (len) {
        if (e->elen + len > e->ecap) {
            size_t cap = e->ecap ? e->ecap : 65536;
            while (cap < e->elen + len) cap *= 2;
            unsigned char *nd = realloc(e->edata, cap);
            if (!nd) { pthread_mutex_unlock(&e->emu); return -1; }
            e->edata = nd; e->ecap = cap;
        }
        memcpy(e->edata + e->elen, data, len);
    }
    Ev *v = &e->ev[e->nev++];
    v->id = id; v->type = type; v->a = a; v->t = t; v->off = e->elen; v->len = len;
    e->elen += len;
    pthread_mutex_unlock(&e->emu);
    return 0;
}

/* media thread: tell Python there is work, at most every batch_s (the first at once) */
static double maybe_signal(Engine *e, double now) {
    double wait = -1;
    pthread_mutex_lock(&e->emu);
    if (e->nev && !e->signaled) {
        double due = e->last_signal + e->batch_s;
        if (now >= due || e->nev >= 8192) {
            uint64_t one = 1;
            ssize_t r = write(e->evfd, &one, 8);
            (void)r;
            e->signaled = 1;
            e->last_signal = now;
        } else {
            wait = due - now;
        }
    }
    pthread_mutex_unlock(&e->emu);
    return wait;
}

/* ------------------------------------------------------------------------------------------ */
/* one call: outbound                                                                          */

static void q_clear(Conn *c) {
    QFrame *f = c->head;
    while (f) { QFrame *n = f->next; free(f); f = n; }
    c->head = c->tail = NULL;
    c->nq = c->nq_audio = 0;
}

static QFrame *q_new(Conn *c, int64_t sid, const unsigned char *payload, uint32_t plen,
                     int is_end) {
    QFrame *f = malloc(sizeof(QFrame) + (is_end ? 0 : plen + 3));
    if (!f) return NULL;
    f->next = NULL; f->sid = sid; f->is_end = is_end; f->len = 0;
    if (!is_end) {
        f->data[0] = (unsigned char)c->kind;
        f->data[1] = (unsigned char)(plen >> 8);
        f->data[2] = (unsigned char)(plen & 0xff);
        if (payload) memcpy(f->data + 3, payload, plen); else memset(f->data + 3, 0, plen);
        f->len = plen + 3;
    }
    return f;
}

static void q_append(Conn *c, QFrame *f) {
    if (c->tail) c->tail->next = f; else c->head = f;
    c->tail = f;
    c->nq++;
    if (!f->is_end) c->nq_audio++;
}

static void q_prepend(Conn *c, QFrame *f) {
    f->next = c->head;
    c->head = f;
    if (!c->tail) c->tail = f;
    c->nq++;
    if (!f->is_end) c->nq_audio++;
}

static QFrame *q_pop(Conn *c) {
    QFrame *f = c->head;
    if (!f) return NULL;
    c->head = f->next;
    if (!c->head) c->tail = NULL;
    c->nq--;
    if (!f->is_end) c->nq_audio--;
    return f;
}

/* a fade-out frame from the first 5 ms of `payload` (same arithmetic as audio.fade: a float32
 * linspace(1, 0) ramp, truncated back to s16), padded with silence to a whole frame */
static QFrame *fade_frame(Conn *c, const unsigned char *payload, uint32_t plen, int rate) {
    uint32_t nb = (uint32_t)(rate * 5 / 1000) * 2;
    if (nb > plen) nb = plen;
    QFrame *f = q_new(c, 0, NULL, c->frame_bytes, 0);
    if (!f) return NULL;
    int n = (int)(nb / 2);
    for (int i = 0; i < n; i++) {
        int16_t s = (int16_t)(payload[2 * i] | (payload[2 * i + 1] << 8));
        float ramp = n > 1 ? (float)(1.0 + (double)i * (-1.0 / (double)(n - 1))) : 1.0f;
        if (n > 1 && i == n - 1) ramp = 0.0f;
        int16_t o = (int16_t)((float)s * ramp);
        f->data[3 + 2 * i] = (unsigned char)(o & 0xff);
        f->data[3 + 2 * i + 1] = (unsigned char)((uint16_t)o >> 8);
    }
    return f;
}

static int rate_of(int kind) {
    static const int rates[] = {8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000};
    return (kind >= 0x10 && kind <= 0x18) ? rates[kind - 0x10] : 8000;
}

/* write one whole frame; a partial write keeps the rest for the next tick (never interleaved) */
static void c_write(Conn *c, const unsigned char *data, uint32_t len) {
    if (c->fd < 0 || c->wfailed) return;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == (ssize_t)len) return;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            c->wfailed = 1;
            ev_push(c->eng, c->id, EV_WERR, errno, 0, NULL, 0);
            return;
        }
        n = 0;
    }
    uint32_t rest = len - (uint32_t)n;
    unsigned char *p = realloc(c->pend, rest);
    if (!p) return;
    memcpy(p, data + n, rest);
    c->pend = p; c->pend_len = rest; c->pend_off = 0;
}

/* finish a partial frame; returns 1 when nothing is pending any more */
static int c_finish_pending(Conn *c) {
    if (!c->pend_len) return 1;
    if (c->fd < 0 || c->wfailed) { c->pend_len = 0; return 1; }
    ssize_t n = send(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            c->wfailed = 1;
            c->pend_len = 0;
            ev_push(c->eng, c->id, EV_WERR, errno, 0, NULL, 0);
            return 1;
        }
        return 0;
    }
    c->pend_off += (uint32_t)n;
    if (c->pend_off >= c->pend_len) { c->pend_len = c->pend_off = 0; return 1; }
    return 0;
}

static void played_add(Conn *c, int64_t sid, int64_t bytes, int *first) {
    for (int i = c->nplayed - 1; i >= 0; i--) {
        if (c->played[i].sid == sid) { c->played[i].bytes += bytes; *first = 0; return; }
    }
    if (c->nplayed == c->capplayed) {
        int cap = c->capplayed ? c->capplayed * 2 : 8;
        Played *p = realloc(c->played, (size_t)cap * sizeof(Played));
        if (!p) return;
        c->played = p; c->capplayed = cap;
    }
    c->played[c->nplayed].sid = sid;
    c->played[c->nplayed].bytes = bytes;
    c->nplayed++;
    *first = 1;
}

/* keep a copy of a frame written to the caller (one memcpy of a frame: ~160-960 bytes) */
static void sent_keep(Conn *c, const unsigned char *pcm, uint32_t plen, double now) {
    if (!c->sent) return;
    uint32_t i = (uint32_t)(c->sent_w % SENT_N);
    if (plen > c->frame_bytes) plen = c->frame_bytes;
    if (pcm) memcpy(c->sent + (size_t)i * c->frame_bytes, pcm, plen);
    else memset(c->sent + (size_t)i * c->frame_bytes, 0, plen);
    c->sent_len[i] = plen;
    c->sent_t[i] = now;
    c->sent_w++;
}

static void send_silence(Conn *c, double now) {
    c->current_say = 0;
    c->last_sent = now;
    c->frames_sent++;
    sent_keep(c, NULL, c->frame_bytes, now);
    c_write(c, c->silence, c->frame_bytes + 3);
}

/* scale one audio frame's s16le payload from gain_prev to gain (Q15), a linear ramp across the
 * frame so a change never clicks; only called while ducked or coming back (rare frames) */
static void apply_gain(Conn *c, unsigned char *pcm, uint32_t plen) {
    int n = (int)(plen / 2);
    int32_t g0 = c->gain_prev, g1 = c->gain;
    for (int i = 0; i < n; i++) {
        int32_t g = g0 + (int32_t)(((int64_t)(g1 - g0) * (i + 1)) / n);
        int32_t s = (int16_t)(pcm[2 * i] | (pcm[2 * i + 1] << 8));
        int32_t o = (int32_t)(((int64_t)s * g) >> 15);
        if (o > 32767) o = 32767; else if (o < -32768) o = -32768;
        pcm[2 * i] = (unsigned char)(o & 0xff);
        pcm[2 * i + 1] = (unsigned char)((uint16_t)o >> 8);
    }
    c->gain_prev = g1;
}

/* OutStream._send */
static void c_send(Conn *c, double now) {
    QFrame *f;
    while (c->head && c->head->is_end) {
        f = q_pop(c);
        ev_push(c->eng, c->id, EV_DONE, f->sid, 0, NULL, 0);
        free(f);
    }
    if (c->head) {
        f = q_pop(c);
        if (f->sid > 0) {
            int first = 0;
            played_add(c, f->sid, f->len - 3, &first);
            if (first) ev_push(c->eng, c->id, EV_FIRST, f->sid, now, NULL, 0);
        }
        if (f->sid > 0 && (c->gain != 32768 || c->gain_prev != 32768))
            apply_gain(c, f->data + 3, f->len - 3);
        c->current_say = f->sid;
        c->last_sent = now;
        c->frames_sent++;
        sent_keep(c, f->data + 3, f->len - 3, now);
        c_write(c, f->data, f->len);
        free(f);
        while (c->head && c->head->is_end) {
            f = q_pop(c);
            ev_push(c->eng, c->id, EV_DONE, f->sid, 0, NULL, 0);
            free(f);
        }
        if (!c->head && !c->has_partial) ev_push(c->eng, c->id, EV_IDLE, 0, 0, NULL, 0);
        return;
    }
    if (c->has_partial) c->underruns++;
    send_silence(c, now);
}

/* OutStream.tick */
static void c_tick(Conn *c, double now, double frame_s) {
    if (c->closed || c->wfailed) return;
    if (!c_finish_pending(c)) { c->blocked++; return; } /* the peer is not reading: wait */
    if (now - c->kicked_at < frame_s / 2) return;
    if (c->paused) {
        if (c->head && c->head->sid == 0 && !c->head->is_end) {
            c_send(c, now); /* the fade-out frame of pause() */
            c->paused = 1;
        } else if (c->keepalive_s == 0 || now - c->last_sent >= c->keepalive_s) {
            send_silence(c, now);
        } else {
            c->current_say = 0;
        }
        return;
    }
    if (!c->head && c->keepalive_s > 0 && now - c->last_sent < c->keepalive_s) {
        if (c->has_partial) c->underruns++;
        c->current_say = 0;
        return;
    }
    c_send(c, now);
}

/* ------------------------------------------------------------------------------------------ */
/* one call: inbound                                                                           */

static int kind_known(int k) {
    return k == 0x00 || k == 0x01 || k == 0x03 || (k >= 0x10 && k <= 0x18) || k == 0xff;
}

static void in_stop(Conn *c) {
    if (c->reading && c->fd >= 0) epoll_ctl(c->eng->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->reading = 0;
    c->in_done = 1;
}

/* parse whole frames from ibuf (same strict rules and reasons as audiosocket.FrameParser) */
static void c_parse(Conn *c) {
    uint32_t pos = 0, n = c->ilen;
    unsigned char *b = c->ibuf;
    char reason[128];
    while (n - pos >= 3) {
        int kind = b[pos];
        uint32_t len = ((uint32_t)b[pos + 1] << 8) | b[pos + 2];
        reason[0] = 0;
        if (!kind_known(kind))
            snprintf(reason, sizeof reason, "unknown AudioSocket frame kind 0x%02x", kind);
        else if (len > MAX_PAYLOAD)
            snprintf(reason, sizeof reason,
                     "AudioSocket frame of %u bytes is over the %d byte limit", len, MAX_PAYLOAD);
        else if (kind == 0x01 && len != 16)
            snprintf(reason, sizeof reason, "UUID frame of %u bytes (expected 16)", len);
        else if (kind == 0x03 && len != 1)
            snprintf(reason, sizeof reason, "DTMF frame of %u bytes (expected 1)", len);
        if (reason[0]) {
            ev_push(c->eng, c->id, EV_PROTO, 0, 0, reason, (uint32_t)strlen(reason));
            in_stop(c);
            c->ilen = 0;
            return;
        }
        if (pos + 3 + len > n) break;
        ev_push(c->eng, c->id, EV_FRAME, kind, 0, b + pos + 3, len);
        pos += 3 + len;
    }
    if (pos) {
        memmove(b, b + pos, n - pos);
        c->ilen = n - pos;
    }
}

static void c_read(Conn *c) {
    if (c->closed || !c->reading || c->fd < 0) return;
    ssize_t r = recv(c->fd, c->ibuf + c->ilen, IBUF - c->ilen, MSG_DONTWAIT);
    if (r > 0) {
        c->ilen += (uint32_t)r;
        c_parse(c);
        return;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    /* EOF or reset: the caller hung up; `a` = errno (0 for a clean close), t = pending bytes */
    ev_push(c->eng, c->id, EV_EOF, r < 0 ? errno : 0, (double)c->ilen, NULL, 0);
    in_stop(c);
}

static void conn_free(Conn *c) {
    q_clear(c);
    if (c->fd >= 0) close(c->fd);
    free(c->silence);
    free(c->sent);
    free(c->pend);
    free(c->played);
    free(c->ibuf);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* the media thread                                                                            */

static void arm_timer(Engine *e) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    double t = e->next;
    its.it_value.tv_sec = (time_t)t;
    its.it_value.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void do_tick(Engine *e) {
    uint64_t exp;
    ssize_t r = read(e->tfd, &exp, 8);
    (void)r;
    double now = mono();
    double frame = e->frame_s;
    double late = now - e->next;
    int due = 1;
    pthread_mutex_lock(&e->emu);
    if (late > e->max_late) e->max_late = late;
    if (late >= frame) {
        e->late_ticks++;
        int64_t missed = (int64_t)(late / frame);
        if (missed > MAX_CATCH_UP) {
            e->reanchors++;
            e->t0 = now - (double)e->n * frame;
        } else {
            due += (int)missed;
            e->n += missed;
        }
    }
    pthread_mutex_unlock(&e->emu);
    e->n++;
    e->next = e->t0 + (double)e->n * frame;
    /* snapshot the calls (closed ones are only freed by this thread, so pointers stay valid) */
    pthread_mutex_lock(&e->lmu);
    int nc = e->nconns;
    Conn **snap = nc ? malloc((size_t)nc * sizeof(Conn *)) : NULL;
    if (snap) memcpy(snap, e->conns, (size_t)nc * sizeof(Conn *));
    else nc = 0;
    pthread_mutex_unlock(&e->lmu);
    for (int d = 0; d < due; d++) {
        double start = mono();
        for (int i = 0; i < nc; i++) {
            Conn *c = snap[i];
            pthread_mutex_lock(&c->mu);
            c_tick(c, now, frame);
            pthread_mutex_unlock(&c->mu);
        }
        double end = mono();
        pthread_mutex_lock(&e->emu);
        e->ticks++;
        TickRec *t = &e->ring[e->ring_w % RING];
        t->start = start; t->end = end; t->late = late;
        e->ring_w++;
        if (e->ring_w - e->ring_r > RING) e->ring_r = e->ring_w - RING;
        pthread_mutex_unlock(&e->emu);
    }
    free(snap);
    arm_timer(e);
}

static void free_dead(Engine *e) {
    pthread_mutex_lock(&e->lmu);
    int nd = e->ndead;
    Conn **dead = e->dead;
    e->dead = NULL; e->ndead = 0; e->capdead = 0;
    pthread_mutex_unlock(&e->lmu);
    for (int i = 0; i < nd; i++) conn_free(dead[i]);
    free(dead);
}

static void *media_thread(void *arg) {
    Engine *e = (Engine *)arg;
    struct epoll_event evs[512];
    double wait = -1;
    while (!e->stop_flag) {
        free_dead(e);
        int timeout = -1;
        if (wait >= 0) timeout = wait <= 0.0 ? 0 : (int)(wait * 1000.0) + 1;
        int n = epoll_wait(e->epfd, evs, 512, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        /* the clock first: a tick never waits behind a burst of reads */
        for (int i = 0; i < n; i++)
            if (evs[i].data.u64 == TAG_TIMER) do_tick(e);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_TIMER) continue;
            if (tag == TAG_WAKE) {
                uint64_t v;
                ssize_t r = read(e->wakefd, &v, 8);
                (void)r;
                continue;
            }
            Conn *c = (Conn *)evs[i].data.ptr;
            pthread_mutex_lock(&c->mu);
            c_read(c);
            pthread_mutex_unlock(&c->mu);
        }
        double now = mono();
        wait = maybe_signal(e, now);
        if (n > 0 && n < 512 && e->poll_s > 0 && !e->stop_flag) {
            /* coalesce: frames trickle in from every call all the time, and waking up for each
             * one (a context switch per frame, 50,000 a second at 1000 calls) cost more than
             * the reads. Sleep a little (never past the next tick), then take all the sockets
             * that became readable meanwhile in one epoll_wait. Adds <= poll_s to inbound. */
            double until = now + e->poll_s;
            if (until > e->next) until = e->next;
            if (until > now) {
                struct timespec ts;
                ts.tv_sec = (time_t)until;
                ts.tv_nsec = (long)((until - (double)(time_t)until) * 1e9);
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
            if (wait >= 0) wait = 0; /* re-check the batch deadline right after the poll */
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Python: Conn                                                                                */

typedef struct {
    PyObject_HEAD
    Conn *c;        /* NULL once closed */
    PyObject *eng;  /* the Engine (kept alive while this handle lives) */
    uint64_t id;
} ConnObject;

static PyTypeObject ConnType;

static void engine_release(Engine *e, Conn *c) {
    /* the handle is closing: remove from the call list; free now or by the media thread */
    pthread_mutex_lock(&e->lmu);
    for (int i = 0; i < e->nconns; i++) {
        if (e->conns[i] == c) { e->conns[i] = e->conns[--e->nconns]; break; }
    }
    int later = e->running;
    if (later) {
        if (e->ndead == e->capdead) {
            int cap = e->capdead ? e->capdead * 2 : 16;
            Conn **d = realloc(e->dead, (size_t)cap * sizeof(Conn *));
            if (d) { e->dead = d; e->capdead = cap; } else later = 0;
        }
        if (later) e->dead[e->ndead++] = c;
    }
    pthread_mutex_unlock(&e->lmu);
    if (!later) conn_free(c);
}

static void conn_close_now(ConnObject *self, int hangup) {
    Conn *c = self->c;
    if (!c) return;
    self->c = NULL;
    Engine *e = (Engine *)self->eng;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    q_clear(c);
    if (c->reading && c->fd >= 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->reading = 0;
    if (hangup && c->fd >= 0 && !c->wfailed && c_finish_pending(c) && !c->pend_len) {
        static const unsigned char bye[3] = {0, 0, 0};
        ssize_t r = send(c->fd, bye, 3, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r;
    }
    if (c->fd >= 0) { close(c->fd); c->fd = -1; }
    pthread_mutex_unlock(&c->mu);
    engine_release(e, c);
    Py_END_ALLOW_THREADS
}

static void Conn_dealloc(ConnObject *self) {
    conn_close_now(self, 0);
    Py_XDECREF(self->eng);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define CONN_OR_RETURN(ret)                                                               \
    Conn *c = self->c;                                                                    \
    if (!c) { PyErr_SetString(PyExc_ValueError, "the media stream is closed"); return ret; }

static int events_pending(Engine *e) {
    pthread_mutex_lock(&e->emu);
    int n = e->nev > 0;
    pthread_mutex_unlock(&e->emu);
    return n;
}

/* push(sid, payload, has_partial, kick) -> True if events are waiting for Python */
static PyObject *Conn_push(ConnObject *self, PyObject *args) {
    long long sid;
    Py_buffer buf;
    int has_partial, kick;
    if (!PyArg_ParseTuple(args, "Ly*pp", &sid, &buf, &has_partial, &kick)) return NULL;
    Conn *c = self->c;
    if (!c) { PyBuffer_Release(&buf); Py_RETURN_FALSE; }
    Engine *e = (Engine *)self->eng;
    pthread_mutex_lock(&c->mu);
    uint32_t fb = c->frame_bytes;
    const unsigned char *p = buf.buf;
    Py_ssize_t whole = buf.len - buf.len % fb;
    for (Py_ssize_t i = 0; i < whole; i += fb) {
        QFrame *f = q_new(c, sid, p + i, fb, 0);
        if (f) q_append(c, f);
    }
    c->has_partial = has_partial;
    if (kick && whole && c->keepalive_s > 0 && !c->paused && !c->pend_len && !c->closed) {
        double now = mono();
        double gap = now - c->last_sent;
        /* an idle line: the first frame goes out now instead of at the next tick (up to 20 ms
         * sooner). After a keepalive silence frame (current_say == 0) it goes at once too:
         * silence followed back to back by speech is harmless, waiting only adds delay */
        if (gap >= e->frame_s || c->current_say == 0) {
            c->kicked_at = now;
            c_send(c, now);
        }
    }
    pthread_mutex_unlock(&c->mu);
    PyBuffer_Release(&buf);
    return PyBool_FromLong(events_pending(e));
}

static PyObject *Conn_end(ConnObject *self, PyObject *args) {
    long long sid;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "Ly*", &sid, &buf)) return NULL;
    Conn *c = self->c;
    if (!c) { PyBuffer_Release(&buf); Py_RETURN_NONE; }
    pthread_mutex_lock(&c->mu);
    if (buf.len) {
        QFrame *f = q_new(c, sid, NULL, c->frame_bytes, 0);
        if (f) {
            uint32_t n = (uint32_t)buf.len < c->frame_bytes ? (uint32_t)buf.len : c->frame_bytes;
            memcpy(f->data + 3, buf.buf, n);
            q_append(c, f);
        }
    }
    QFrame *m = q_new(c, sid, NULL, 0, 1);
    if (m) q_append(c, m);
    c->has_partial = 0;
    pthread_mutex_unlock(&c->mu);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static PyObject *Conn_set_partial(ConnObject *self, PyObject *arg) {
    CONN_OR_RETURN(NULL)
    int v = PyObject_IsTrue(arg);
    pthread_mutex_lock(&c->mu);
    c->has_partial = v;
    pthread_mutex_unlock(&c->mu);
    Py_RETURN_NONE;
}

static PyObject *sids_of(Conn *c, int audio_only) {
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    for (QFrame *f = c->head; f; f = f->next) {
        if (audio_only && f->is_end) continue;
        PyObject *v = PyLong_FromLongLong(f->sid);
        if (!v || PyList_Append(l, v) < 0) { Py_XDECREF(v); Py_DECREF(l); return NULL; }
        Py_DECREF(v);
    }
    return l;
}

/* flush() -> list of the say_ids that were queued (cut short); see OutStream.flush */
static PyObject *Conn_flush(ConnObject *self, PyObject *Py_UNUSED(a)) {
    Conn *c = self->c;
    if (!c) return PyList_New(0);
    pthread_mutex_lock(&c->mu);
    int was_paused = c->paused;
    c->paused = 0;
    c->gain = c->gain_prev = 32768; /* the next utterance starts as made */
    PyObject *cut = sids_of(c, 0);
    QFrame *nxt = c->head;
    while (nxt && nxt->is_end) nxt = nxt->next;
    QFrame *fade = NULL;
    if (nxt && c->current_say && !was_paused)
        fade = fade_frame(c, nxt->data + 3, nxt->len - 3, rate_of(c->kind));
    q_clear(c);
    c->has_partial = 0;
    if (fade) q_append(c, fade);
    pthread_mutex_unlock(&c->mu);
    return cut;
}

static PyObject *Conn_pause(ConnObject *self, PyObject *Py_UNUSED(a)) {
    CONN_OR_RETURN(NULL)
    pthread_mutex_lock(&c->mu);
    if (!c->paused) {
        c->paused = 1;
        QFrame *nxt = c->head;
        while (nxt && nxt->is_end) nxt = nxt->next;
        if (nxt && c->current_say) {
            QFrame *fade = fade_frame(c, nxt->data + 3, nxt->len - 3, rate_of(c->kind));
            if (fade) q_prepend(c, fade);
        }
    }
    pthread_mutex_unlock(&c->mu);
    Py_RETURN_NONE;
}

static PyObject *Conn_resume(ConnObject *self, PyObject *Py_UNUSED(a)) {
    CONN_OR_RETURN(NULL)
    pthread_mutex_lock(&c->mu);
    c->paused = 0;
    pthread_mutex_unlock(&c->mu);
    Py_RETURN_NONE;
}

/* set_gain(g): scale our audio frames from the next one sent (1.0 = as made; 0..1) */
static PyObject *Conn_set_gain(ConnObject *self, PyObject *arg) {
    double g = PyFloat_AsDouble(arg);
    if (g == -1.0 && PyErr_Occurred()) return NULL;
    CONN_OR_RETURN(NULL)
    if (g < 0.0) g = 0.0;
    if (g > 1.0) g = 1.0;
    pthread_mutex_lock(&c->mu);
    c->gain = (int32_t)(g * 32768.0 + 0.5);
    pthread_mutex_unlock(&c->mu);
    Py_RETURN_NONE;
}

static PyObject *Conn_close(ConnObject *self, PyObject *args) {
    int hangup = 0;
    if (!PyArg_ParseTuple(args, "|p", &hangup)) return NULL;
    conn_close_now(self, hangup);
    Py_RETURN_NONE;
}

/* start_reading(leftover): the media thread reads this socket from now on */
static PyObject *Conn_start_reading(ConnObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    Conn *c = self->c;
    if (!c) { PyBuffer_Release(&buf); Py_RETURN_FALSE; }
    Engine *e = (Engine *)self->eng;
    int ok = 1;
    pthread_mutex_lock(&c->mu);
    if (!c->reading && !c->in_done && c->fd >= 0) {
        if (!c->ibuf) c->ibuf = malloc(IBUF);
        if (!c->ibuf || buf.len > IBUF) ok = 0;
        else {
            memcpy(c->ibuf, buf.buf, buf.len);
            c->ilen = (uint32_t)buf.len;
            c_parse(c);
            if (!c->in_done) {
                struct epoll_event ev;
                memset(&ev, 0, sizeof ev);
                ev.events = EPOLLIN;
                ev.data.ptr = c;
                if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0) c->reading = 1;
                else ok = 0;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    PyBuffer_Release(&buf);
    return PyBool_FromLong(ok);
}

static int set_kind(Conn *c, int kind, uint32_t frame_bytes) {
    unsigned char *s = calloc(1, frame_bytes + 3);
    if (!s) return -1;
    s[0] = (unsigned char)kind;
    s[1] = (unsigned char)(frame_bytes >> 8);
    s[2] = (unsigned char)(frame_bytes & 0xff);
    unsigned char *kept = calloc(SENT_N, frame_bytes);
    if (!kept) { free(s); return -1; }
    free(c->silence);
    c->silence = s;
    free(c->sent);
    c->sent = kept;
    c->sent_w = 0;
    c->kind = kind;
    c->frame_bytes = frame_bytes;
    return 0;
}

/* switch_rate(kind, frame_bytes): the caller's rate changed; like opening a new stream */
static PyObject *Conn_switch_rate(ConnObject *self, PyObject *args) {
    int kind;
    unsigned int fb;
    if (!PyArg_ParseTuple(args, "iI", &kind, &fb)) return NULL;
    CONN_OR_RETURN(NULL)
    pthread_mutex_lock(&c->mu);
    q_clear(c);
    int r = set_kind(c, kind, fb);
    c->has_partial = 0;
    c->current_say = 0;
    c->paused = 0;
    c->gain = c->gain_prev = 32768;
    c->nplayed = 0;
    pthread_mutex_unlock(&c->mu);
    if (r < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *Conn_played(ConnObject *self, PyObject *Py_UNUSED(a)) {
    PyObject *d = PyDict_New();
    Conn *c = self->c;
    if (!d || !c) return d;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nplayed; i++) {
        PyObject *k = PyLong_FromLongLong(c->played[i].sid);
        PyObject *v = PyLong_FromLongLong(c->played[i].bytes);
        if (k && v) PyDict_SetItem(d, k, v);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    pthread_mutex_unlock(&c->mu);
    return d;
}

static PyObject *Conn_queued_sids(ConnObject *self, PyObject *Py_UNUSED(a)) {
    Conn *c = self->c;
    if (!c) return PyList_New(0);
    pthread_mutex_lock(&c->mu);
    PyObject *l = sids_of(c, 1);
    pthread_mutex_unlock(&c->mu);
    return l;
}

/* state() -> (current_say, queued audio frames, queued entries, paused, frames_sent,
 *             underruns, blocked ticks) in one call */
static PyObject *Conn_state(ConnObject *self, PyObject *Py_UNUSED(a)) {
    Conn *c = self->c;
    if (!c) return Py_BuildValue("(LlliKKK)", 0LL, 0L, 0L, 0, 0ULL, 0ULL, 0ULL);
    pthread_mutex_lock(&c->mu);
    long long cur = c->current_say;
    long qa = c->nq_audio, q = c->nq;
    int paused = c->paused;
    unsigned long long fs = c->frames_sent, ur = c->underruns, bl = c->blocked;
    pthread_mutex_unlock(&c->mu);
    return Py_BuildValue("(LlliKKK)", cur, qa, q, paused, fs, ur, bl);
}

/* current_say / queue_len are read for every inbound frame (the session's VAD step): a relaxed
 * atomic load instead of the call's mutex, so Python never waits behind a tick's write to this
 * socket. A value one frame old is fine there (the writes happen under the mutex). */
static PyObject *Conn_current_say(ConnObject *self, void *Py_UNUSED(x)) {
    Conn *c = self->c;
    if (!c) return PyLong_FromLong(0);
    return PyLong_FromLongLong(__atomic_load_n(&c->current_say, __ATOMIC_RELAXED));
}

static PyObject *Conn_nq(ConnObject *self, void *Py_UNUSED(x)) {
    Conn *c = self->c;
    if (!c) return PyLong_FromLong(0);
    return PyLong_FromLong(__atomic_load_n(&c->nq, __ATOMIC_RELAXED));
}

static PyObject *Conn_id(ConnObject *self, void *Py_UNUSED(x)) {
    return PyLong_FromUnsignedLongLong(self->id);
}

/* sent_tail() -> [(t, payload)]: the frames last written to the caller, oldest first, with
 * the monotonic time each was written (the echo check's reference; called only when one runs) */
static PyObject *Conn_sent_tail(ConnObject *self, PyObject *Py_UNUSED(a)) {
    Conn *c = self->c;
    if (!c) return PyList_New(0);
    uint32_t lens[SENT_N];
    double ts[SENT_N];
    unsigned char *buf = malloc((size_t)SENT_N * MAX_PAYLOAD);
    if (!buf) return PyErr_NoMemory();
    pthread_mutex_lock(&c->mu);
    uint64_t w = c->sent_w;
    int n = w < SENT_N ? (int)w : SENT_N;
    uint32_t fb = c->frame_bytes;
    for (int k = 0; k < n; k++) {
        uint32_t i = (uint32_t)((w - (uint64_t)n + (uint64_t)k) % SENT_N);
        memcpy(buf + (size_t)k * fb, c->sent + (size_t)i * fb, c->sent_len[i]);
        lens[k] = c->sent_len[i];
        ts[k] = c->sent_t[i];
    }
    pthread_mutex_unlock(&c->mu);
    PyObject *out = PyList_New(n);
    for (int k = 0; out && k < n; k++) {
        PyObject *item = Py_BuildValue("(dy#)", ts[k], (const char *)(buf + (size_t)k * fb),
                                       (Py_ssize_t)lens[k]);
        if (!item) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, k, item);
    }
    free(buf);
    return out;
}

static PyMethodDef Conn_methods[] = {
    {"sent_tail", (PyCFunction)Conn_sent_tail, METH_NOARGS, "[(t, payload)] last frames sent"},
    {"push", (PyCFunction)Conn_push, METH_VARARGS, "push(sid, pcm, has_partial, kick)"},
    {"end", (PyCFunction)Conn_end, METH_VARARGS, "end(sid, last_frame_payload)"},
    {"set_partial", (PyCFunction)Conn_set_partial, METH_O, NULL},
    {"flush", (PyCFunction)Conn_flush, METH_NOARGS, NULL},
    {"pause", (PyCFunction)Conn_pause, METH_NOARGS, NULL},
    {"resume", (PyCFunction)Conn_resume, METH_NOARGS, NULL},
    {"set_gain", (PyCFunction)Conn_set_gain, METH_O, "set_gain(g): 0..1, from the next frame"},
    {"close", (PyCFunction)Conn_close, METH_VARARGS, "close(hangup=False)"},
    {"start_reading", (PyCFunction)Conn_start_reading, METH_VARARGS, NULL},
    {"switch_rate", (PyCFunction)Conn_switch_rate, METH_VARARGS, NULL},
    {"played", (PyCFunction)Conn_played, METH_NOARGS, NULL},
    {"queued_sids", (PyCFunction)Conn_queued_sids, METH_NOARGS, NULL},
    {"state", (PyCFunction)Conn_state, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Conn_getset[] = {
    {"current_say", (getter)Conn_current_say, NULL, NULL, NULL},
    {"queue_len", (getter)Conn_nq, NULL, NULL, NULL},
    {"id", (getter)Conn_id, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowagent._medialoop.Conn",
    .tp_basicsize = sizeof(ConnObject),
    .tp_dealloc = (destructor)Conn_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One call's socket on the media loop (made by Engine.open).",
    .tp_methods = Conn_methods,
    .tp_getset = Conn_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Python: Engine                                                                              */

static void engine_stop(Engine *e) {
    if (!e->running) return;
    e->stop_flag = 1;
    uint64_t one = 1;
    ssize_t r = write(e->wakefd, &one, 8);
    (void)r;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(e->th, NULL);
    Py_END_ALLOW_THREADS
    e->running = 0;
    free_dead(e);
    pthread_mutex_lock(&e->lmu);
    for (int i = 0; i < e->nconns; i++) {
        Conn *c = e->conns[i];
        pthread_mutex_lock(&c->mu);
        c->reading = 0; /* its epoll goes away below */
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&e->lmu);
    close(e->epfd); close(e->wakefd); close(e->tfd); close(e->evfd);
    e->epfd = e->wakefd = e->tfd = e->evfd = -1;
    pthread_mutex_lock(&e->emu);
    e->nev = 0; e->elen = 0; e->signaled = 0;
    pthread_mutex_unlock(&e->emu);
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"frame_ms", "batch_ms", "rt_priority", "poll_ms", NULL};
    double frame_ms = 20, batch_ms = 2, poll_ms = 1;
    int rt_prio = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|ddid", kwlist, &frame_ms, &batch_ms, &rt_prio,
                                     &poll_ms))
        return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (!e) return NULL;
    pthread_mutex_init(&e->lmu, NULL);
    pthread_mutex_init(&e->emu, NULL);
    e->epfd = e->evfd = e->wakefd = e->tfd = -1;
    e->frame_s = frame_ms / 1000.0;
    e->batch_s = batch_ms / 1000.0;
    e->last_signal = -1e9;
    e->next_id = 1;
    e->rt_prio = rt_prio;
    e->poll_s = poll_ms / 1000.0;
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    engine_stop(e);
    /* handles keep the engine alive, so no call is left here */
    free(e->conns);
    free(e->dead);
    free(e->ev);
    free(e->edata);
    pthread_mutex_destroy(&e->lmu);
    pthread_mutex_destroy(&e->emu);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* start() -> the eventfd to watch (readable = call take_events()) */
static PyObject *Engine_start(Engine *e, PyObject *Py_UNUSED(a)) {
    if (e->running) return PyLong_FromLong(e->evfd);
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->epfd < 0 || e->evfd < 0 || e->wakefd < 0 || e->tfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (e->epfd >= 0) close(e->epfd);
        if (e->evfd >= 0) close(e->evfd);
        if (e->wakefd >= 0) close(e->wakefd);
        if (e->tfd >= 0) close(e->tfd);
        e->epfd = e->evfd = e->wakefd = e->tfd = -1;
        return NULL;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = TAG_TIMER;
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->tfd, &ev);
    ev.data.u64 = TAG_WAKE;
    epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev);
    /* calls already reading (a restart) are registered again */
    pthread_mutex_lock(&e->lmu);
    for (int i = 0; i < e->nconns; i++) {
        Conn *c = e->conns[i];
        pthread_mutex_lock(&c->mu);
        if (c->ibuf && !c->in_done && c->fd >= 0 && !c->closed) {
            struct epoll_event cev;
            memset(&cev, 0, sizeof cev);
            cev.events = EPOLLIN;
            cev.data.ptr = c;
            if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &cev) == 0) c->reading = 1;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&e->lmu);
    e->t0 = mono();
    e->n = 1;
    e->next = e->t0 + e->frame_s;
    arm_timer(e);
    e->stop_flag = 0;
    if (pthread_create(&e->th, NULL, media_thread, e) != 0) {
        PyErr_SetString(PyExc_OSError, "could not start the media thread");
        close(e->epfd); close(e->evfd); close(e->wakefd); close(e->tfd);
        e->epfd = e->evfd = e->wakefd = e->tfd = -1;
        return NULL;
    }
    /* named, so operators (top -H) and tests can tell the media thread from the others */
    pthread_setname_np(e->th, "flowagent-media");
    e->running = 1;
    if (e->rt_prio > 0) {
        /* pacing is a deadline job: a real-time class keeps a tick from being preempted halfway
         * through its writes by ordinary threads (Asterisk itself runs with -p for the same
         * reason). Needs CAP_SYS_NICE or RLIMIT_RTPRIO; refused = normal priority. The thread
         * uses ~0.5 core at 1000 calls, and the kernel's RT throttling bounds it anyway. */
        struct sched_param sp;
        memset(&sp, 0, sizeof sp);
        sp.sched_priority = e->rt_prio;
        int r = pthread_setschedparam(e->th, SCHED_RR, &sp);
        e->rt_state = r == 0 ? 1 : -r;
    }
    return PyLong_FromLong(e->evfd);
}

static PyObject *Engine_stop(Engine *e, PyObject *Py_UNUSED(a)) {
    engine_stop(e);
    Py_RETURN_NONE;
}

/* open(fd, kind, frame_bytes, keepalive_ms) -> Conn. Takes ownership of fd (a dup). */
static PyObject *Engine_open(Engine *e, PyObject *args) {
    int fd, kind;
    unsigned int fb;
    double keepalive_ms;
    if (!PyArg_ParseTuple(args, "iiId", &fd, &kind, &fb, &keepalive_ms)) return NULL;
    Conn *c = calloc(1, sizeof(Conn));
    if (!c) return PyErr_NoMemory();
    pthread_mutex_init(&c->mu, NULL);
    c->eng = e;
    c->fd = fd;
    c->keepalive_s = keepalive_ms / 1000.0;
    c->last_sent = -1e9;
    c->kicked_at = -1e9;
    c->gain = c->gain_prev = 32768;
    if (set_kind(c, kind, fb) < 0) { conn_free(c); return PyErr_NoMemory(); }
    ConnObject *h = PyObject_New(ConnObject, &ConnType);
    if (!h) { c->fd = -1; conn_free(c); return NULL; }
    pthread_mutex_lock(&e->lmu);
    c->id = e->next_id++;
    if (e->nconns == e->capconns) {
        int cap = e->capconns ? e->capconns * 2 : 64;
        Conn **n = realloc(e->conns, (size_t)cap * sizeof(Conn *));
        if (!n) { pthread_mutex_unlock(&e->lmu); c->fd = -1; conn_free(c); h->c = NULL;
                  h->eng = NULL; Py_DECREF(h); return PyErr_NoMemory(); }
        e->conns = n; e->capconns = cap;
    }
    e->conns[e->nconns++] = c;
    pthread_mutex_unlock(&e->lmu);
    h->c = c;
    h->id = c->id;
    Py_INCREF(e);
    h->eng = (PyObject *)e;
    return (PyObject *)h;
}

/* take_events() -> [(call_id, type, a, b)]: FRAME (kind, payload), FIRST (say_id, t),
 * DONE (say_id, None), IDLE, WERR (errno), EOF (errno, pending bytes), PROTO (0, reason) */
static PyObject *Engine_take_events(Engine *e, PyObject *Py_UNUSED(a)) {
    pthread_mutex_lock(&e->emu);
    if (e->evfd >= 0) {
        uint64_t v;
        ssize_t r = read(e->evfd, &v, 8);
        (void)r;
    }
    Ev *ev = e->ev;
    size_t nev = e->nev;
    unsigned char *data = e->edata;
    e->ev = NULL; e->nev = 0; e->capev = 0;
    e->edata = NULL; e->elen = 0; e->ecap = 0;
    e->signaled = 0;
    pthread_mutex_unlock(&e->emu);
    PyObject *out = PyList_New((Py_ssize_t)nev);
    for (size_t i = 0; out && i < nev; i++) {
        Ev *v = &ev[i];
        PyObject *b;
        switch (v->type) {
        case EV_FRAME:
            b = PyBytes_FromStringAndSize((const char *)data + v->off, v->len);
            break;
        case EV_PROTO:
            b = PyUnicode_DecodeUTF8((const char *)data + v->off, v->len, "replace");
            break;
        case EV_FIRST:
            b = PyFloat_FromDouble(v->t);
            break;
        case EV_EOF:
            b = PyLong_FromLong((long)v->t);
            break;
        default:
            b = Py_None;
            Py_INCREF(b);
        }
        PyObject *t = b ? Py_BuildValue("(KiLN)", (unsigned long long)v->id, v->type,
                                        (long long)v->a, b) : NULL;
        if (!t) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, (Py_ssize_t)i, t);
    }
    free(ev);
    free(data);
    return out;
}

/* take_ticks() -> [(start, end, lateness)] of the ticks since the last call (at most 8192) */
static PyObject *Engine_take_ticks(Engine *e, PyObject *Py_UNUSED(a)) {
    pthread_mutex_lock(&e->emu);
    uint64_t r = e->ring_r, w = e->ring_w;
    size_t n = (size_t)(w - r);
    TickRec *copy = n ? malloc(n * sizeof(TickRec)) : NULL;
    if (copy)
        for (size_t i = 0; i < n; i++) copy[i] = e->ring[(r + i) % RING];
    else n = 0;
    e->ring_r = w;
    pthread_mutex_unlock(&e->emu);
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *t = Py_BuildValue("(ddd)", copy[i].start, copy[i].end, copy[i].late);
        if (!t) { Py_CLEAR(l); break; }
        PyList_SET_ITEM(l, (Py_ssize_t)i, t);
    }
    free(copy);
    return l;
}

static PyObject *Engine_stats(Engine *e, PyObject *Py_UNUSED(a)) {
    pthread_mutex_lock(&e->emu);
    unsigned long long ticks = e->ticks, late = e->late_ticks, re = e->reanchors;
    double ml = e->max_late;
    pthread_mutex_unlock(&e->emu);
    pthread_mutex_lock(&e->lmu);
    int nc = e->nconns;
    pthread_mutex_unlock(&e->lmu);
    return Py_BuildValue("{sKsKsKsdsisisi}", "ticks", ticks, "late_ticks", late, "reanchors", re,
                         "max_lateness_s", ml, "calls", nc, "running", e->running,
                         "realtime", e->rt_state);
}

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_NOARGS, "start the media thread; -> eventfd"},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS, "stop and join the media thread"},
    {"open", (PyCFunction)Engine_open, METH_VARARGS, "open(fd, kind, frame_bytes, keepalive)"},
    {"take_events", (PyCFunction)Engine_take_events, METH_NOARGS, NULL},
    {"take_ticks", (PyCFunction)Engine_take_ticks, METH_NOARGS, NULL},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowagent._medialoop.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native media loop: one thread, one 20 ms clock, every call's socket.",
    .tp_methods = Engine_methods,
    .tp_new = Engine_new,
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "flowagent._medialoop",
    "Native media loop for flowagent (see flowagent/runner/native_player.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__medialoop(void) {
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ConnType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    PyModule_AddObject(m, "Engine", (PyObject *)&EngineType);
    Py_INCREF(&ConnType);
    PyModule_AddObject(m, "Conn", (PyObject *)&ConnType);
    PyModule_AddIntConstant(m, "EV_FRAME", EV_FRAME);
    PyModule_AddIntConstant(m, "EV_FIRST", EV_FIRST);
    PyModule_AddIntConstant(m, "EV_DONE", EV_DONE);
    PyModule_AddIntConstant(m, "EV_IDLE", EV_IDLE);
    PyModule_AddIntConstant(m, "EV_WERR", EV_WERR);
    PyModule_AddIntConstant(m, "EV_EOF", EV_EOF);
    PyModule_AddIntConstant(m, "EV_PROTO", EV_PROTO);
    return m;
}
