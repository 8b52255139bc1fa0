// The training loop (see trainer.h).
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "data/split.h"
#include "eval/plot.h"
#include "eval/tta.h"
#include "train/checkpoint.h"
#include "common/atomic.h"
#include "common/dist.h"
#include "train/dist_store.h"
#include "train/ema.h"
#include "train/optim.h"
#include "train/sched.h"
#include "train/sweep.h"

static const config_key k_train[] = {
    {"train.epochs", CK_INT, "300", 1, 1000000, NULL, "epochs to train (official 300)"},
    {"train.batch_size", CK_INT, "200", 1, 100000, NULL, "samples per optimizer step (official 200)"},
    {"train.micro_batch", CK_INT, "100", 0, 100000, NULL,
     "samples per forward/backward; BatchNorm statistics per micro-batch (official: 2 "
     "replicas of 100); 0 = whole batch"},
    {"train.seed", CK_INT, "123", 0, 4294967295.0, NULL, "seed of initialization, sampling, drop path"},
    {"train.threads", CK_INT, "0", 0, 4096, NULL, "compute threads (0 = all cores)"},
    {"train.out_dir", CK_STR, "runs/train", 0, 0, NULL, "folder for logs, checkpoints, pictures"},
    {"train.on_nonfinite", CK_ENUM, "stop", 0, 0, "stop|skip",
     "a non-finite loss or gradient stops the run, or skips that step"},
    {"train.max_batches", CK_INT, "0", 0, 100000000, NULL, "batches per epoch (0 = all; for smoke runs)"},
    {"train.max_steps", CK_INT, "0", 0, 1e15, NULL,
     "stop after this many optimizer steps in all (0 = no limit), writing last.h5 at that "
     "point; resume with a larger value (or 0) to go on"},
    {"train.init", CK_STR, "", 0, 0, NULL,
     "comma-separated weight files (poster checkpoints or `poster import` states) loaded "
     "before training, matching names and shapes"},
    {"train.progress", CK_BOOL, "on", 0, 0, NULL, "progress line on stderr"},
    {"eval.split", CK_STR, "val", 0, 0, NULL, "split evaluated every epoch (val/test; datasets map names)"},
    {"eval.batch_size", CK_INT, "100", 1, 100000, NULL, "evaluation batch size"},
    {"eval.every", CK_INT, "1", 1, 1000000, NULL, "evaluate every N epochs (and after the last)"},
    {"eval.plots", CK_BOOL, "on", 0, 0, NULL, "write curves.png and confusion.png"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void train_config_register(config *c) {
    poster_config_register(c);
    data_config_register(c);
    config_register(c, k_train);
    optim_config_register(c);
    sched_config_register(c);
    loss_config_register(c);
    dist_config_register(c);
    split_config_register(c);   // data.val_split, data.val_seed
    ema_config_register(c);     // train.ema
    tta_config_register(c);     // eval.tta (poster eval/predict)
    sweep_config_register(c);   // sweep.* (read by poster sweep only)
}

int train_opts_from_config(const config *c, train_opts *o, char *err, size_t errlen) {
    memset(o, 0, sizeof(*o));
    o->epochs = (int)config_int(c, "train.epochs");
    o->batch_size = (int)config_int(c, "train.batch_size");
    o->micro_batch = (int)config_int(c, "train.micro_batch");
    if (o->micro_batch == 0 || o->micro_batch > o->batch_size) o->micro_batch = o->batch_size;
    o->seed = (uint64_t)config_int(c, "train.seed");
    o->threads = (int)config_int(c, "train.threads");
    snprintf(o->out_dir, sizeof o->out_dir, "%s", config_str(c, "train.out_dir"));
    o->on_nonfinite = strcmp(config_str(c, "train.on_nonfinite"), "skip") ? NONFINITE_STOP
                                                                           : NONFINITE_SKIP;
    o->max_batches = (int)config_int(c, "train.max_batches");
    o->max_steps = (int64_t)config_int(c, "train.max_steps");
    snprintf(o->init, sizeof o->init, "%s", config_str(c, "train.init"));
    o->progress = config_bool(c, "train.progress");
    snprintf(o->eval_split, sizeof o->eval_split, "%s", config_str(c, "eval.split"));
    o->eval_batch_size = (int)config_int(c, "eval.batch_size");
    o->eval_every = (int)config_int(c, "eval.every");
    o->plots = config_bool(c, "eval.plots");
    if (!o->out_dir[0]) {
        snprintf(err, errlen, "train.out_dir is empty");
        return -1;
    }
    return 0;
}

void train_result_free(train_result *r) {
    free(r->params);
    free(r->counters);
    r->params = NULL;
    r->counters = NULL;
}

static const char *cfg_str_or(const config *c, const char *key, const char *def) {
    return config_find_key(c, key) ? config_str(c, key) : def;
}

void train_loader_opts(const config *c, loader_opts *lo, int batch_size, bool train) {
    memset(lo, 0, sizeof(*lo));
    lo->batch_size = batch_size;
    // data.augment = off feeds the evaluation transform to training as well.
    lo->train_aug =
        train && (!config_find_key(c, "data.augment") || config_bool(c, "data.augment"));
    lo->drop_last = false;
    lo->workers = config_find_key(c, "data.workers") ? (int)config_int(c, "data.workers") : 0;
    lo->prefetch = 2;
    lo->image_size =
        config_find_key(c, "data.image_size") ? (int)config_int(c, "data.image_size") : 224;
    lo->seed = config_find_key(c, "train.seed") ? (uint64_t)config_int(c, "train.seed") : 123;
    const char *sampler = cfg_str_or(c, "data.sampler", "shuffle");
    const char *format = cfg_str_or(c, "data.format", "");
    lo->shuffle = train && strcmp(sampler, "sequential");   // sequential: file order
    // AffectNet's official sampler is class-balanced with replacement.
    lo->balanced = train && (!strcmp(sampler, "balanced") ||
                             (!strcmp(sampler, "auto") && !strcmp(format, "affectnet")));
    lo->log = stderr;
}

int train_model_opts(const config *c, int dataset_classes, poster_opts *po, char *err,
                     size_t errlen) {
    if (poster_opts_from_config(c, po, err, errlen)) return -1;
    if (dataset_classes > 0) {
        if (!config_has(c, "model.num_classes")) {
            po->num_classes = dataset_classes;
        } else if (po->num_classes != dataset_classes) {
            snprintf(err, errlen, "model.num_classes = %d but the dataset has %d classes",
                     po->num_classes, dataset_classes);
            return -1;
        }
    }
    return 0;
}

const char *train_first_nonfinite_grad(const param_store *s) {
    const float *g = s->grad;
    int64_t bad = 0;
    const int64_t n = s->n_train;
#pragma omp parallel for reduction(+ : bad) schedule(static)
    for (int64_t i = 0; i < n; i++) bad += !isfinite(g[i]);
    if (!bad) return NULL;
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (p->kind != PARAM_TRAINABLE) continue;
        for (int64_t j = 0; j < p->numel; j++)
            if (!isfinite(g[p->offset + j])) return p->name;
    }
    return "?";
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int train_mkdir_p(const char *dir, char *err, size_t errlen) {
    char buf[1300];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) goto fail;
            *p = '/';
        }
    if (mkdir(buf, 0777) && errno != EEXIST) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create folder %s: %s", buf, strerror(errno));
    return -1;
}

