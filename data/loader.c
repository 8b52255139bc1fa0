// The prefetching loader: worker threads decode and augment samples into a
// ring of batch slots a few batches ahead of the consumer.
//
// Determinism: the order of an epoch depends on (seed, epoch) and the
// augmentation of the sample at position k on (seed, epoch, k), never on which
// thread ran it or when; bad samples (skip_bad) are dropped in position order.
// So any number of workers, and a resumed run (loader_seek), gives the same
// batches. Memory: max(prefetch, 1) slots of one batch each.
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

#define MSG_LEN 512

typedef struct slot {
    int batch;          // batch held, -1 = free
    int n;              // samples of that batch
    int done;           // samples finished
    float *img;         // [B, 3, S', S']
    int64_t *lab;       // [B]
    char (*msg)[MSG_LEN];   // [B] "" = fine, else the sample's error
} slot;

struct loader {
    dataset *d;
    loader_opts o;
    int S, step;
    size_t per;         // floats per sample
    int n_used, nb;     // samples and batches of an epoch
    int *order;         // [n]
    int epoch, order_epoch;
    int next_batch;     // consumer position
    int claim;          // next sample position to hand to a worker
    int gen;            // bumped on every reset; stale results are dropped
    int nslots;
    slot *slots;
    int nthreads, busy;
    bool stop;
    pthread_t *th;
    void **tj;          // [nthreads + 1] decoders (last: the caller's)
    aug_scratch *scr;   // [nthreads + 1]
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready, cv_idle;
    int skipped_total, skipped_epoch;
    bool epoch_reported;
};

// Decodes + augments the sample at epoch position pos into img; msg "" or error.
static void process(loader *l, int worker, int pos, float *img, int64_t *lab, char *msg) {
    const int i = l->order[pos];
    image_u8 im = {0};
    msg[0] = 0;
    *lab = l->d->labels[i];
    if (dataset_load(l->d, i, l->tj[worker], &im, msg, MSG_LEN)) {
        if (!msg[0]) snprintf(msg, MSG_LEN, "%s: cannot load", l->d->paths[i]);
        memset(img, 0, l->per * sizeof(float));
        return;
    }
    aug_plan plan, *pp = NULL;
    if (l->o.train_aug) {
        aug_draw(l->o.seed, l->epoch, pos, &plan);
        pp = &plan;
    }
    aug_apply(&im, pp, l->d->bgr, 224, l->step, &l->scr[worker], img);
    image_free(&im);
}

typedef struct {
    loader *l;
    int id;
} worker_arg;

static void *worker_main(void *arg_) {
    worker_arg *arg = arg_;
    loader *l = arg->l;
    const int id = arg->id;
    free(arg);
    const int B = l->o.batch_size;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        const int pos = l->claim, b = pos / B;
        if (l->epoch < 0 || pos >= l->n_used || b >= l->next_batch + l->nslots) {
            pthread_cond_wait(&l->cv_work, &l->mu);
            continue;
        }
        slot *s = &l->slots[b % l->nslots];
        if (s->batch != b) {
            // The slot's previous batch (b - nslots) was consumed: reuse it.
            s->batch = b;
            s->n = l->n_used - b * B < B ? l->n_used - b * B : B;
            s->done = 0;
        }
        l->claim++;
        l->busy++;
        const int gen = l->gen, k = pos - b * B;
        pthread_mutex_unlock(&l->mu);
        process(l, id, pos, s->img + (size_t)k * l->per, &s->lab[k], s->msg[k]);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->gen && ++s->done == s->n) pthread_cond_broadcast(&l->cv_ready);
        if (l->busy == 0) pthread_cond_broadcast(&l->cv_idle);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

loader *loader_create(dataset *d, const loader_opts *o, char *err, size_t errlen) {
    if (o->batch_size <= 0) {
        snprintf(err, errlen, "batch size %d must be positive", o->batch_size);
        return NULL;
    }
    const int S = o->image_size ? o->image_size : 224;
    if (S != 224 && S != 112) {
        snprintf(err, errlen, "image size %d: only 224 and 112 (the fast path) are supported", S);
        return NULL;
    }
    if (d->n <= 0) {
        snprintf(err, errlen, "the dataset is empty");
        return NULL;
    }
    loader *l = calloc(1, sizeof *l);
    l->d = d;
    l->o = *o;
    l->o.image_size = S;
    l->S = S;
    l->step = 224 / S;
    l->per = (size_t)3 * S * S;
    const int B = o->batch_size;
    l->nb = o->drop_last ? d->n / B : (d->n + B - 1) / B;
    l->n_used = o->drop_last ? l->nb * B : d->n;
    l->order = malloc((size_t)d->n * sizeof(int));
    l->epoch = -1;
    l->order_epoch = -1;
    l->nthreads = o->workers > 0 ? o->workers : 0;
    l->nslots = l->nthreads ? (o->prefetch > 0 ? o->prefetch : 1) : 0;
    l->slots = calloc((size_t)(l->nslots ? l->nslots : 1), sizeof(slot));
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        s->batch = -1;
        s->img = malloc((size_t)B * l->per * sizeof(float));
        s->lab = malloc((size_t)B * sizeof(int64_t));
        s->msg = calloc((size_t)B, MSG_LEN);
        if (!s->img || !s->lab || !s->msg) {
            snprintf(err, errlen, "out of memory for %d prefetched batches of %d", l->nslots, B);
            loader_free(l);
            return NULL;
        }
    }
    l->tj = calloc((size_t)l->nthreads + 1, sizeof(void *));
    l->scr = calloc((size_t)l->nthreads + 1, sizeof(aug_scratch));
    for (int i = 0; i <= l->nthreads; i++) l->tj[i] = image_tj_decoder();
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_ready, NULL);
    pthread_cond_init(&l->cv_idle, NULL);
    l->th = calloc((size_t)(l->nthreads ? l->nthreads : 1), sizeof(pthread_t));
    for (int i = 0; i < l->nthreads; i++) {
        worker_arg *a = malloc(sizeof *a);
        a->l = l;
        a->id = i;
        pthread_create(&l->th[i], NULL, worker_main, a);
    }
    return l;
}

