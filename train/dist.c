// The distributed layer (see dist.h). Every MPI call lives in this file; the
// rest of the program sees ranks, reductions and a shard, and runs unchanged in
// a single process.
#include "train/dist.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef POSTER_MPI
#include <mpi.h>
#endif

// ---------------------------------------------------------------------------
// Configuration

static const config_key g_dist_keys[] = {
    {"dist.timeout_s", CK_FLOAT, "300", 1, 86400, NULL,
     "seconds a collective may wait for the other ranks before the job is ended"},
    {"dist.check_params", CK_BOOL, "off", 0, 0, NULL,
     "debug: compare a hash of all parameters across ranks every epoch, stop on a "
     "mismatch"},
    {"dist.bucket_mb", CK_INT, "8", 1, 1024, NULL, "gradient allreduce bucket size (MiB)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void dist_config_register(config *c) { config_register(c, g_dist_keys); }

void dist_opts_default(dist_opts *o) {
    o->timeout_s = 300;
    o->check_params = false;
    o->bucket_mb = 8;
}

void dist_opts_from_config(const config *c, dist_opts *o) {
    o->timeout_s = config_float(c, "dist.timeout_s");
    o->check_params = config_bool(c, "dist.check_params");
    o->bucket_mb = (int)config_int(c, "dist.bucket_mb");
}

// ---------------------------------------------------------------------------
// State

static struct {
    bool initialized;
    bool mpi_on;            // MPI_Init was called by us
    int rank, size;
    int local_rank, local_size;
    char host[256];
    dist_opts opts;
    bool opts_set;
    double comm_s;
    int64_t comm_bytes;
#ifdef POSTER_MPI
    MPI_Comm comm;          // a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN
#endif
} g = {.rank = 0, .size = 1, .local_rank = 0, .local_size = 1};

static void opts_ensure(void) {
    if (!g.opts_set) {
        dist_opts_default(&g.opts);
        g.opts_set = true;
    }
}

void dist_configure(const dist_opts *o) {
    g.opts = *o;
    g.opts_set = true;
}

const dist_opts *dist_options(void) {
    opts_ensure();
    return &g.opts;
}

double dist_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool dist_compiled_with_mpi(void) {
#ifdef POSTER_MPI
    return true;
#else
    return false;
#endif
}

bool dist_active(void) { return g.mpi_on && g.size > 1; }
int dist_rank(void) { return g.rank; }
int dist_size(void) { return g.size; }
bool dist_is_root(void) { return g.rank == 0; }
int dist_local_size(void) { return g.local_size; }
int dist_local_rank(void) { return g.local_rank; }
const char *dist_host(void) { return g.host[0] ? g.host : "localhost"; }
double dist_comm_seconds(void) { return g.comm_s; }
int64_t dist_comm_bytes(void) { return g.comm_bytes; }

// Rank r's share: [r*n/N, (r+1)*n/N).
void dist_shard(int64_t n, int rank, int size, int64_t *start, int64_t *count) {
    AG_ASSERT(size >= 1 && rank >= 0 && rank < size && n >= 0, "shard %d of %d, n %lld", rank,
              size, (long long)n);
    int64_t a = n * rank / size, b = n * (rank + 1) / size;
    *start = a;
    *count = b - a;
}

// ---------------------------------------------------------------------------
// Hashes (splitmix64 finalizer over 64-bit words; per-block results combined in
// order so the hash does not depend on the thread count).

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_words(const uint32_t *w, int64_t n, uint64_t h) {
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t v = (uint64_t)w[i] | ((uint64_t)w[i + 1] << 32);
        h = mix64(h ^ v) + 0x9e3779b97f4a7c15ULL;
    }
    if (i < n) h = mix64(h ^ (uint64_t)w[i] ^ 0xa5a5a5a500000000ULL);
    return mix64(h ^ (uint64_t)n);
}

uint64_t dist_hash_floats(const float *x, int64_t n) {
    enum { BLOCK = 1 << 16 };
    int64_t nb = (n + BLOCK - 1) / BLOCK;
    if (nb <= 1) return hash_words((const uint32_t *)x, n, 0x5eed);
    uint64_t *part = malloc((size_t)nb * sizeof *part);
    AG_ASSERT(part != NULL, "out of memory");
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t a = b * BLOCK, m = (a + BLOCK <= n) ? BLOCK : n - a;
        part[b] = hash_words((const uint32_t *)(x + a), m, (uint64_t)b);
    }
    uint64_t h = 0x5eed;
    for (int64_t b = 0; b < nb; b++) h = mix64(h ^ part[b]) + (uint64_t)b;
    free(part);
    return mix64(h ^ (uint64_t)n);
}

