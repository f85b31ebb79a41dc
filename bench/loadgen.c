/* A native load generator for bench/runtime_load.py (`--loadgen c`): N fake Asterisk channels.
 *
 * Why: the Python load generator needs ~0.6 core at 1000 calls and its probes measure their own
 * event-loop delays as much as the server's pacing (at >= 1000 calls a probe often reads two
 * frames in one go). This one does the same thing with the kernel's cost only, and timestamps
 * every probe frame the moment epoll reports it, so the arrival spacing it reports is the
 * spacing on the wire (plus this process's scheduling delay, which it also reports).
 *
 * Behaviour (same as the Python `_load`): connect `calls` sockets to 127.0.0.1:port over `ramp`
 * seconds, send a UUID frame, print "SENDING", then every 20 ms (absolute deadlines on
 * CLOCK_MONOTONIC) send one 320-byte slin frame per call: silence, or when `speak` a 300 ms
 * 300 Hz tone at the start of every `cycle` seconds (each call at a random phase). Every socket
 * is read all the time (the kernel work of receiving is real); `probes` sockets spread over the
 * connection order (so both the first and the last calls of a tick are measured) are
 * read by a thread of their own (so the send burst of the main thread never delays them), parse
 * AudioSocket frames and keep arrival times of audio frames. Prints one JSON object at the end.
 *
 * Optional realism (for a real VAD such as Silero, which a tone does not fool):
 *   SPEECH_RAW  a file of s16le 8 kHz speech played instead of the tone ("-": the tone)
 *   LINE_DBFS   the level of Gaussian line noise sent between (and under) the speech, in dBFS
 *               ("-": digital silence, as before)
 *
 * Build: cc -O2 -pthread -o bench/loadgen bench/loadgen.c -lm  (runtime_load.py does it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_S 0.02
#define MAX_ARRIVALS 20000

typedef struct {
    int fd;
    int probe;
    int closed;
    int offset;            /* phase in the speaking cycle, in frames */
    unsigned char buf[8192];
    int have;
    double *arrivals;      /* probes: monotonic arrival time of each audio frame */
    int n_arrivals;
} caller_t;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec +
           r.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double q) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof(double), cmp_double);
    int i = (int)(q / 100.0 * n);
    if (i >= n) i = n - 1;
    return v[i];
}

static void parse_probe(caller_t *c, double t) {
    int pos = 0;
    while (c->have - pos >= 3) {
        int kind = c->buf[pos];
        int len = (c->buf[pos + 1] << 8) | c->buf[pos + 2];
        if (c->have - pos - 3 < len) break;
        if (kind >= 0x10 && kind <= 0x18 && c->n_arrivals < MAX_ARRIVALS)
            c->arrivals[c->n_arrivals++] = t;
        pos += 3 + len;
    }
    memmove(c->buf, c->buf + pos, c->have - pos);
    c->have -= pos;
}

static caller_t *g_cs;
static int g_probe_ep;
static volatile int g_stop;

static int g_probe_rt;

