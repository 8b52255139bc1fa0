// Honest model selection: `data.val_split = F` carves a stratified, seeded
// validation set out of the training split (see split.h). The official code
// selects the best epoch on the test set, which makes the reported number an
// optimistic one; with a held-out validation set `best.h5` is chosen on it and
// the test split is evaluated once, at the end, with the chosen weights.
#include "data/split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"

static const config_key k_split[] = {
    {"data.val_split", CK_FLOAT, "0", 0, 0.9, NULL,
     "fraction of each training class held out as the validation set (model selection); "
     "0 = off (official: select on eval.split); the test split is then evaluated once at "
     "the end"},
    {"data.val_seed", CK_INT, "1", 0, 4294967295.0, NULL,
     "seed of the held-out split (the same for every train.seed, so runs compare on one "
     "validation set)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void split_config_register(config *c) { config_register(c, k_split); }

int split_stratified(const int *labels, int n, int num_classes, double frac, uint64_t seed,
                     int *held, int *n_held, int *rest, int *n_rest) {
    int *count = calloc((size_t)num_classes, sizeof(int));
    int *members = malloc((size_t)(n ? n : 1) * sizeof(int));
    bool *is_held = calloc((size_t)(n ? n : 1), sizeof(bool));
    AG_ASSERT(count && members && is_held, "out of memory");
    for (int i = 0; i < n; i++) {
        AG_ASSERT(labels[i] >= 0 && labels[i] < num_classes, "label %d of %d", labels[i],
                  num_classes);
        count[labels[i]]++;
    }
    int total = 0;
    for (int k = 0; k < num_classes; k++) {
        // Per class: round(frac * count), leaving at least one training sample.
        int want = (int)floor(frac * count[k] + 0.5);
        if (want > count[k] - 1) want = count[k] - 1;
        if (want <= 0) continue;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (labels[i] == k) members[m++] = i;
        // Partial Fisher-Yates with a stream per (seed, class): the held-out set of
        // a class does not depend on the other classes' sizes.
        rng r;
        rng_seed(&r, data_mix_seed(seed, 0x5117, (uint64_t)k, 0));
        for (int j = 0; j < want; j++) {
            int t = j + (int)(rng_u64(&r) % (uint64_t)(m - j));
            int tmp = members[j];
            members[j] = members[t];
            members[t] = tmp;
            is_held[members[j]] = true;
        }
        total += want;
    }
    int h = 0, o = 0;
    for (int i = 0; i < n; i++) {   // ascending order in both lists
        if (is_held[i]) held[h++] = i;
        else rest[o++] = i;
    }
    AG_ASSERT(h == total, "held-out count");
    *n_held = h;
    *n_rest = o;
    free(count);
    free(members);
    free(is_held);
    return h;
}

dataset *dataset_subset(const dataset *d, const int *idx, int n, const char *split_name) {
    dataset *s = dataset_alloc();
    dataset_set_classes(s, d->num_classes, (const char *const *)d->class_names);
    for (int j = 0; j < n; j++) {
        AG_ASSERT(idx[j] >= 0 && idx[j] < d->n, "subset index %d of %d", idx[j], d->n);
        dataset_push(s, d->paths[idx[j]], d->labels[idx[j]]);
    }
    s->kind = d->kind;
    s->bgr = d->bgr;
    s->skip_bad = d->skip_bad;
    snprintf(s->format, sizeof s->format, "%s", d->format);
    snprintf(s->split, sizeof s->split, "%s", split_name);
    snprintf(s->root, sizeof s->root, "%s", d->root);
    if (d->kind == SRC_PIXELS) {
        const size_t np = (size_t)d->ph * d->pw;
        s->ph = d->ph;
        s->pw = d->pw;
        s->pixels = malloc(np * (size_t)(n ? n : 1));
        AG_ASSERT(s->pixels != NULL, "out of memory");
        for (int j = 0; j < n; j++)
            memcpy(s->pixels + (size_t)j * np, d->pixels + (size_t)idx[j] * np, np);
    } else if (d->kind == SRC_CACHE) {
        s->cache_fd = dup(d->cache_fd);
        AG_ASSERT(s->cache_fd >= 0, "dup of the cache file descriptor failed");
        s->cache_off = malloc((size_t)n * sizeof(int64_t) + 8);
        s->cache_h = malloc((size_t)n * sizeof(int) + 4);
        s->cache_w = malloc((size_t)n * sizeof(int) + 4);
        AG_ASSERT(s->cache_off && s->cache_h && s->cache_w, "out of memory");
        for (int j = 0; j < n; j++) {
            s->cache_off[j] = d->cache_off[idx[j]];
            s->cache_h[j] = d->cache_h[idx[j]];
            s->cache_w[j] = d->cache_w[idx[j]];
        }
    }
    return s;
}

int dataset_open_holdout(const config *c, const char *eval_split, dataset **train,
                         dataset **val, dataset **test, FILE *log, char *err, size_t errlen) {
    *train = *val = *test = NULL;
    const double frac = config_float(c, "data.val_split");
    if (dataset_open(c, "train", train, err, errlen)) return -1;
    if (frac <= 0) return dataset_open(c, eval_split, val, err, errlen);
    dataset *all = *train;
    const int n = dataset_size(all);
    int *held = malloc((size_t)n * sizeof(int)), *rest = malloc((size_t)n * sizeof(int));
    AG_ASSERT(held && rest, "out of memory");
    int nh = 0, nr = 0;
    const uint64_t seed = (uint64_t)config_int(c, "data.val_seed");
    split_stratified(all->labels, n, all->num_classes, frac, seed, held, &nh, rest, &nr);
    if (nh == 0) {
        snprintf(err, errlen, "data.val_split = %g holds out no sample of the %d training "
                 "samples (every class needs at least 2 samples and frac * count >= 0.5)",
                 frac, n);
        free(held);
        free(rest);
        return -1;
    }
    *train = dataset_subset(all, rest, nr, "train");
    *val = dataset_subset(all, held, nh, "val");
    dataset_close(all);
    free(held);
    free(rest);
    if (dataset_open(c, eval_split, test, err, errlen)) {
        dataset_close(*train);
        dataset_close(*val);
        *train = *val = NULL;
        return -1;
    }
    if (log)
        fprintf(log, "data.val_split %g: %d of %d training samples held out for validation "
                "(stratified, data.val_seed %llu); the %s split (%d samples) is evaluated once "
                "at the end with best.h5\n",
                frac, nh, n, (unsigned long long)seed, eval_split, dataset_size(*test));
    return 0;
}