// ---------------------------------------------------------------------------
// Training

typedef struct run {
    config *c;
    train_opts o;
    optim_opts oo;
    sched_opts so;
    loss_opts lo;
    poster_model *model;
    param_store *s;
    optimizer *opt;
    dataset *train_ds, *val_ds;
    dataset *test_ds;         // data.val_split: the test split, evaluated once at the end
    char test_split[32];      // its name (eval.split; o.eval_split then names the held-out set)
    ema *ema;                 // train.ema: averaged weights (NULL = off)
    loader *L;
    rng drop_rng;
    ckpt_info ci;
    FILE *log;
    int image_size;
    float *img;
    int64_t *lab;
    int64_t step;             // optimizer steps so far (global)
    int64_t skipped;
    int64_t drop_draws;       // drop-path draws per sample per forward (several ranks)
    // train.ema: this epoch's evaluation of the averaged weights
    confusion ema_cm;
    metrics ema_mt;
    bool ema_evaluated;
    double loss_at_w;         // this step's first-pass loss sum (SAM: before the perturbation)
    FILE *steps_f;            // steps.csv (rank 0)
} run;

// One forward/backward over samples [first, first + count) of the batch of n
// (this rank's shard; all of it in one process) in micro-batches. Gradients
// accumulate into s->grad as this shard's part of d(mean loss over n)/dw, so the
// sum over ranks is the gradient of the whole batch. Drop path draws what one
// process draws for these samples. Outputs the shard's loss sum and correct
// count. Returns 0, or 1 on a non-finite loss (err names it).
static int pass(run *r, int first, int count, int n, double *loss_out, int64_t *correct_out,
                char *err, size_t errlen) {
    const int S = r->image_size, K = poster_options(r->model)->num_classes;
    double loss_sum = 0;
    int64_t correct = 0;
    const rng drop0 = r->drop_rng;
    if (dist_active()) dist_rng_skip(&r->drop_rng, r->drop_draws * first);
    int rc = 0;
    for (int off = first; off < first + count; off += r->o.micro_batch) {
        int m = first + count - off < r->o.micro_batch ? first + count - off : r->o.micro_batch;
        tensor *x = tensor_from(4, (int[]){m, 3, S, S}, r->img + (int64_t)off * 3 * S * S);
        tensor *z = poster_forward(r->model, x, true, &r->drop_rng);
        tensor *l = loss_compute(&r->lo, z, r->lab + off);
        float lv = l->data[0];
        if (!isfinite(lv)) {
            snprintf(err, errlen, "loss is %s (micro-batch at sample %d)", isnan(lv) ? "nan" : "inf",
                     off);
            ag_step_reset();
            rc = 1;
            break;
        }
        loss_sum += (double)lv * m;
        for (int i = 0; i < m; i++)
            correct += argmax_row(z->data + (int64_t)i * K, K) == r->lab[off + i];
        // The batch loss is the mean over n samples: this micro-batch's share.
        float seed = (float)m / (float)n;
        ag_backward_seed(l, &seed);
        ag_step_reset();
    }
    // Every rank continues where one process would after the whole batch.
    if (dist_active()) {
        r->drop_rng = drop0;
        dist_rng_skip(&r->drop_rng, r->drop_draws * n);
    }
    *loss_out = loss_sum;
    *correct_out = correct;
    return rc;
}

// Several ranks: whether any rank's pass failed (every rank calls this after
// each pass, so all take the same branch), then the gradient sum over ranks.
static int reduce_pass(run *r, int nf, char *why, size_t whylen) {
    if (!dist_active()) return nf;
    double any = nf;
    dist_allreduce_max_f64(&any, 1);
    if (any > 0 && !nf) snprintf(why, whylen, "non-finite loss on another rank");
    if (any > 0) return 1;
    dist_allreduce_grads(r->s->grad, r->s->n_train, 1.0f);
    return 0;
}

