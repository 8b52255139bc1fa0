// The evaluation loop (eval/evaluate.h): the trainer's per-epoch evaluation,
// `poster eval` and the tests all run this one.
#include "eval/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "common/dist.h"
#include "eval/tta.h"

int eval_model(poster_model *m, dataset *d, const eval_args *ea, confusion *cm,
                   double *mean_loss, float **logits_out, char *err, size_t errlen) {
    loader_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.batch_size = ea->batch_size;
    lo.workers = ea->workers;
    lo.prefetch = 2;
    lo.image_size = ea->image_size;
    lo.log = stderr;
    loader *L = loader_create(d, &lo, err, errlen);
    if (!L) return -1;
    // Several ranks: each evaluates a block of whole batches (the same batches one
    // process forms, so the same logits), then the counts and sums are reduced.
    int64_t nb_total = loader_batches_per_epoch(L), b_first = 0, b_count = nb_total;
    if (ea->max_batches && ea->max_batches < nb_total) nb_total = ea->max_batches;
    dist_shard(nb_total, dist_rank(), dist_size(), &b_first, &b_count);
    loader_start_epoch(L, 0);
    if (b_first > 0) loader_seek(L, 0, (int)b_first);
    const int S = ea->image_size, K = poster_options(m)->num_classes;
    float *img = malloc((size_t)ea->batch_size * 3 * S * S * sizeof(float));
    int64_t *lab = malloc((size_t)ea->batch_size * sizeof(int64_t));
    float *all = logits_out ? calloc((size_t)dataset_size(d) * K, sizeof(float)) : NULL;
    AG_ASSERT(img && lab && (!logits_out || all), "out of memory");
    double loss_sum = 0;
    int64_t seen = b_first * ea->batch_size, seen0 = seen;
    int rc = 0, nb = 0;
    confusion local;
    confusion_init(&local, cm->k);
    bool prev = ag_no_grad_begin();
    for (;;) {
        if (nb >= b_count) break;
        int n = loader_next(L, img, lab, err, errlen);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (n == 0) break;
        nb++;
        tensor *x = tensor_from(4, (int[]){n, 3, S, S}, img);
        tensor *z = ea->tta ? tta_log_probs(m, x, ea->tta)        // [n, K]
                            : poster_forward(m, x, false, NULL);  // [n, K]
        AG_ASSERT(z->ndim == 2 && z->shape[0] == n && z->shape[1] == K, "logits shape");
        for (int i = 0; i < n; i++) {
            if (lab[i] < 0 || lab[i] >= K) {
                snprintf(err, errlen, "label %lld of sample %lld is outside 0..%d",
                         (long long)lab[i], (long long)(seen + i), K - 1);
                rc = -1;
                break;
            }
        }
        if (rc) break;
        if (ea->loss) {
            tensor *l = loss_compute(ea->loss, z, lab);
            loss_sum += (double)l->data[0] * n;
        }
        confusion_add_logits(&local, z->data, lab, n);
        if (all && seen + n <= dataset_size(d))
            memcpy(all + seen * K, z->data, (size_t)n * K * sizeof(float));
        seen += n;
        ag_step_reset();
    }
    ag_no_grad_end(prev);
    ag_step_reset();
    loader_free(L);
    free(img);
    free(lab);
    // Every rank takes part in the reduction, failed or not, so none waits.
    double red[3] = {loss_sum, (double)(seen - seen0), rc ? 1.0 : 0.0};
    dist_allreduce_sum_f64(red, 3);
    dist_allreduce_sum_i64(local.m, (int64_t)local.k * local.k);
    if (all) dist_allreduce_sum_f32(all, (int64_t)dataset_size(d) * K);
    if (!rc && red[2] > 0) {
        snprintf(err, errlen, "evaluation failed on another rank (see its message)");
        rc = -1;
    }
    for (int i = 0; i < local.k * local.k; i++) {
        cm->m[i] += local.m[i];
        cm->n += local.m[i];
    }
    confusion_free(&local);
    loss_sum = red[0];
    seen = (int64_t)red[1];
    if (mean_loss) *mean_loss = seen ? loss_sum / seen : NAN;
    if (logits_out) {
        if (rc) free(all);
        else *logits_out = all;
    }
    return rc;
}