static __attribute__((unused)) uint64_t param_hash(const param_store *s, const param *p) {
    if (p->kind == PARAM_COUNTER)
        return mix64((uint64_t)*p->counter ^ 0xc0ffee);
    return dist_hash_floats(s->data + p->offset, p->numel);
}

uint64_t dist_store_hash(const param_store *s) {
    AG_ASSERT(s->finalized, "param_store not finalized");
    uint64_t h = dist_hash_floats(s->data, s->n_float);
    for (int i = 0; i < s->n_counters; i++) h = mix64(h ^ (uint64_t)s->counters[i]) + 1;
    return h;
}

// ---------------------------------------------------------------------------
// Random streams consumed sample by sample (drop path draws one number per
// sample per call): rank r positions its copy where one process would be when it
// reaches r's first sample.

void dist_rng_skip(rng *r, int64_t k) {
    for (int64_t i = 0; i < k; i++) (void)rng_u64(r);
}

int64_t dist_rng_distance(const rng *from, const rng *to, int64_t max) {
    rng t = *from;
    for (int64_t k = 0; k <= max; k++) {
        if (!memcmp(t.s, to->s, sizeof t.s)) return k;
        (void)rng_u64(&t);
    }
    return -1;
}

// ---------------------------------------------------------------------------
// Single-process build or run: every collective is the identity (scaled where
// the contract says so), and nothing waits.

#ifndef POSTER_MPI

int dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    (void)argc, (void)argv, (void)err, (void)errlen;
    opts_ensure();
    if (!g.initialized) {
        g.initialized = true;
        if (gethostname(g.host, sizeof g.host) != 0) g.host[0] = 0;
        g.host[sizeof g.host - 1] = 0;
        // Started by mpirun but built without MPI: N independent copies would
        // each train alone and overwrite each other's checkpoints. Refuse.
        const char *n = getenv("OMPI_COMM_WORLD_SIZE");
        if (!n) n = getenv("PMI_SIZE");
        if (n && atoi(n) > 1) {
            snprintf(err, errlen,
                     "started by an MPI launcher with %s ranks, but this program was built "
                     "without MPI: rebuild with `make MPI=1` (needs mpicc, e.g. Debian's "
                     "libopenmpi-dev), or run a single process",
                     n);
            return -1;
        }
    }
    return 0;
}

void dist_finalize(int rc) { (void)rc; }

void dist_abort(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "poster: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(DIST_EXIT_FAILURE);
}

void dist_barrier(void) {}
void dist_allreduce_mean(float *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_grads(float *buf, int64_t n, float scale) {
    if (scale != 1.0f)
        for (int64_t i = 0; i < n; i++) buf[i] *= scale;
}
void dist_allreduce_sum_f32(float *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_sum_f64(double *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_sum_i64(int64_t *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_max_f64(double *buf, int64_t n) { (void)buf, (void)n; }
void dist_allreduce_min_f64(double *buf, int64_t n) { (void)buf, (void)n; }
void dist_bcast(void *buf, size_t bytes) { (void)buf, (void)bytes; }
void dist_bcast_store(param_store *s) { AG_ASSERT(s->finalized, "store not finalized"); }
void dist_sync_buffers(param_store *s) { AG_ASSERT(s->finalized, "store not finalized"); }

int dist_param_hash_check(const param_store *s, const char *when, char *err, size_t errlen) {
    (void)s, (void)when, (void)err, (void)errlen;
    return 0;
}

#else  // POSTER_MPI

// ---------------------------------------------------------------------------
// Watchdog: a collective arms it with its name and a deadline; a thread ends the
// job when a deadline passes. MPI may be blocked in the main thread (and the
// library runs at MPI_THREAD_FUNNELED), so the watchdog does not call MPI: it
// prints and _exits, and the launcher then stops the other ranks.

static struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stop;
    const char *op;       // NULL when no collective is in flight
    double start, deadline;
} wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *wd_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&wd.mu);
    while (!wd.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&wd.cv, &wd.mu, &ts);
        if (wd.stop || !wd.op) continue;
        double now = dist_now();
        if (now > wd.deadline) {
            fprintf(stderr,
                    "poster: rank %d of %d (%s): %s did not complete within %.0f s: another "
                    "rank died or hangs, or the connection between machines is lost; "
                    "ending the whole job (the last checkpoint written is intact)\n",
                    g.rank, g.size, dist_host(), wd.op, now - wd.start);
            fflush(stderr);
            _exit(DIST_EXIT_FAILURE);
        }
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}

static void wd_arm(const char *op, double timeout_s) {
    if (!wd.running) return;
    pthread_mutex_lock(&wd.mu);
    wd.op = op;
    wd.start = dist_now();
    wd.deadline = wd.start + timeout_s;
    pthread_mutex_unlock(&wd.mu);
}

static void wd_disarm(void) {
    if (!wd.running) return;
    pthread_mutex_lock(&wd.mu);
    wd.op = NULL;
    pthread_mutex_unlock(&wd.mu);
}

static void wd_start(void) {
    if (wd.running) return;
    wd.stop = false;
    if (pthread_create(&wd.thread, NULL, wd_main, NULL) == 0) wd.running = true;
    else fprintf(stderr, "poster: rank %d: cannot start the watchdog thread\n", g.rank);
}

static void wd_stop(void) {
    if (!wd.running) return;
    pthread_mutex_lock(&wd.mu);
    wd.stop = true;
    pthread_cond_signal(&wd.cv);
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd.thread, NULL);
    wd.running = false;
}