// A whole optimizer step (SAM: two passes). Returns 0 ok, 1 skipped (non-finite
// and on_nonfinite = skip), -1 stop (err says where).
static int train_step(run *r, int first, int count, int n, int epoch, int batch, double *loss,
                      int64_t *correct, char *err, size_t errlen) {
    char why[256] = "";
    const char *bad = NULL;
    store_zero_grad(r->s);
    // SAM's second pass takes the frozen landmark stream's output of the first
    // (same images, same weights; exact, see poster_landmark_reuse).
    if (r->oo.sam) poster_landmark_reuse(r->model, POSTER_LM_RECORD);
    int nf = pass(r, first, count, n, loss, correct, why, sizeof why);
    poster_landmark_reuse(r->model, POSTER_LM_OFF);
    r->loss_at_w = *loss;
    nf = reduce_pass(r, nf, why, sizeof why);
    if (!nf && (bad = train_first_nonfinite_grad(r->s)))
        snprintf(why, sizeof why, "gradient of '%s' is not finite", bad), nf = 1;
    if (!nf && r->oo.sam) {
        optim_sam_perturb(r->opt);
        store_zero_grad(r->s);
        // The official loop reports the loss and accuracy of the second pass.
        poster_landmark_reuse(r->model, POSTER_LM_REPLAY);
        nf = pass(r, first, count, n, loss, correct, why, sizeof why);
        poster_landmark_reuse(r->model, POSTER_LM_OFF);
        nf = reduce_pass(r, nf, why, sizeof why);
        if (!nf && (bad = train_first_nonfinite_grad(r->s)))
            snprintf(why, sizeof why, "gradient of '%s' is not finite (SAM second pass)", bad),
                nf = 1;
        optim_sam_restore(r->opt);
    }
    if (nf) {
        snprintf(err, errlen, "non-finite value at step %lld (epoch %d, batch %d): %s",
                 (long long)r->step + 1, epoch + 1, batch + 1, why);
        store_zero_grad(r->s);
        if (r->o.on_nonfinite == NONFINITE_STOP) return -1;
        fprintf(r->log, "\n%s; step skipped (train.on_nonfinite = skip)\n", err);
        r->skipped++;
        dist_sync_buffers(r->s);
        return 1;
    }
    optim_step(r->opt);
    // BatchNorm running statistics: rank 0's everywhere (see dist.h).
    dist_sync_buffers(r->s);
    if (r->ema) ema_update(r->ema, r->s);
    return 0;
}

