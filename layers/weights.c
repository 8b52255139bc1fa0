// The one name + shape matcher (layers/weights.h) and the loaders built on it.
#include "layers/weights.h"

#include <stdlib.h>
#include <string.h>

#define LIST_MAX 40   // names listed per kind of problem on the log

typedef struct keyed {
    const char *full;   // prefix + name
    int i;              // entry index
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    int c = strcmp(x->full, y->full);
    return c ? c : x->i - y->i;   // duplicates: the first in the file wins
}

// "[2, 3]" ("[]" for a scalar).
static const char *shape_str(int nd, const int *sh, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < nd && o < n; d++) o += (size_t)snprintf(buf + o, n - o, d ? ", %d" : "%d", sh[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

static bool same_shape(const param *p, const weights_entry *e) {
    if (p->kind == PARAM_COUNTER) {   // a counter may also be stored as a 1-element array
        int64_t k = 1;
        for (int d = 0; d < e->ndim; d++) k *= e->shape[d];
        return k == 1;
    }
    if (p->ndim != e->ndim) return false;
    for (int d = 0; d < e->ndim; d++)
        if (p->shape[d] != e->shape[d]) return false;
    return true;
}

static void first(state_report *rep, const char *fmt, const char *a, const char *b,
                  const char *c) {
    if (!rep->first_problem[0])
        snprintf(rep->first_problem, sizeof rep->first_problem, fmt, a, b, c);
}

void weights_match(param_store *s, const weights_entry *e, int n, const char *prefix,
                   param **target, state_report *rep, FILE *log) {
    AG_ASSERT(s->finalized, "weights_match needs a finalized store");
    memset(rep, 0, sizeof *rep);
    if (!prefix) prefix = "";
    size_t plen = strlen(prefix);
    keyed *k = malloc((size_t)(n ? n : 1) * sizeof *k);
    bool *claimed = calloc((size_t)(n ? n : 1), sizeof *claimed);
    AG_ASSERT(k && claimed, "out of memory");
    for (int i = 0; i < n; i++) {
        target[i] = NULL;
        size_t len = plen + strlen(e[i].name) + 1;
        char *full = malloc(len);
        AG_ASSERT(full != NULL, "out of memory");
        snprintf(full, len, "%s%s", prefix, e[i].name);
        k[i] = (keyed){full, i};
    }
    qsort(k, (size_t)n, sizeof *k, cmp_keyed);
    // The model's tensors in its order (so the first problem is the model's
    // first), then the file's leftovers in the file's order.
    int listed_m = 0, listed_s = 0, listed_u = 0;
    char b1[96], b2[96], what[600];
    for (int j = 0; j < s->n; j++) {
        param *p = &s->params[j];
        if (strncmp(p->name, prefix, plen)) continue;
        int lo = 0, hi = n - 1, at = -1;
        while (lo <= hi) {   // the first entry with this name
            int mid = (lo + hi) / 2, c = strcmp(k[mid].full, p->name);
            if (c >= 0) hi = mid - 1;
            else lo = mid + 1;
            if (c == 0) at = mid;
        }
        if (at < 0) {
            rep->missing++;
            first(rep, "missing tensor %s%s%s", p->name, "", "");
            if (log && listed_m++ < LIST_MAX)
                fprintf(log, "  missing (kept its initialization): %s\n", p->name);
            continue;
        }
        const weights_entry *w = &e[k[at].i];
        claimed[k[at].i] = true;   // present, maybe not loadable: not "unexpected"
        if (!w->problem && same_shape(p, w)) {
            target[k[at].i] = p;
            rep->matched++;
            continue;
        }
        rep->misshaped++;
        shape_str(p->ndim, p->shape, b2, sizeof b2);
        if (w->problem) {
            snprintf(what, sizeof what, "%s", w->problem);
            first(rep, "tensor %s: %s%s", p->name, w->problem, "");
        } else {
            snprintf(what, sizeof what, "file %s, model %s",
                     shape_str(w->ndim, w->shape, b1, sizeof b1), b2);
            first(rep, "tensor %s has shape %s in the file, the model expects %s", p->name, b1, b2);
        }
        if (log && listed_s++ < LIST_MAX) fprintf(log, "  misshaped (kept): %s: %s\n", p->name, what);
    }
    for (int i = 0; i < n; i++) {
        if (claimed[i]) continue;
        rep->unexpected++;
        char full[600];
        snprintf(full, sizeof full, "%s%s", prefix, e[i].name);
        first(rep, "unexpected tensor %.400s (not in the model)%s%s", full, "", "");
        if (log && listed_u++ < LIST_MAX) fprintf(log, "  unexpected (not in the model): %s\n", full);
    }
    if (log && (rep->unexpected > LIST_MAX || rep->misshaped > LIST_MAX || rep->missing > LIST_MAX))
        fprintf(log, "  (lists cut at %d names)\n", LIST_MAX);
    for (int i = 0; i < n; i++) free((void *)k[i].full);
    free(k);
    free(claimed);
}

int weights_from_state(param_store *s, const pth_state *st, const char *path,
                       const char *prefix, bool strict, state_report *rep, FILE *log,
                       char *err, size_t errlen) {
    state_report local;
    if (!rep) rep = &local;
    if (!prefix) prefix = "";
    weights_entry *e = malloc((size_t)(st->n ? st->n : 1) * sizeof *e);
    param **target = malloc((size_t)(st->n ? st->n : 1) * sizeof *target);
    if (!e || !target) {
        free(e), free(target);
        return snprintf(err, errlen, "%s: out of memory", path), -1;
    }
    for (int i = 0; i < st->n; i++) e[i] = (weights_entry){st->t[i].name, st->t[i].ndim, st->t[i].shape, NULL};
    weights_match(s, e, st->n, prefix, target, rep, log);
    int problems = rep->missing + rep->unexpected + rep->misshaped, rc = 0;
    if (rep->matched == 0) {
        snprintf(err, errlen, "%s: none of its %d tensors matches the model by name and shape "
                 "under prefix '%s' (%s)", path, st->n, prefix,
                 rep->first_problem[0] ? rep->first_problem : "empty");
        rc = -1;
    } else if (strict && problems) {
        snprintf(err, errlen, "%s: does not match the model (%d missing, %d unexpected, %d "
                 "misshaped); first: %s", path, rep->missing, rep->unexpected, rep->misshaped,
                 rep->first_problem);
        rc = -1;
    } else {
        for (int i = 0; i < st->n; i++) {
            param *p = target[i];
            const pth_tensor *t = &st->t[i];
            if (!p) continue;
            if (p->kind == PARAM_COUNTER) *p->counter = t->is_int ? t->i64[0] : (int64_t)t->f32[0];
            else
                for (int64_t q = 0; q < t->numel; q++)
                    p->t.data[q] = t->is_int ? (float)t->i64[q] : t->f32[q];
        }
        if (log)
            fprintf(log, "import %s (%s, state dict at %s): %d tensors matched under '%s', %d "
                    "missing, %d unexpected, %d misshaped\n", path, st->format, st->where,
                    rep->matched, prefix, rep->missing, rep->unexpected, rep->misshaped);
    }
    free(e);
    free(target);
    return rc;
}

static bool is_hdf5(const char *path) {
    FILE *fp = fopen(path, "rb");
    unsigned char sig[8] = {0};
    size_t got = fp ? fread(sig, 1, 8, fp) : 0;
    if (fp) fclose(fp);
    return got == 8 && !memcmp(sig, "\x89HDF\r\n\x1a\n", 8);
}

int weights_load(param_store *s, const char *path, const char *prefix, bool strict,
                 state_report *rep, FILE *log, char *err, size_t errlen) {
    state_report local;
    if (!rep) rep = &local;
    // Our HDF5 files without a prefix: read lazily, format and version checked.
    if ((!prefix || !prefix[0]) && is_hdf5(path)) return state_load(path, s, strict, rep, log, err, errlen);
    pth_state *st = pth_load(path, err, errlen);
    if (!st) return -1;
    int rc = weights_from_state(s, st, path, prefix, strict, rep, log, err, errlen);
    pth_free(st);
    return rc;
}