// mpirun ends the surviving ranks with SIGTERM when one fails; say so, since
// otherwise rank 0 (whose output the user watches) dies silently.
static void on_sigterm(int sig) {
    char msg[200];
    int n = snprintf(msg, sizeof msg,
                     "poster: rank %d of %d: stopped by signal %d (the MPI launcher ends "
                     "every rank when one fails; see its message)\n",
                     g.rank, g.size, sig);
    if (n > 0) {
        ssize_t w = write(2, msg, (size_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1));
        (void)w;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

// ---------------------------------------------------------------------------

static bool launched_by_mpi(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                 "PMI_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return true;
    return false;
}

static void mpi_fail(int rc, const char *op) __attribute__((noreturn));
static void mpi_fail(int rc, const char *op) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    dist_abort("%s failed: %s (another rank died or a connection was lost)", op, s);
}

#define MPI_CHECK(call, op)                         \
    do {                                            \
        int rc_ = (call);                           \
        if (rc_ != MPI_SUCCESS) mpi_fail(rc_, op);  \
    } while (0)

int dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    opts_ensure();
    if (g.initialized) return 0;
    g.initialized = true;
    if (gethostname(g.host, sizeof g.host) != 0) g.host[0] = 0;
    g.host[sizeof g.host - 1] = 0;
    if (!launched_by_mpi()) return 0;   // single process: never touch MPI
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Init_thread failed");
            return -1;
        }
    }
    g.mpi_on = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_dup(MPI_COMM_WORLD, &g.comm) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Comm_dup failed");
        return -1;
    }
    MPI_Comm_set_errhandler(g.comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g.comm, &g.rank);
    MPI_Comm_size(g.comm, &g.size);
    MPI_Comm local;
    if (MPI_Comm_split_type(g.comm, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(local, &g.local_rank);
        MPI_Comm_size(local, &g.local_size);
        MPI_Comm_free(&local);
    }
    if (g.size > 1) {
        wd_start();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigterm;
        sigaction(SIGTERM, &sa, NULL);
    }
    return 0;
}

void dist_finalize(int rc) {
    if (!g.mpi_on) return;
    if (rc != 0 && g.size > 1) {
        fprintf(stderr, "poster: rank %d of %d (%s): stopping with exit code %d; ending the "
                "whole job\n", g.rank, g.size, dist_host(), rc);
        fflush(stderr);
        wd_arm("MPI_Abort", 30);
        MPI_Abort(MPI_COMM_WORLD, rc);
        _exit(rc);
    }
    // Finalize synchronizes with the other ranks: keep the watchdog on it.
    wd_arm("MPI_Finalize", dist_options()->timeout_s);
    MPI_Comm_free(&g.comm);
    MPI_Finalize();
    wd_disarm();
    wd_stop();
    g.mpi_on = false;
}