static void fmt_hms(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e8) s = 0;
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void write_logs(run *r, const double *row) {
    if (!dist_is_root()) return;
    char path[1100];
    snprintf(path, sizeof path, "%s/log.csv", r->o.out_dir);
    bool header = access(path, F_OK) != 0;
    FILE *f = fopen(path, "a");
    if (f) {
        if (header)
            fprintf(f, "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_f1,val_score,seconds\n");
        fprintf(f, "%d,%.9g,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.2f\n", (int)row[HIST_EPOCH],
                row[HIST_LR], row[HIST_TRAIN_LOSS], row[HIST_TRAIN_ACC], row[HIST_VAL_LOSS],
                row[HIST_VAL_ACC], row[HIST_VAL_F1], row[HIST_VAL_SCORE], row[HIST_SECONDS]);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/log.jsonl", r->o.out_dir);
    f = fopen(path, "a");
    if (f) {
        // JSON has no NaN: epochs without evaluation write null.
        char v[4][32];
        const int cols[4] = {HIST_VAL_LOSS, HIST_VAL_ACC, HIST_VAL_F1, HIST_VAL_SCORE};
        for (int i = 0; i < 4; i++) {
            if (isfinite(row[cols[i]])) snprintf(v[i], sizeof v[i], "%.6f", row[cols[i]]);
            else snprintf(v[i], sizeof v[i], "null");
        }
        fprintf(f, "{\"epoch\": %d, \"lr\": %.9g, \"train_loss\": %.6f, \"train_acc\": %.6f, "
                "\"val_loss\": %s, \"val_acc\": %s, \"val_f1\": %s, \"val_score\": %s, "
                "\"seconds\": %.2f, \"step\": %lld}\n",
                (int)row[HIST_EPOCH], row[HIST_LR], row[HIST_TRAIN_LOSS], row[HIST_TRAIN_ACC],
                v[0], v[1], v[2], v[3], row[HIST_SECONDS], (long long)r->step);
        fclose(f);
    }
}

// One row of steps.csv per optimizer step: the mean loss over the batch at w (the
// first pass) and, with SAM, at w + e (the second pass, which the epoch means
// report), and the second pass's accuracy. A resume first drops the rows past
// the checkpoint's step (logs_truncate).
static void log_step(run *r, int epoch, int batch, double lr, double loss2, int64_t correct,
                     int n) {
    double red[3] = {r->loss_at_w, loss2, (double)correct};
    if (dist_active()) dist_allreduce_sum_f64(red, 3);   // every rank takes part
    if (!dist_is_root()) return;
    if (!r->steps_f) {
        char path[1100];
        snprintf(path, sizeof path, "%s/steps.csv", r->o.out_dir);
        bool header = access(path, F_OK) != 0;
        if (!(r->steps_f = fopen(path, "a"))) return;
        if (header) fprintf(r->steps_f, "step,epoch,batch,lr,loss,loss_sam,acc\n");
    }
    fprintf(r->steps_f, "%lld,%d,%d,%.9g,%.9g,", (long long)r->step, epoch + 1, batch + 1, lr,
            red[0] / n);
    if (r->oo.sam) fprintf(r->steps_f, "%.9g", red[1] / n);
    fprintf(r->steps_f, ",%.6f\n", red[2] / n);
    fflush(r->steps_f);
}

static void draw_curves(run *r) {
    int n = r->ci.n_hist;
    if (!n || !r->o.plots || !dist_is_root()) return;
    double *cols = malloc((size_t)n * 5 * sizeof(double));
    AG_ASSERT(cols != NULL, "out of memory");
    const int src[5] = {HIST_EPOCH, HIST_TRAIN_LOSS, HIST_VAL_LOSS, HIST_TRAIN_ACC, HIST_VAL_ACC};
    for (int j = 0; j < 5; j++)
        for (int i = 0; i < n; i++) cols[j * n + i] = r->ci.hist[i * CKPT_HIST_COLS + src[j]];
    plot_curves_data d = {n, cols, cols + n, cols + 2 * n, cols + 3 * n, cols + 4 * n,
                          "POSTER training"};
    char path[1100], err[512];
    snprintf(path, sizeof path, "%s/curves.png", r->o.out_dir);
    if (plot_curves(path, &d, err, sizeof err)) fprintf(r->log, "warning: %s\n", err);
    free(cols);
}

static void save_confusion(run *r, const confusion *cm, const metrics *mt, const char *stem) {
    if (!r->o.plots || !dist_is_root()) return;
    int k = cm->k;
    const char **names = malloc((size_t)k * sizeof(char *));
    for (int i = 0; i < k; i++) names[i] = dataset_class_name(r->val_ds, i);
    char path[1100], err[512], title[128];
    snprintf(path, sizeof path, "%s/%s.png", r->o.out_dir, stem);
    snprintf(title, sizeof title, "epoch %d: accuracy %.2f%%", r->ci.epoch, 100 * mt->accuracy);
    if (plot_confusion(path, cm->m, k, names, title, err, sizeof err))
        fprintf(r->log, "warning: %s\n", err);
    snprintf(path, sizeof path, "%s/%s.csv", r->o.out_dir, stem);
    if (metrics_write_csv(path, mt, cm, names, err, sizeof err))
        fprintf(r->log, "warning: %s\n", err);
    free(names);
}

// ---- SIGINT / SIGTERM and crash safety ----
// The handler only sets a flag; the loop checks it at step boundaries, so the
// step in flight finishes, last.h5 is written (atomically) with the position
// inside the epoch, and the run ends non-zero saying how to resume. A second
// signal takes the default action (SA_RESETHAND): last.h5 is never half-written.
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static int stop_requested(void) {
    int sig = g_stop_signal;
    if (dist_active()) {   // every rank stops at the same step
        double v = sig;
        dist_allreduce_sum_f64(&v, 1);
        sig = v > 0 ? (sig ? sig : SIGTERM) : 0;
    }
    return sig;
}

// A resumed run repeats what a crash interrupted: rows of log.csv and
// log.jsonl past the checkpoint's epochs, rows of steps.csv past its step (and
// a half-written last line) are dropped first, so each epoch and each step
// appears once. key: what precedes the row's number ("" for the first csv
// column); limit: the last number kept. Rewritten atomically.
static void logs_truncate(run *r, const char *name, const char *key, int64_t limit) {
    char path[1100], tmp[1110];
    snprintf(path, sizeof path, "%s/%s", r->o.out_dir, name);
    FILE *in = fopen(path, "r");
    if (!in) return;
    char e2[1024];
    FILE *out = atomic_fopen(path, "w", tmp, sizeof tmp, e2, sizeof e2);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int dropped = 0;
    while (out && (n = getline(&line, &cap, in)) > 0) {
        const char *k = strstr(line, key);
        long long e = k ? strtoll(k + strlen(key), NULL, 10) : 0;
        bool header = !strncmp(line, "epoch,", 6) || !strncmp(line, "step,", 5);   // csv heads
        bool keep = line[n - 1] == '\n' && (header || (k && e >= 1 && e <= limit));
        if (keep) fputs(line, out);
        else dropped++;
    }
    free(line);
    fclose(in);
    if (out && atomic_fclose(out, tmp, path, e2, sizeof e2) == 0) {
        if (dropped)
            fprintf(r->log, "%s: dropped %d row%s past %s %lld (written before the "
                    "interruption)\n", path, dropped, dropped == 1 ? "" : "s",
                    strcmp(name, "steps.csv") ? "epoch" : "step", (long long)limit);
    }
}

// What a checkpoint inside an epoch keeps of it: the loss and correct sums over
// all ranks (every rank calls this at the same step) and the samples seen.
static void epoch_partial_set(run *r, double loss_sum, int64_t correct, int64_t seen) {
    double red[2] = {loss_sum, (double)correct};
    if (dist_active()) dist_allreduce_sum_f64(red, 2);
    r->ci.epoch_partial[0] = red[0];
    r->ci.epoch_partial[1] = red[1];
    r->ci.epoch_partial[2] = (double)seen;
}

static int save_ckpt(run *r, const char *name, char *err, size_t errlen) {
    if (!dist_is_root()) return 0;   // rank 0 alone writes
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", r->o.out_dir, name);
    ckpt_info_add_rng(&r->ci, "drop_path", &r->drop_rng);
    r->ci.global_step = r->step;
    return ckpt_save(path, r->s, r->opt, &r->ci, err, errlen);
}

// ---- train.ema: the averaged weights evaluated alongside the raw ones ----

static int ema_epoch_eval(run *r, const eval_args *ea, int epoch, char *err, size_t errlen) {
    confusion_init(&r->ema_cm, poster_options(r->model)->num_classes);
    double loss;
    ema_swap(r->ema, r->s);
    int rc = eval_model(r->model, r->val_ds, ea, &r->ema_cm, &loss, NULL, err, errlen);
    ema_swap(r->ema, r->s);
    if (rc) {
        confusion_free(&r->ema_cm);
        return -1;
    }
    metrics_compute(&r->ema_cm, &r->ema_mt);
    r->ema_evaluated = true;
    fprintf(r->log, "epoch %d/%d: EMA weights (decay %g): %s loss %.4f acc %.4f F1 %.4f "
            "score %.4f\n", epoch + 1, r->o.epochs, r->ema->decay, r->o.eval_split, loss,
            r->ema_mt.accuracy, r->ema_mt.macro_f1, r->ema_mt.score);
    if (dist_is_root()) ema_log_row(r->o.out_dir, epoch + 1, loss, &r->ema_mt);
    return 0;
}

static bool ema_wins(const run *r, const metrics *raw) {
    return r->ema_evaluated && r->ema_mt.accuracy > raw->accuracy;
}

static void ema_epoch_done(run *r) {
    if (!r->ema_evaluated) return;
    metrics_free(&r->ema_mt);
    confusion_free(&r->ema_cm);
    r->ema_evaluated = false;
}

// best.h5 holds the weights that won this epoch's selection and says which.
static int save_best(run *r, const confusion *cm, const metrics *mt, char *err, size_t errlen) {
    const bool use_ema = ema_wins(r, mt);
    snprintf(r->ci.best_weights, sizeof r->ci.best_weights, "%s", use_ema ? "ema" : "raw");
    const struct ema *keep = r->ci.ema;
    r->ci.ema = NULL;   // best.h5's state_dict is the chosen weights
    if (use_ema) ema_swap(r->ema, r->s);
    int rc = save_ckpt(r, "best.h5", err, errlen);
    if (use_ema) ema_swap(r->ema, r->s);
    r->ci.ema = keep;
    r->ci.best_weights[0] = 0;   // last.h5 holds the raw weights (and the EMA)
    if (rc) return -1;
    if (use_ema) save_confusion(r, &r->ema_cm, &r->ema_mt, "confusion");
    else save_confusion(r, cm, mt, "confusion");
    return 0;
}

// ---- data.val_split: the test split, once, with best.h5 ----

static int final_test(run *r, char *err, size_t errlen) {
    char path[1100], weights[8] = "raw";
    snprintf(path, sizeof path, "%s/best.h5", r->o.out_dir);
    ckpt_info bi;
    if (ckpt_load(path, r->s, NULL, &bi, err, errlen)) return -1;
    if (bi.best_weights[0]) snprintf(weights, sizeof weights, "%s", bi.best_weights);
    ckpt_info_free(&bi);
    eval_args ea = {r->o.eval_batch_size, r->image_size, 0, &r->lo, 0, 0};
    ea.workers = (int)config_int(r->c, "data.workers");
    confusion cm;
    confusion_init(&cm, poster_options(r->model)->num_classes);
    double loss;
    if (eval_model(r->model, r->test_ds, &ea, &cm, &loss, NULL, err, errlen)) {
        confusion_free(&cm);
        return -1;
    }
    metrics mt;
    metrics_compute(&cm, &mt);
    fprintf(r->log, "test split '%s' (evaluated once, best.h5 = epoch %d, %s weights, selected "
            "on the held-out validation set): loss %.4f acc %.4f F1 %.4f score %.4f\n",
            r->test_split, r->ci.best_epoch, weights, loss, mt.accuracy, mt.macro_f1, mt.score);
    int rc = 0;
    if (dist_is_root()) {
        snprintf(path, sizeof path, "%s/test.json", r->o.out_dir);
        FILE *f = fopen(path, "w");
        if (!f) {
            snprintf(err, errlen, "cannot write %s", path);
            rc = -1;
        } else {
            fprintf(f, "{\"split\": \"%s\", \"best_epoch\": %d, \"weights\": \"%s\", "
                    "\"test_loss\": %.6f, \"test_acc\": %.6f, \"test_f1\": %.6f, "
                    "\"test_score\": %.6f, \"samples\": %lld}\n",
                    r->test_split, r->ci.best_epoch, weights, loss, mt.accuracy, mt.macro_f1,
                    mt.score, (long long)cm.n);
            fclose(f);
        }
        // the test confusion picture and per-class CSV (test.png, test.csv)
        dataset *keep = r->val_ds;
        r->val_ds = r->test_ds;   // class names
        save_confusion(r, &cm, &mt, "test");
        r->val_ds = keep;
    }
    metrics_free(&mt);
    confusion_free(&cm);
    return rc;
}

static int load_init_list(run *r, const char *list, char *err, size_t errlen) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ') *--end = 0;
        if (!*tok) continue;
        state_report rep;
        memset(&rep, 0, sizeof rep);
        if (ckpt_load_weights(tok, r->s, &rep, r->log, err, errlen)) return -1;
        if (rep.matched == 0) {
            snprintf(err, errlen, "%s: no tensor matches the model by name and shape", tok);
            return -1;
        }
    }
    return 0;
}

