// Store-aware collectives (see dist_store.h): built from common/dist.h only, so
// no MPI call is made here.
#include "train/dist_store.h"

#include <stdlib.h>
#include <string.h>

static uint64_t param_hash(const param_store *s, const param *p) {
    if (p->kind == PARAM_COUNTER)
        return hash_mix64((uint64_t)*p->counter ^ 0xc0ffee);
    return dist_hash_floats(s->data + p->offset, p->numel);
}

uint64_t dist_store_hash(const param_store *s) {
    AG_ASSERT(s->finalized, "param_store not finalized");
    uint64_t h = dist_hash_floats(s->data, s->n_float);
    for (int i = 0; i < s->n_counters; i++) h = hash_mix64(h ^ (uint64_t)s->counters[i]) + 1;
    return h;
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
    dist_allreduce_minmax_u64(lo, hi, n, "MPI_Allreduce (parameter hash)");
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