void dist_abort(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g.mpi_on && g.size > 1)
        fprintf(stderr, "poster: rank %d of %d (%s): %s; ending the whole job\n", g.rank,
                g.size, dist_host(), msg);
    else
        fprintf(stderr, "poster: %s\n", msg);
    fflush(stderr);
    if (g.mpi_on) {
        // MPI_Abort itself needs the network; if it cannot finish, _exit anyway.
        wd_arm("MPI_Abort", 30);
        MPI_Abort(MPI_COMM_WORLD, DIST_EXIT_FAILURE);
        _exit(DIST_EXIT_FAILURE);
    }
    exit(DIST_EXIT_FAILURE);
}

// Allreduce in buckets (int counts; bounded messages keep MPI's internal
// buffers small and let the transport pipeline).
static void allreduce_buckets(void *buf, int64_t n, MPI_Datatype type, size_t elem, MPI_Op op,
                              const char *name) {
    opts_ensure();
    int64_t bucket = ((int64_t)g.opts.bucket_mb << 20) / (int64_t)elem;
    if (bucket < 1) bucket = 1;
    if (bucket > (1 << 30)) bucket = 1 << 30;
    double t0 = dist_now();
    for (int64_t i = 0; i < n; i += bucket) {
        int cnt = (int)(n - i < bucket ? n - i : bucket);
        wd_arm(name, g.opts.timeout_s);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)i * elem, cnt, type, op,
                                g.comm),
                  name);
        wd_disarm();
    }
    g.comm_s += dist_now() - t0;
    g.comm_bytes += n * (int64_t)elem;
}

void dist_barrier(void) {
    if (!dist_active()) return;
    wd_arm("MPI_Barrier", dist_options()->timeout_s);
    MPI_CHECK(MPI_Barrier(g.comm), "MPI_Barrier");
    wd_disarm();
}

void dist_allreduce_sum_f32(float *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, "MPI_Allreduce (float sum)");
}

void dist_allreduce_mean(float *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, "MPI_Allreduce (mean)");
    float inv = 1.0f / (float)g.size;
#pragma omp parallel for schedule(static) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) buf[i] *= inv;
}

// Test hook: POSTER_DIST_TEST_KILL=R:K makes rank R kill itself (SIGKILL) on
// entering its K-th gradient allreduce, to test that a rank dying mid-epoch ends
// the job and leaves the last checkpoint intact.
static void test_kill_hook(void) {
    static int armed = -1, calls;
    static int kill_rank, kill_at;
    if (armed < 0) {
        const char *e = getenv("POSTER_DIST_TEST_KILL");
        armed = e && sscanf(e, "%d:%d", &kill_rank, &kill_at) == 2;
    }
    if (armed && g.rank == kill_rank && ++calls == kill_at) {
        fprintf(stderr, "poster: rank %d: POSTER_DIST_TEST_KILL: killing myself at gradient "
                "allreduce %d\n", g.rank, calls);
        fflush(stderr);
        raise(SIGKILL);
    }
}

void dist_allreduce_grads(float *buf, int64_t n, float scale) {
    test_kill_hook();
    if (scale != 1.0f) {
#pragma omp parallel for schedule(static) if (n > 1 << 16)
        for (int64_t i = 0; i < n; i++) buf[i] *= scale;
    }
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM,
                      "MPI_Allreduce (gradients)");
}

void dist_allreduce_sum_f64(double *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM, "MPI_Allreduce (metrics)");
}

void dist_allreduce_sum_i64(int64_t *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_INT64_T, sizeof(int64_t), MPI_SUM,
                      "MPI_Allreduce (counts)");
}

void dist_allreduce_max_f64(double *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_DOUBLE, sizeof(double), MPI_MAX, "MPI_Allreduce (max)");
}

void dist_allreduce_min_f64(double *buf, int64_t n) {
    if (!dist_active() || n == 0) return;
    allreduce_buckets(buf, n, MPI_DOUBLE, sizeof(double), MPI_MIN, "MPI_Allreduce (min)");
}

void dist_bcast(void *buf, size_t bytes) {
    if (!dist_active() || bytes == 0) return;
    const size_t chunk = (size_t)1 << 30;
    for (size_t i = 0; i < bytes; i += chunk) {
        int cnt = (int)(bytes - i < chunk ? bytes - i : chunk);
        wd_arm("MPI_Bcast", dist_options()->timeout_s);
        MPI_CHECK(MPI_Bcast((char *)buf + i, cnt, MPI_BYTE, 0, g.comm), "MPI_Bcast");
        wd_disarm();
    }
}

// num_batches_tracked: one process counts every micro-batch forward, so the
// counters advance by the sum of the ranks' increments since the last sync.
static struct {
    const param_store *store;
    int64_t *snap;
    int n;
} g_cnt;