// Several ranks: all start from rank 0's state (parameters, buffers, optimizer
// state, drop-path stream, progress), and measure how many drop-path draws a
// sample takes per forward, to draw per shard what one process draws.
static int dist_setup(run *r, const poster_opts *po, char *err, size_t errlen) {
    dist_bcast_store(r->s);
    optimizer *o = r->opt;
    if (o->buf1) dist_bcast(o->buf1, (size_t)o->n * sizeof(float));
    if (o->buf2) dist_bcast(o->buf2, (size_t)o->n * sizeof(float));
    dist_bcast(&o->step, sizeof o->step);
    dist_bcast(&o->buf1_init, sizeof o->buf1_init);
    dist_bcast(&r->drop_rng, sizeof r->drop_rng);
    dist_bcast(&r->step, sizeof r->step);
    dist_bcast(&r->ci.epoch, sizeof r->ci.epoch);
    dist_bcast(&r->ci.batches_done, sizeof r->ci.batches_done);
    r->drop_draws = 0;
    if (po->drop_path_rate > 0) {
        // A training forward of 2 samples on a copy of the stream; the running
        // statistics it moves are put back.
        param_store *s = r->s;
        size_t nb = (size_t)(s->n_float - s->n_train) * sizeof(float);
        float *buf = malloc(nb ? nb : 1);
        int64_t *cnt = malloc((size_t)(s->n_counters ? s->n_counters : 1) * sizeof(int64_t));
        AG_ASSERT(buf && cnt, "out of memory");
        memcpy(buf, s->data + s->n_train, nb);
        memcpy(cnt, s->counters, (size_t)s->n_counters * sizeof(int64_t));
        const int S = r->image_size;
        rng t = r->drop_rng;
        bool prev = ag_no_grad_begin();
        tensor *x = tensor_zeros(4, (int[]){2, 3, S, S});
        poster_forward(r->model, x, true, &t);
        ag_no_grad_end(prev);
        ag_step_reset();
        memcpy(s->data + s->n_train, buf, nb);
        memcpy(s->counters, cnt, (size_t)s->n_counters * sizeof(int64_t));
        free(buf);
        free(cnt);
        int64_t k = dist_rng_distance(&r->drop_rng, &t, 10000000);
        if (k < 0 || k % 2) {
            snprintf(err, errlen, "cannot count the drop-path draws of a forward (%lld)",
                     (long long)k);
            return -1;
        }
        r->drop_draws = k / 2;
    }
    return 0;
}