static void *probe_thread(void *arg) {
    (void)arg;
    /* the probes are the measuring instrument: give them real-time priority when allowed, so
     * what they time is the spacing on the wire, not this process waiting for a CPU */
    struct sched_param sp = {.sched_priority = 5};
    g_probe_rt = pthread_setschedparam(pthread_self(), SCHED_RR, &sp) == 0;
    struct epoll_event evs[64];
    while (!g_stop) {
        int k = epoll_wait(g_probe_ep, evs, 64, 50);
        double t = now_s();
        for (int j = 0; j < k; j++) {
            caller_t *c = &g_cs[evs[j].data.u32];
            if (c->closed) continue;
            for (;;) {
                ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
                if (r > 0) { c->have += (int)r; parse_probe(c, t); continue; }
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    c->closed = 1;
                    epoll_ctl(g_probe_ep, EPOLL_CTL_DEL, c->fd, NULL);
                }
                break;
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: loadgen PORT CALLS DURATION CYCLE_S PROBES RAMP_S SPEAK "
                        "[SPEECH_RAW|- [LINE_DBFS|-]]\n");
        return 2;
    }
    int port = atoi(argv[1]), calls = atoi(argv[2]);
    double duration = atof(argv[3]), cycle_s = atof(argv[4]);
    int probes = atoi(argv[5]);
    double ramp = atof(argv[6]);
    int speak = atoi(argv[7]);
    int cycle = (int)(cycle_s / FRAME_S);
    if (cycle < 1) cycle = 1;
    srand((unsigned)time(NULL));

    /* speech: a 300 ms, 300 Hz tone at 0.4 of full scale, or the samples of SPEECH_RAW */
    int speech_frames = 15;
    short *speech_pcm = NULL;
    if (argc > 8 && strcmp(argv[8], "-") != 0) {
        FILE *f = fopen(argv[8], "rb");
        if (!f) { perror(argv[8]); return 2; }
        fseek(f, 0, SEEK_END);
        long bytes = ftell(f);
        fseek(f, 0, SEEK_SET);
        speech_frames = (int)(bytes / 320);
        if (speech_frames < 1) { fprintf(stderr, "%s: shorter than one frame\n", argv[8]); return 2; }
        speech_pcm = malloc((size_t)speech_frames * 320);
        if (fread(speech_pcm, 320, (size_t)speech_frames, f) != (size_t)speech_frames) {
            fprintf(stderr, "%s: short read\n", argv[8]);
            return 2;
        }
        fclose(f);
    }
    /* line noise under everything: NOISE_FRAMES different frames, each call at its own phase */
    enum { NOISE_FRAMES = 64 };
    double line_rms = 0;
    if (argc > 9 && strcmp(argv[9], "-") != 0) line_rms = 32767.0 * pow(10.0, atof(argv[9]) / 20.0);
    static unsigned char silence[NOISE_FRAMES][323];
    for (int f = 0; f < NOISE_FRAMES; f++) {
        silence[f][0] = 0x10; silence[f][1] = 0x01; silence[f][2] = 0x40;
        for (int i = 0; i < 160; i++) {
            /* Box-Muller Gaussian noise */
            double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
            double x = line_rms * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
            short s = (short)fmax(-32768, fmin(32767, x));
            silence[f][3 + 2 * i] = (unsigned char)(s & 0xff);
            silence[f][3 + 2 * i + 1] = (unsigned char)((s >> 8) & 0xff);
        }
    }
    unsigned char (*speech)[323] = malloc((size_t)speech_frames * 323);
    for (int f = 0; f < speech_frames; f++) {
        speech[f][0] = 0x10; speech[f][1] = 0x01; speech[f][2] = 0x40;
        for (int i = 0; i < 160; i++) {
            double x = speech_pcm ? speech_pcm[f * 160 + i]
                                  : 0.4 * 32767 * sin(2 * M_PI * 300 * (f * 160 + i) / 8000.0);
            /* the line's noise is under the speech too */
            short n = (short)(silence[f % NOISE_FRAMES][3 + 2 * i] |
                              (silence[f % NOISE_FRAMES][4 + 2 * i] << 8));
            short s = (short)fmax(-32768, fmin(32767, x + n));
            speech[f][3 + 2 * i] = (unsigned char)(s & 0xff);
            speech[f][3 + 2 * i + 1] = (unsigned char)((s >> 8) & 0xff);
        }
    }
    if (speech_frames >= cycle) {
        fprintf(stderr, "the speech (%d frames) must be shorter than the cycle (%d)\n",
                speech_frames, cycle);
        return 2;
    }

    caller_t *cs = calloc(calls, sizeof(caller_t));
    int ep = epoll_create1(0);
    g_cs = cs;
    g_probe_ep = epoll_create1(0);
    /* the probes are read from the moment they connect (frames must not pile up in their socket
     * buffers during the ramp: read late, they would all get one arrival time) */
    pthread_t prober;
    pthread_create(&prober, NULL, probe_thread, NULL);
    int failed = 0, connected = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    double gap = calls ? ramp / calls : 0;
    for (int i = 0; i < calls; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            failed++;
            if (fd >= 0) close(fd);
            cs[i].closed = 1;
            cs[i].fd = -1;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        unsigned char uuid[19] = {0x01, 0x00, 0x10};
        for (int k = 0; k < 16; k++) uuid[3 + k] = (unsigned char)rand();
        uuid[3 + 6] = (uuid[3 + 6] & 0x0f) | 0x40;
        uuid[3 + 8] = (uuid[3 + 8] & 0x3f) | 0x80;
        if (send(fd, uuid, sizeof uuid, MSG_NOSIGNAL) != sizeof uuid) failed++;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        /* probes spread over the call order (the first and the last calls written in a tick) */
        cs[i].probe = probes > 0 && (probes >= calls || i % (calls / probes) == 0 ||
                                     i == calls - 1);
        cs[i].offset = rand() % cycle;
        if (cs[i].probe) cs[i].arrivals = malloc(sizeof(double) * MAX_ARRIVALS);
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (unsigned)i};
        epoll_ctl(cs[i].probe ? g_probe_ep : ep, EPOLL_CTL_ADD, fd, &e);
        connected++;
        if (gap > 0) {
            struct timespec ts = {(time_t)gap, (long)((gap - (time_t)gap) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    printf("SENDING\n");
    fflush(stdout);

    double t0 = now_s(), c0 = cpu_s();
    long n = 0, late_sends = 0;
    double max_late = 0;
    static unsigned char sink[65536];
    struct epoll_event evs[1024];
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    while (now_s() - t0 < duration) {
        n++;
        double due = t0 + n * FRAME_S;
        /* read until the next deadline */
        for (;;) {
            double left = due - now_s();
            if (left <= 0) break;
            int k = epoll_wait(ep, evs, 1024, (int)ceil(left * 1000));
            for (int j = 0; j < k; j++) {
                caller_t *c = &cs[evs[j].data.u32];
                if (c->closed) continue;
                for (;;) {
                    ssize_t r = recv(c->fd, sink, sizeof sink, 0);
                    if (r > 0) continue;
                    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                        c->closed = 1;
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    }
                    break;
                }
            }
        }
        double late = now_s() - due;
        if (late > max_late) max_late = late;
        if (late > FRAME_S) late_sends++;
        for (int i = 0; i < calls; i++) {
            caller_t *c = &cs[i];
            if (c->closed) continue;
            long pos = (n + c->offset) % cycle;
            const unsigned char *f = (speak && pos < speech_frames)
                                         ? speech[pos] : silence[(pos + i) % NOISE_FRAMES];
            if (send(c->fd, f, 323, MSG_NOSIGNAL) < 0 && errno != EAGAIN) c->closed = 1;
        }
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    g_stop = 1;
    pthread_join(prober, NULL);

    /* probe jitter: gaps over 100 ms are idle periods (keepalive mode), not pacing */
    int cap = 0, nprobes = 0;
    for (int i = 0; i < calls; i++) if (cs[i].probe) { cap += cs[i].n_arrivals; nprobes++; }
    double *jit = malloc(sizeof(double) * (cap + 1));
    int nj = 0;
    for (int i = 0; i < calls; i++) {
        caller_t *c = &cs[i];
        if (!c->probe || c->n_arrivals <= 10) continue;
        for (int k = 1; k < c->n_arrivals; k++) {
            if (c->arrivals[k - 1] < t0 + 1.0) continue;  /* steady state: 1 s after SENDING */
            double g = c->arrivals[k] - c->arrivals[k - 1];
            if (g < 0.1) jit[nj++] = fabs(g - FRAME_S) * 1000;
        }
    }
    int alive = 0;
    for (int i = 0; i < calls; i++) if (!cs[i].closed) alive++;
    double p50 = pct(jit, nj, 50), p99 = pct(jit, nj, 99), p95 = pct(jit, nj, 95);
    int over5 = 0;
    for (int k = 0; k < nj; k++) over5 += jit[k] > 5.0;
    printf("{\"connected\": %d, \"failed\": %d, \"alive_at_end\": %d, "
           "\"probe_jitter_p50_ms\": %.3f, \"probe_jitter_p95_ms\": %.3f, \"probe_jitter_p99_ms\": %.3f, "
           "\"probes\": %d, \"probe_gaps\": %d, \"probe_gaps_over_5ms\": %d, \"probe_rt\": %d, "
           "\"load_late_sends\": %ld, \"load_max_late_ms\": %.2f, \"load_gen_cores\": %.3f, "
           "\"loadgen\": \"c\"}\n",
           connected, failed, alive, isnan(p50) ? -1.0 : p50, isnan(p95) ? -1.0 : p95,
           isnan(p99) ? -1.0 : p99, nprobes, nj, over5, g_probe_rt,
           late_sends, max_late * 1000, cpu / wall);
    for (int i = 0; i < calls; i++) if (cs[i].fd >= 0) close(cs[i].fd);
    return 0;
}