static void counters_snapshot(const param_store *s) {
    if (g_cnt.n != s->n_counters) {
        free(g_cnt.snap);
        g_cnt.snap = malloc((size_t)(s->n_counters ? s->n_counters : 1) * sizeof(int64_t));
        AG_ASSERT(g_cnt.snap != NULL, "out of memory");
        g_cnt.n = s->n_counters;
    }
    // A model without counters: snap (never allocated) and counters are NULL,
    // and memcpy on NULL is undefined even for 0 bytes (UBSan, make asan).
    if (s->n_counters) memcpy(g_cnt.snap, s->counters, (size_t)s->n_counters * sizeof(int64_t));
    g_cnt.store = s;
}

static void sync_counters(param_store *s) {
    if (g_cnt.store != s || g_cnt.n != s->n_counters) {
        dist_bcast(s->counters, (size_t)s->n_counters * sizeof(int64_t));
    } else {
        for (int i = 0; i < s->n_counters; i++) s->counters[i] -= g_cnt.snap[i];
        dist_allreduce_sum_i64(s->counters, s->n_counters);
        for (int i = 0; i < s->n_counters; i++) s->counters[i] += g_cnt.snap[i];
    }
    counters_snapshot(s);
}

void dist_bcast_store(param_store *s) {
    AG_ASSERT(s->finalized, "param_store not finalized");
    dist_bcast(s->data, (size_t)s->n_float * sizeof(float));
    dist_bcast(s->counters, (size_t)s->n_counters * sizeof(int64_t));
    counters_snapshot(s);
}

// Only PARAM_BUFFER tensors (BatchNorm running statistics) change outside the
// optimizer; they are packed into one message (a per-tensor broadcast would pay
// the latency ~260 times per step; the frozen landmark stream never changes).
void dist_sync_buffers(param_store *s) {
    AG_ASSERT(s->finalized, "param_store not finalized");
    if (!dist_active()) return;
    int64_t total = 0;
    for (int i = 0; i < s->n; i++)
        if (s->params[i].kind == PARAM_BUFFER) total += s->params[i].numel;
    float *pack = malloc((size_t)(total ? total : 1) * sizeof(float));
    AG_ASSERT(pack != NULL, "out of memory");
    int64_t o = 0;
    for (int i = 0; i < s->n; i++)
        if (s->params[i].kind == PARAM_BUFFER) {
            memcpy(pack + o, s->data + s->params[i].offset,
                   (size_t)s->params[i].numel * sizeof(float));
            o += s->params[i].numel;
        }
    dist_bcast(pack, (size_t)total * sizeof(float));
    o = 0;
    for (int i = 0; i < s->n; i++)
        if (s->params[i].kind == PARAM_BUFFER) {
            memcpy(s->data + s->params[i].offset, pack + o,
                   (size_t)s->params[i].numel * sizeof(float));
            o += s->params[i].numel;
        }
    free(pack);
    sync_counters(s);
}

int dist_param_hash_check(const param_store *s, const char *when, char *err, size_t errlen) {
    AG_ASSERT(s->finalized, "param_store not finalized");
    if (!dist_active()) return 0;
    // Per-tensor hashes; min == max over ranks for every tensor means equal bits.
    int n = s->n;
    uint64_t *lo = malloc((size_t)n * 2 * sizeof(uint64_t));
    AG_ASSERT(lo != NULL, "out of memory");
    uint64_t *hi = lo + n;
    for (int i = 0; i < n; i++) lo[i] = hi[i] = param_hash(s, &s->params[i]);
    wd_arm("MPI_Allreduce (parameter hash)", dist_options()->timeout_s);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, lo, n, MPI_UINT64_T, MPI_MIN, g.comm),
              "MPI_Allreduce (parameter hash)");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, hi, n, MPI_UINT64_T, MPI_MAX, g.comm),
              "MPI_Allreduce (parameter hash)");
    wd_disarm();
    int first = -1, bad = 0;
    for (int i = 0; i < n; i++)
        if (lo[i] != hi[i]) {
            if (first < 0) first = i;
            bad++;
        }
    free(lo);
    if (!bad) return 0;
    snprintf(err, errlen,
             "parameters differ across ranks %s: first at '%s' (%d tensor%s differ); the "
             "ranks no longer train the same model",
             when ? when : "", s->params[first].name, bad, bad == 1 ? "" : "s");
    return -1;
}

#endif  // POSTER_MPI