static int setup(run *r, const train_args *a, char *err, size_t errlen) {
    if (train_opts_from_config(r->c, &r->o, err, errlen) ||
        optim_opts_from_config(r->c, &r->oo, err, errlen) ||
        sched_opts_from_config(r->c, &r->so, err, errlen) ||
        loss_opts_from_config(r->c, &r->lo, err, errlen))
        return -1;
    dist_opts dop;
    dist_opts_from_config(r->c, &dop);
    dist_configure(&dop);
    int threads = r->o.threads;
    if (threads == 0 && dist_local_size() > 1) {
        // Ranks sharing a machine share its cores.
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = (int)(cores / dist_local_size());
        if (threads < 1) threads = 1;
    }
    ops_set_threads(threads);
    if (dataset_open_holdout(r->c, r->o.eval_split, &r->train_ds, &r->val_ds, &r->test_ds,
                             dist_is_root() ? r->log : NULL, err, errlen))
        return -1;
    if (r->test_ds) {   // messages and logs call the held-out set what it is
        snprintf(r->test_split, sizeof r->test_split, "%s", r->o.eval_split);
        snprintf(r->o.eval_split, sizeof r->o.eval_split, "held-out val");
    }
    if (dist_is_root() && train_mkdir_p(r->o.out_dir, err, errlen)) return -1;
    poster_opts po;
    if (train_model_opts(r->c, dataset_num_classes(r->train_ds), &po, err, errlen)) return -1;
    if (!config_has(r->c, "model.num_classes")) {   // recorded for eval/predict
        char kv[64];
        snprintf(kv, sizeof kv, "model.num_classes=%d", po.num_classes);
        if (config_set(r->c, kv, err, errlen)) return -1;
    }
    r->model = poster_create(&po, r->o.seed, err, errlen);
    if (!r->model) return -1;
    r->s = poster_store(r->model);
    r->opt = optim_create(r->s, &r->oo);
    rng_seed(&r->drop_rng, r->o.seed ^ 0x6472f970a7ULL);
    ckpt_info_init(&r->ci);
    if (a->resume) {
        ckpt_info tmp;
        if (ckpt_load(a->resume, r->s, r->opt, &tmp, err, errlen)) return -1;
        r->ci = tmp;
        if (ckpt_info_get_rng(&r->ci, "drop_path", &r->drop_rng)) {
            snprintf(err, errlen, "%s: no drop_path RNG state", a->resume);
            return -1;
        }
        r->step = r->ci.global_step;
        fprintf(r->log, "resumed from %s: %d epochs done, step %lld, best accuracy %.4f\n",
                a->resume, r->ci.epoch, (long long)r->step, r->ci.best_acc);
        if (dist_is_root()) {
            // csv rows start with the epoch; jsonl rows carry "epoch": N
            logs_truncate(r, "log.csv", "", r->ci.epoch);
            logs_truncate(r, "log.jsonl", "\"epoch\": ", r->ci.epoch);
            logs_truncate(r, "steps.csv", "", r->step);
        }
    } else {
        // fresh run: the backbones first (as the official model's constructor), then train.init
        if (poster_load_pretrained(r->model, r->c, NULL, r->log, err, errlen)) return -1;
        if (r->o.init[0] && load_init_list(r, r->o.init, err, errlen)) return -1;
        if (a->init && load_init_list(r, a->init, err, errlen)) return -1;
    }

    char *dump = config_dump(r->c);
    free(r->ci.config_text);
    r->ci.config_text = dump;
    {   // class names travel with the weights (predict needs no dataset)
        size_t cap = 1, len = 0;
        for (int k = 0; k < dataset_num_classes(r->train_ds); k++)
            cap += strlen(dataset_class_name(r->train_ds, k)) + 1;
        free(r->ci.class_names);
        r->ci.class_names = malloc(cap);
        AG_ASSERT(r->ci.class_names != NULL, "out of memory");
        r->ci.class_names[0] = 0;
        for (int k = 0; k < dataset_num_classes(r->train_ds); k++)
            len += (size_t)snprintf(r->ci.class_names + len, cap - len, "%s\n",
                                    dataset_class_name(r->train_ds, k));
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/config.ini", r->o.out_dir);
    FILE *f = dist_is_root() ? fopen(path, "w") : NULL;
    if (f) {
        fputs(dump, f);
        fclose(f);
    }
    loader_opts lo;
    train_loader_opts(r->c, &lo, r->o.batch_size, true);
    lo.seed = r->o.seed;
    r->image_size = lo.image_size;
    r->L = loader_create(r->train_ds, &lo, err, errlen);
    if (!r->L) return -1;
    if (dist_active() && dist_setup(r, &po, err, errlen)) return -1;
    // The average starts at the initial weights (rank 0's, after dist_setup), or
    // continues the checkpoint's.
    r->ema = ema_create_from_config(r->c, r->s);
    if (r->ema && a->resume && ema_load_ckpt(r->ema, r->s, a->resume, r->log, err, errlen))
        return -1;
    r->ci.ema = r->ema;
    const int S = r->image_size;
    r->img = malloc((size_t)r->o.batch_size * 3 * S * S * sizeof(float));
    r->lab = malloc((size_t)r->o.batch_size * sizeof(int64_t));
    AG_ASSERT(r->img && r->lab, "out of memory");
    return 0;
}

static void teardown(run *r) {
    free(r->img);
    free(r->lab);
    if (r->steps_f) fclose(r->steps_f);
    if (r->L) loader_free(r->L);
    if (r->train_ds) dataset_close(r->train_ds);
    if (r->val_ds) dataset_close(r->val_ds);
    if (r->test_ds) dataset_close(r->test_ds);
    ema_free(r->ema);
    optim_free(r->opt);
    if (r->model) poster_free(r->model);
    ckpt_info_free(&r->ci);
    ag_step_reset();
}

int train_run(config *c, const train_args *a, train_result *res, char *err, size_t errlen) {
    run R;
    memset(&R, 0, sizeof R);
    run *r = &R;
    r->c = c;
    r->log = a->log ? a->log : stderr;
    // Rank 0 reports for the job; the others' messages would repeat its own.
    FILE *quiet = dist_is_root() ? NULL : fopen("/dev/null", "w");
    if (quiet) r->log = quiet;
    if (res) memset(res, 0, sizeof(*res));
    int rc = setup(r, a, err, errlen);
    if (rc) {
        teardown(r);
        if (quiet) fclose(quiet);
        return rc;
    }
    const int bpe_full = loader_batches_per_epoch(r->L);
    const int bpe = r->o.max_batches && r->o.max_batches < bpe_full ? r->o.max_batches : bpe_full;
    const bool tty = isatty(fileno(stderr));
    if (!dist_is_root()) r->o.progress = 0;   // rank 0 reports for the job
    fprintf(r->log, "training %d epochs x %d batches of %d (micro-batch %d), %s%s, lr %g, "
            "%d train / %d %s samples -> %s\n",
            r->o.epochs, bpe, r->o.batch_size, r->o.micro_batch, r->oo.sam ? "SAM + " : "",
            optim_name(r->oo.kind), r->oo.lr, dataset_size(r->train_ds), dataset_size(r->val_ds),
            r->o.eval_split, r->o.out_dir);
    const double t_run = now_s();
    int64_t steps_this_run = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    g_stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int stop_sig = 0;
    bool at_max = false;   // train.max_steps reached
    for (int epoch = r->ci.epoch; epoch < r->o.epochs && rc == 0 && !at_max; epoch++) {
        if (r->o.max_steps && r->step >= r->o.max_steps) {
            fprintf(r->log, "step %lld: train.max_steps = %lld reached, nothing to do\n",
                    (long long)r->step, (long long)r->o.max_steps);
            break;
        }
        const double t0 = now_s();
        loader_start_epoch(r->L, epoch);
        int start_batch = epoch == r->ci.epoch ? r->ci.batches_done : 0;
        if (start_batch) loader_seek(r->L, epoch, start_batch);
        double loss_sum = 0, lr = r->oo.lr;
        int64_t correct = 0, seen = 0, seen_local = 0;
        if (start_batch) {
            // The interrupted epoch's sums so far (over all ranks; rank 0 carries
            // them into the epoch-end reduction), so its logged means cover it all.
            seen = seen_local = (int64_t)r->ci.epoch_partial[2];
            if (dist_is_root()) {
                loss_sum = r->ci.epoch_partial[0];
                correct = (int64_t)r->ci.epoch_partial[1];
            }
        }
        double last_print = 0;
        int stop_batch = bpe;   // < bpe: train.max_steps stopped the epoch there
        for (int b = start_batch; b < bpe; b++) {
            int n = loader_next(r->L, r->img, r->lab, err, errlen);
            if (n < 0) {
                rc = -1;
                break;
            }
            if (n == 0) break;
            lr = sched_lr(&r->so, r->oo.lr, epoch, b, bpe);
            optim_set_lr(r->opt, lr);
            double l;
            int64_t ok, first, count;
            dist_shard(n, dist_rank(), dist_size(), &first, &count);   // this rank's share
            int st = train_step(r, (int)first, (int)count, n, epoch, b, &l, &ok, err, errlen);
            if (st < 0) {
                rc = -1;
                break;
            }
            r->step++;
            steps_this_run++;
            if (st == 0) {
                loss_sum += l;
                correct += ok;
                seen += n;
                seen_local += count;
                log_step(r, epoch, b, lr, l, ok, n);
            }
            if (b + 1 < bpe && (stop_sig = stop_requested())) {
                // Mid-epoch: last.h5 records the position, the resumed run goes on from it.
                r->ci.epoch = epoch;
                r->ci.batches_done = b + 1;
                r->ci.last_lr = lr;
                epoch_partial_set(r, loss_sum, correct, seen);
                char e2[1024] = "";
                if (save_ckpt(r, "last.h5", e2, sizeof e2))
                    snprintf(err, errlen, "stopped by %s; %s", strsignal(stop_sig), e2);
                else
                    snprintf(err, errlen, "stopped by %s after step %lld (epoch %d, batch %d of "
                             "%d); saved %s/last.h5; resume with: poster train --resume "
                             "%s/last.h5", strsignal(stop_sig), (long long)r->step, epoch + 1,
                             b + 1, bpe, r->o.out_dir, r->o.out_dir);
                rc = -1;
                break;
            }
            at_max = r->o.max_steps && r->step >= r->o.max_steps;
            double t = now_s();
            if (r->o.progress && (t - last_print > (tty ? 0.5 : 30) || b == bpe - 1)) {
                last_print = t;
                double el = t - t0, per_batch = el / (b - start_batch + 1);
                double eta = per_batch * ((bpe - b - 1) + (double)bpe * (r->o.epochs - epoch - 1));
                char eta_s[32];
                fmt_hms(eta, eta_s, sizeof eta_s);
                fprintf(stderr, "%sepoch %d/%d [%d/%d] %.1f samples/s ETA %s loss %.4f acc %.4f "
                        "lr %.3g%s",
                        tty ? "\r" : "", epoch + 1, r->o.epochs, b + 1, bpe,
                        seen / (el > 0 ? el : 1), eta_s,
                        seen_local ? loss_sum / seen_local : NAN,
                        seen_local ? (double)correct / seen_local : 0.0, lr,
                        tty ? "\033[K" : "\n");
                fflush(stderr);
            }
            if (at_max) {
                stop_batch = b + 1;
                break;
            }
        }
        if (r->o.progress && tty) fputc('\n', stderr);
        if (rc) break;
        if (stop_batch < bpe) {
            // train.max_steps within the epoch: a checkpoint at this position, as
            // at an epoch end, from which --resume continues with the next batch.
            r->ci.epoch = epoch;
            r->ci.batches_done = loader_position(r->L);
            r->ci.last_lr = lr;
            epoch_partial_set(r, loss_sum, correct, seen);
            if (save_ckpt(r, "last.h5", err, errlen)) rc = -1;
            else
                fprintf(r->log, "train.max_steps = %lld reached in epoch %d after batch %d of %d; "
                        "wrote %s/last.h5\n", (long long)r->o.max_steps, epoch + 1, stop_batch,
                        bpe, r->o.out_dir);
            break;
        }
        // The epoch's training loss and accuracy over all ranks' samples.
        double red[2] = {loss_sum, (double)correct};
        dist_allreduce_sum_f64(red, 2);
        loss_sum = red[0];
        correct = (int64_t)red[1];
        if (dist_options()->check_params) {
            char when[64];
            snprintf(when, sizeof when, "after epoch %d", epoch + 1);
            if (dist_param_hash_check(r->s, when, err, errlen)) {
                rc = -1;
                break;
            }
        }
        // ---- end of epoch: evaluate, log, checkpoint, pictures ----
        r->ci.epoch = epoch + 1;
        r->ci.batches_done = 0;
        r->ci.last_lr = lr;
        double row[CKPT_HIST_COLS];
        for (int i = 0; i < CKPT_HIST_COLS; i++) row[i] = NAN;
        row[HIST_EPOCH] = epoch + 1;
        row[HIST_LR] = lr;
        row[HIST_TRAIN_LOSS] = seen ? loss_sum / seen : NAN;
        row[HIST_TRAIN_ACC] = seen ? (double)correct / seen : NAN;
        bool do_eval = (epoch + 1) % r->o.eval_every == 0 || epoch + 1 == r->o.epochs;
        bool improved = false;
        confusion cm;
        metrics mt;
        memset(&mt, 0, sizeof mt);
        confusion_init(&cm, poster_options(r->model)->num_classes);
        if (do_eval) {
            eval_args ea = {r->o.eval_batch_size, r->image_size, 0, &r->lo, 0, 0};
            if (config_find_key(c, "data.workers")) ea.workers = (int)config_int(c, "data.workers");
            double vloss;
            if (eval_model(r->model, r->val_ds, &ea, &cm, &vloss, NULL, err, errlen)) {
                rc = -1;
                confusion_free(&cm);
                break;
            }
            metrics_compute(&cm, &mt);
            row[HIST_VAL_LOSS] = vloss;
            row[HIST_VAL_ACC] = mt.accuracy;
            row[HIST_VAL_F1] = mt.macro_f1;
            row[HIST_VAL_SCORE] = mt.score;
            if (r->ema && ema_epoch_eval(r, &ea, epoch, err, errlen)) {
                rc = -1;
                metrics_free(&mt);
                confusion_free(&cm);
                break;
            }
            // Model selection over the raw and (train.ema) the averaged weights.
            const double sel = ema_wins(r, &mt) ? r->ema_mt.accuracy : mt.accuracy;
            improved = sel > r->ci.best_acc;
            if (improved) {
                r->ci.best_acc = sel;
                r->ci.best_epoch = epoch + 1;
            }
        }
        row[HIST_SECONDS] = now_s() - t0;
        ckpt_info_push_hist(&r->ci, row);
        fprintf(r->log, "epoch %d/%d: train loss %.4f acc %.4f", epoch + 1, r->o.epochs,
                row[HIST_TRAIN_LOSS], row[HIST_TRAIN_ACC]);
        if (do_eval)
            fprintf(r->log, " | %s loss %.4f acc %.4f F1 %.4f score %.4f%s", r->o.eval_split,
                    row[HIST_VAL_LOSS], mt.accuracy, mt.macro_f1, mt.score,
                    improved ? " (best)" : "");
        fprintf(r->log, " | lr %.3g, %.1f s\n", lr, row[HIST_SECONDS]);
        // last.h5 is the commit point of the epoch: best.h5 (the weights that won this
        // epoch's selection), pictures and log rows are written first, so a crash before
        // it repeats the epoch (identically) and rewrites them.
        if (improved && save_best(r, &cm, &mt, err, errlen)) rc = -1;
        draw_curves(r);
        write_logs(r, row);
        if (rc == 0 && save_ckpt(r, "last.h5", err, errlen)) rc = -1;
        ema_epoch_done(r);
        if (do_eval) metrics_free(&mt);
        confusion_free(&cm);
        if (res) {
            if (res->epochs_done == 0) {
                res->first_train_loss = row[HIST_TRAIN_LOSS];
                res->first_train_acc = row[HIST_TRAIN_ACC];
            }
            res->epochs_done++;
            res->last_train_loss = row[HIST_TRAIN_LOSS];
            res->last_train_acc = row[HIST_TRAIN_ACC];
            if (do_eval) res->last_val_acc = row[HIST_VAL_ACC];
        }
        if (rc == 0 && epoch + 1 < r->o.epochs && (stop_sig = stop_requested())) {
            snprintf(err, errlen, "stopped by %s after epoch %d; saved %s/last.h5; resume with: "
                     "poster train --resume %s/last.h5", strsignal(stop_sig), epoch + 1,
                     r->o.out_dir, r->o.out_dir);
            rc = -1;
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc == 0)
        fprintf(r->log, "done in %.1f s (%lld steps); best %s accuracy %.4f at epoch %d; "
                "outputs in %s\n",
                now_s() - t_run, (long long)steps_this_run, r->o.eval_split, r->ci.best_acc,
                r->ci.best_epoch, r->o.out_dir);
    if (res) {
        res->steps = r->step;
        res->skipped_steps = r->skipped;
        res->best_val_acc = r->ci.best_acc;
        res->best_epoch = r->ci.best_epoch;
        res->n_params = r->s->n_float;
        res->params = malloc((size_t)(r->s->n_float ? r->s->n_float : 1) * sizeof(float));
        memcpy(res->params, r->s->data, (size_t)r->s->n_float * sizeof(float));
        res->n_counters = r->s->n_counters;
        res->counters = malloc((size_t)(r->s->n_counters ? r->s->n_counters : 1) * sizeof(int64_t));
        memcpy(res->counters, r->s->counters, (size_t)r->s->n_counters * sizeof(int64_t));
    }
    // after res took the final weights: this loads best.h5's
    if (rc == 0 && r->test_ds) rc = final_test(r, err, errlen);
    teardown(r);
    if (quiet) fclose(quiet);
    return rc;
}