void loader_free(loader *l) {
    if (!l) return;
    if (l->tj) {   // fully constructed: stop the workers
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->nthreads; i++) pthread_join(l->th[i], NULL);
        for (int i = 0; i <= l->nthreads; i++) {
            image_tj_free(l->tj[i]);
            aug_scratch_free(&l->scr[i]);
        }
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_ready);
        pthread_cond_destroy(&l->cv_idle);
    }
    for (int i = 0; i < l->nslots; i++) {
        free(l->slots[i].img);
        free(l->slots[i].lab);
        free(l->slots[i].msg);
    }
    free(l->slots);
    free(l->tj);
    free(l->scr);
    free(l->th);
    free(l->order);
    free(l);
}

// Stops the workers' current work, then positions the loader (under the lock).
static void reset_locked(loader *l, int epoch, int batches_done) {
    l->gen++;
    l->claim = INT_MAX;   // no new claims while we wait
    while (l->busy > 0) pthread_cond_wait(&l->cv_idle, &l->mu);
    if (l->order_epoch != epoch) {
        if (l->o.balanced)
            sampler_balanced(l->order, l->d->n, l->d->labels, l->d->num_classes, l->o.seed, epoch);
        else if (l->o.shuffle)
            sampler_shuffle(l->order, l->d->n, l->o.seed, epoch);
        else
            sampler_sequential(l->order, l->d->n);
        l->order_epoch = epoch;
    }
    l->epoch = epoch;
    if (batches_done < 0) batches_done = 0;
    if (batches_done > l->nb) batches_done = l->nb;
    l->next_batch = batches_done;
    l->claim = batches_done * l->o.batch_size;
    for (int i = 0; i < l->nslots; i++) l->slots[i].batch = -1;
    l->skipped_epoch = 0;
    l->epoch_reported = false;
    pthread_cond_broadcast(&l->cv_work);
}

void loader_start_epoch(loader *l, int epoch) { loader_seek(l, epoch, 0); }

void loader_seek(loader *l, int epoch, int batches_done) {
    pthread_mutex_lock(&l->mu);
    reset_locked(l, epoch, batches_done);
    pthread_mutex_unlock(&l->mu);
}

int loader_batches_per_epoch(const loader *l) { return l->nb; }
int loader_position(const loader *l) { return l->next_batch; }
int loader_skipped(const loader *l) { return l->skipped_total; }

// Copies the good samples of a finished batch out; bad ones are named (skip_bad)
// or end the call with their error. Returns the count, or -1.
static int emit(loader *l, int b, const float *img, const int64_t *lab, char (*msg)[MSG_LEN],
                int n, float *out_img, int64_t *out_lab, char *err, size_t errlen) {
    int m = 0;
    for (int k = 0; k < n; k++) {
        if (msg[k][0]) {
            if (!l->d->skip_bad) {
                snprintf(err, errlen, "%s", msg[k]);
                return -1;
            }
            l->skipped_total++;
            l->skipped_epoch++;
            if (l->o.log)
                fprintf(l->o.log, "skipping bad sample (epoch %d, batch %d): %s\n", l->epoch, b,
                        msg[k]);
            continue;
        }
        if (out_img != img || m != k)
            memmove(out_img + (size_t)m * l->per, img + (size_t)k * l->per, l->per * sizeof(float));
        out_lab[m] = lab[k];
        m++;
    }
    return m;
}

int loader_next(loader *l, float *images, int64_t *labels, char *err, size_t errlen) {
    if (l->epoch < 0) loader_start_epoch(l, 0);
    const int B = l->o.batch_size;
    for (;;) {
        if (l->next_batch >= l->nb) {
            if (!l->epoch_reported && l->skipped_epoch && l->o.log)
                fprintf(l->o.log, "epoch %d: skipped %d bad sample%s (%d in total)\n", l->epoch,
                        l->skipped_epoch, l->skipped_epoch == 1 ? "" : "s", l->skipped_total);
            l->epoch_reported = true;
            return 0;
        }
        const int b = l->next_batch;
        int m;
        if (l->nthreads == 0) {
            const int n = l->n_used - b * B < B ? l->n_used - b * B : B;
            char (*msg)[MSG_LEN] = malloc((size_t)n * MSG_LEN);
            for (int k = 0; k < n; k++)
                process(l, 0, b * B + k, images + (size_t)k * l->per, &labels[k], msg[k]);
            m = emit(l, b, images, labels, msg, n, images, labels, err, errlen);
            free(msg);
            l->next_batch++;
            l->claim = l->next_batch * B;
        } else {
            pthread_mutex_lock(&l->mu);
            slot *s = &l->slots[b % l->nslots];
            while (!(s->batch == b && s->done == s->n))
                pthread_cond_wait(&l->cv_ready, &l->mu);
            pthread_mutex_unlock(&l->mu);
            // The slot is ours until we free it: copy outside the lock.
            m = emit(l, b, s->img, s->lab, s->msg, s->n, images, labels, err, errlen);
            pthread_mutex_lock(&l->mu);
            s->batch = -1;
            l->next_batch++;
            pthread_cond_broadcast(&l->cv_work);
            pthread_mutex_unlock(&l->mu);
        }
        if (m != 0) return m;   // a batch whose samples were all bad is passed over
    }
}
