// `poster sweep` (see sweep.h). Each run is a child `poster train` process (this
// same program), so a run is exactly what `poster train` does, crashes stay in
// their run, and --jobs runs several at once with the cores split between them.
// A run's folder holds run.ini (the recipe's keys + the combination + the seed),
// train.log (the child's output), the usual training outputs, and sweep_done
// once it has finished.
#include "train/sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "eval/plot.h"
#include "layers/poster.h"
#include "train/trainer.h"

#define SWEEP_MAX_GRIDS 8
#define SWEEP_MAX_VALUES 32

static const config_key k_sweep[] = {
    {"sweep.grid", CK_STR, "", 0, 0, NULL,
     "poster sweep: grids 'key=v1,v2; key2=w1,w2' (--grid adds or replaces); ignored by "
     "poster train"},
    {"sweep.seeds", CK_INT, "1", 1, 1000, NULL,
     "poster sweep: seeds per combination (train.seed, train.seed + 1, ...)"},
    {"sweep.out", CK_STR, "runs/sweep", 0, 0, NULL, "poster sweep: output folder"},
    {"sweep.jobs", CK_INT, "1", 1, SWEEP_MAX_JOBS, NULL,
     "poster sweep: runs at once (the cores are split between them)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void sweep_config_register(config *c) { config_register(c, k_sweep); }

// ---------------------------------------------------------------------------
// Reading a run's logs

sweep_stat sweep_stats(const double *v, int n) {
    sweep_stat s = {0, NAN, NAN, NAN, NAN};
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (!s.n || v[i] < s.min) s.min = v[i];
            if (!s.n || v[i] > s.max) s.max = v[i];
            sum += v[i];
            s.n++;
        }
    if (!s.n) return s;
    s.mean = sum / s.n;
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) ss += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = s.n > 1 ? sqrt(ss / (s.n - 1)) : 0;
    return s;
}

// A CSV log with a header: the named columns of every row, indexed by epoch
// (a later row of the same epoch replaces an earlier one).
typedef struct csv_log {
    int max_epoch;
    double *v;          // [(max_epoch + 1) * ncol], NaN where absent
    bool *has;          // [max_epoch + 1]
    int ncol;
} csv_log;

static void csv_log_free(csv_log *l) {
    free(l->v);
    free(l->has);
    memset(l, 0, sizeof *l);
}

// Returns 1 when the file does not exist, 0 when read, -1 on a malformed file.
static int csv_log_read(const char *path, const char *const *cols, int ncol, csv_log *l,
                        char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    l->ncol = ncol;
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    char line[4096];
    int idx[16], epoch_col = -1, lineno = 1;
    for (int j = 0; j < ncol; j++) idx[j] = -1;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        snprintf(err, errlen, "%s: empty file", path);
        return -1;
    }
    {   // header: find the columns by name (other columns may be added)
        line[strcspn(line, "\r\n")] = 0;
        int c = 0;
        for (char *save = NULL, *t = strtok_r(line, ",", &save); t;
             t = strtok_r(NULL, ",", &save), c++) {
            if (!strcmp(t, "epoch")) epoch_col = c;
            for (int j = 0; j < ncol; j++)
                if (!strcmp(t, cols[j])) idx[j] = c;
        }
    }
    for (int j = 0; j < ncol; j++)
        if (idx[j] < 0 || epoch_col < 0) {
            fclose(f);
            snprintf(err, errlen, "%s: no column '%s' in the header", path,
                     epoch_col < 0 ? "epoch" : cols[j]);
            return -1;
        }
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        double fields[64];
        int nf = 0;
        for (char *p = line; nf < 64;) {   // empty fields are NaN
            char *end;
            fields[nf++] = strtod(p, &end);
            if (end == p) fields[nf - 1] = NAN;
            char *comma = strchr(p, ',');
            if (!comma) break;
            p = comma + 1;
        }
        if (epoch_col >= nf || !(fields[epoch_col] >= 1) || fields[epoch_col] > 1e7) {
            fclose(f);
            csv_log_free(l);
            snprintf(err, errlen, "%s:%d: malformed row", path, lineno);
            return -1;
        }
        int e = (int)fields[epoch_col];
        if (e > l->max_epoch) {
            l->v = realloc(l->v, (size_t)(e + 1) * ncol * sizeof(double));
            l->has = realloc(l->has, (size_t)(e + 1) * sizeof(bool));
            AG_ASSERT(l->v && l->has, "out of memory");
            for (int k = l->max_epoch + (l->max_epoch ? 1 : 0); k <= e; k++) {
                l->has[k] = false;
                for (int j = 0; j < ncol; j++) l->v[(size_t)k * ncol + j] = NAN;
            }
            l->max_epoch = e;
        }
        l->has[e] = true;
        for (int j = 0; j < ncol; j++)
            l->v[(size_t)e * ncol + j] = idx[j] < nf ? fields[idx[j]] : NAN;
    }
    fclose(f);
    return 0;
}

static double json_number(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    if (!p) return NAN;
    char *end;
    double v = strtod(p + strlen(pat), &end);
    return end == p + strlen(pat) ? NAN : v;
}

int sweep_read_run(const char *dir, sweep_run_metrics *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->best_acc = m->best_f1 = m->best_score = m->final_acc = m->sec_per_epoch = NAN;
    m->test_acc = m->test_f1 = m->test_score = NAN;
    char path[1700];
    static const char *const cols[] = {"val_acc", "val_f1", "val_score", "seconds"};
    static const char *const ecols[] = {"val_acc", "val_f1", "val_score"};
    csv_log raw, em;
    snprintf(path, sizeof path, "%s/log.csv", dir);
    int rc = csv_log_read(path, cols, 4, &raw, err, errlen);
    if (rc) {
        if (rc == 1) snprintf(err, errlen, "%s: no such file", path);
        return -1;
    }
    snprintf(path, sizeof path, "%s/ema.csv", dir);
    rc = csv_log_read(path, ecols, 3, &em, err, errlen);
    if (rc < 0) {
        csv_log_free(&raw);
        return -1;
    }
    double best = -1, secs = 0;
    int nsec = 0;
    for (int e = 1; e <= raw.max_epoch; e++) {
        if (!raw.has[e]) continue;
        const double *r = raw.v + (size_t)e * 4;
        m->epochs++;
        if (isfinite(r[3])) secs += r[3], nsec++;
        if (isfinite(r[0])) m->final_acc = r[0];
        // as the trainer selects: the EMA weights when strictly better, a new best
        // when strictly better than every earlier epoch
        const double *src = r;
        bool is_ema = false;
        if (em.has && e <= em.max_epoch && em.has[e]) {
            const double *q = em.v + (size_t)e * 3;
            if (isfinite(q[0]) && (!isfinite(r[0]) || q[0] > r[0])) src = q, is_ema = true;
        }
        if (isfinite(src[0]) && src[0] > best) {
            best = src[0];
            m->best_epoch = e;
            m->best_acc = src[0];
            m->best_f1 = src[1];
            m->best_score = src[2];
            m->best_is_ema = is_ema;
        }
    }
    m->sec_per_epoch = nsec ? secs / nsec : NAN;
    csv_log_free(&raw);
    csv_log_free(&em);
    if (!m->best_epoch) {
        snprintf(err, errlen, "%s/log.csv: no evaluated epoch", dir);
        return -1;
    }
    // the final test (data.val_split)
    snprintf(path, sizeof path, "%s/test.json", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char text[2048];
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
        m->test_acc = json_number(text, "test_acc");
        m->test_f1 = json_number(text, "test_f1");
        m->test_score = json_number(text, "test_score");
    }
    return 0;
}

// ---------------------------------------------------------------------------
// The plan: grids, combinations, runs

typedef struct grid {
    char key[96];
    int n;
    char val[SWEEP_MAX_VALUES][128];
} grid;

typedef struct combo {
    char label[1024];        // "model.depth=4,model.pyramid_levels=2" (folder name)
    int vi[SWEEP_MAX_GRIDS];   // value index per grid
    int64_t params;          // trainable parameters (0 = not known yet)
} combo;

enum { RUN_PENDING, RUN_RUNNING, RUN_DONE, RUN_FAILED };

typedef struct srun {
    int combo;
    uint64_t seed;
    char dir[1600];
    int state;
    pid_t pid;
    double t0;
} srun;

typedef struct sweep {
    config *base;
    grid g[SWEEP_MAX_GRIDS];
    int ng;
    int seeds;
    uint64_t seed0;
    char out[512];
    int jobs, threads;       // threads per run when jobs > 1 (0 = the recipe's)
    combo *combos;
    int nc;
    srun *runs;
    int nr;
    char cmdline[4096];
} sweep;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

// "key=v1,v2,v3" into g (the key must be registered)
static int parse_grid(const config *c, const char *spec, grid *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    while (*spec == ' ') spec++;
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec) {
        snprintf(err, errlen, "--grid %s: expected section.key=value1,value2,...", spec);
        return -1;
    }
    snprintf(g->key, sizeof g->key, "%.*s", (int)(eq - spec), spec);
    for (char *e = g->key + strlen(g->key); e > g->key && e[-1] == ' ';) *--e = 0;
    if (!config_find_key(c, g->key)) {
        snprintf(err, errlen, "--grid %s: unknown key '%s' (`poster train --help` lists the keys)",
                 spec, g->key);
        return -1;
    }
    if (!strcmp(g->key, "train.seed") || !strcmp(g->key, "train.out_dir") ||
        !strncmp(g->key, "sweep.", 6)) {
        snprintf(err, errlen, "--grid %s: %s is set by the sweep itself (use --seeds / --out)",
                 spec, g->key);
        return -1;
    }
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", eq + 1);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        for (char *e = t + strlen(t); e > t && e[-1] == ' ';) *--e = 0;
        if (!*t) continue;
        if (g->n == SWEEP_MAX_VALUES || strlen(t) >= sizeof g->val[0]) {
            snprintf(err, errlen, "--grid %s: more than %d values or a value too long", spec,
                     SWEEP_MAX_VALUES);
            return -1;
        }
        snprintf(g->val[g->n++], sizeof g->val[0], "%s", t);
    }
    if (!g->n) {
        snprintf(err, errlen, "--grid %s: no values", spec);
        return -1;
    }
    return 0;
}

static int add_grid(sweep *sw, const char *spec, char *err, size_t errlen) {
    grid g;
    if (parse_grid(sw->base, spec, &g, err, errlen)) return -1;
    for (int i = 0; i < sw->ng; i++)
        if (!strcmp(sw->g[i].key, g.key)) {   // a later --grid of the same key replaces
            sw->g[i] = g;
            return 0;
        }
    if (sw->ng == SWEEP_MAX_GRIDS) {
        snprintf(err, errlen, "at most %d grids", SWEEP_MAX_GRIDS);
        return -1;
    }
    sw->g[sw->ng++] = g;
    return 0;
}

// The configuration of run (combo, seed): the recipe, the combination, the seed.
static int run_config(const sweep *sw, int ci, uint64_t seed, config *out, char *err,
                      size_t errlen) {
    memcpy(out, sw->base, sizeof *out);
    char kv[800];
    for (int i = 0; i < sw->ng; i++) {
        snprintf(kv, sizeof kv, "%s=%s", sw->g[i].key, sw->g[i].val[sw->combos[ci].vi[i]]);
        if (config_set(out, kv, err, errlen)) return -1;
    }
    snprintf(kv, sizeof kv, "train.seed=%llu", (unsigned long long)seed);
    if (config_set(out, kv, err, errlen)) return -1;
    if (config_validate(out, err, errlen)) {
        size_t k = strlen(err);
        snprintf(err + k, errlen - k, " (combination %s, seed %llu)", sw->combos[ci].label,
                 (unsigned long long)seed);
        return -1;
    }
    return 0;
}

// The keys a run sets explicitly (not the whole resolved dump: unset keys keep
// their "follow the dataset" defaults, e.g. model.num_classes), without the
// sweep's own keys and the output folder (given by --out).
static int write_run_ini(const config *c, const char *path, char *err, size_t errlen) {
    char tmp[1800];
    FILE *f = atomic_fopen(path, "w", tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    fprintf(f, "# written by poster sweep: the recipe's keys, this combination and seed\n");
    char sec[96] = "";
    for (int i = 0; i < c->n; i++) {
        const config_entry *e = &c->entries[i];
        if (!strncmp(e->key, "sweep.", 6) || !strcmp(e->key, "train.out_dir")) continue;
        const char *dot = strchr(e->key, '.');
        if (!dot) continue;
        if (strncmp(sec, e->key, (size_t)(dot - e->key)) || sec[dot - e->key]) {
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - e->key), e->key);
            fprintf(f, "\n[%s]\n", sec);
        }
        fprintf(f, "%s = %s\n", dot + 1, e->value);
    }
    return atomic_fclose(f, tmp, path, err, errlen);
}

// Epochs recorded in a checkpoint (progress/epoch), -1 when unreadable.
static int ckpt_epochs(const char *path) {
    char err[256];
    h5_quiet();
    hid_t f = h5_open_read(path, err, sizeof err);
    if (f < 0) return -1;
    int64_t *v = NULL;
    int nd, shape[T_MAXDIM], e = -1;
    if (h5_read_int64s(f, "progress/epoch", &v, &nd, shape, err, sizeof err) == 0) e = (int)v[0];
    free(v);
    h5_close(f);
    return e;
}

// Trainable parameters (as `poster info` counts them) from a run's config.ini.
static int64_t count_params(const char *run_dir) {
    static config c;
    char path[1700], err[1024];
    config_init(&c);
    train_config_register(&c);
    snprintf(path, sizeof path, "%s/config.ini", run_dir);
    if (config_load(&c, path, err, sizeof err) || config_validate(&c, err, sizeof err)) return 0;
    poster_opts po;
    if (train_model_opts(&c, 0, &po, err, sizeof err)) return 0;
    poster_model *m = poster_create(&po, 0, err, sizeof err);
    if (!m) return 0;
    const param_store *s = poster_store(m);
    int64_t n = store_count(s, PARAM_TRAINABLE) + store_count(s, PARAM_UNUSED);
    poster_free(m);
    return n;
}

// ---------------------------------------------------------------------------
// The summary

typedef struct combo_sum {
    int runs;
    sweep_stat acc, f1, score, final, test_acc, test_f1, test_score, secs;
    double *accs;    // [runs] best validation accuracy per finished seed (the picture)
} combo_sum;

static void fmt_stat(char *buf, size_t n, const sweep_stat *s, bool percent) {
    double k = percent ? 100 : 1;
    if (!s->n) snprintf(buf, n, "-");
    else if (s->n == 1) snprintf(buf, n, "%.2f", k * s->mean);
    else snprintf(buf, n, "%.2f ± %.2f [%.2f, %.2f]", k * s->mean, k * s->sd, k * s->min, k * s->max);
}

static void csv_stat(FILE *f, const sweep_stat *s) {
    if (!s->n) fprintf(f, ",,,,");
    else fprintf(f, ",%.6f,%.6f,%.6f,%.6f", s->mean, s->sd, s->min, s->max);
}

static int write_summary(sweep *sw, FILE *log) {
    char path[1200], tmp[1300], err[1024];
    combo_sum *cs = calloc((size_t)sw->nc, sizeof *cs);
    sweep_run_metrics *rm = calloc((size_t)sw->nr, sizeof *rm);
    bool *ok = calloc((size_t)sw->nr, sizeof(bool));
    double *buf = malloc((size_t)sw->nr * 8 * sizeof(double));
    AG_ASSERT(cs && rm && ok && buf, "out of memory");
    int finished = 0;
    bool any_test = false, any_ema = false;
    for (int i = 0; i < sw->nr; i++) {
        if (sw->runs[i].state != RUN_DONE) continue;
        if (sweep_read_run(sw->runs[i].dir, &rm[i], err, sizeof err)) {
            fprintf(log, "sweep: %s (left out of the summary)\n", err);
            continue;
        }
        ok[i] = true;
        finished++;
        any_test |= isfinite(rm[i].test_acc);
        any_ema |= rm[i].best_is_ema;
        combo *c = &sw->combos[sw->runs[i].combo];
        if (!c->params) c->params = count_params(sw->runs[i].dir);
    }
    for (int ci = 0; ci < sw->nc; ci++) {
        double *v[8];
        for (int k = 0; k < 8; k++) v[k] = buf + (size_t)k * sw->nr;
        int n = 0;
        for (int i = 0; i < sw->nr; i++) {
            if (!ok[i] || sw->runs[i].combo != ci) continue;
            const sweep_run_metrics *m = &rm[i];
            const double x[8] = {m->best_acc, m->best_f1, m->best_score, m->final_acc,
                                 m->test_acc, m->test_f1, m->test_score, m->sec_per_epoch};
            for (int k = 0; k < 8; k++) v[k][n] = x[k];
            n++;
        }
        combo_sum *s = &cs[ci];
        s->runs = n;
        s->acc = sweep_stats(v[0], n);
        s->f1 = sweep_stats(v[1], n);
        s->score = sweep_stats(v[2], n);
        s->final = sweep_stats(v[3], n);
        s->test_acc = sweep_stats(v[4], n);
        s->test_f1 = sweep_stats(v[5], n);
        s->test_score = sweep_stats(v[6], n);
        s->secs = sweep_stats(v[7], n);
        s->accs = malloc((size_t)(n ? n : 1) * sizeof(double));
        memcpy(s->accs, v[0], (size_t)n * sizeof(double));
    }
    int rc = 0;
    // runs.csv: one row per run
    snprintf(path, sizeof path, "%s/runs.csv", sw->out);
    FILE *f = atomic_fopen(path, "w", tmp, sizeof tmp, err, sizeof err);
    if (f) {
        for (int g = 0; g < sw->ng; g++) fprintf(f, "%s,", sw->g[g].key);
        fprintf(f, "seed,status,best_epoch,best_weights,val_acc,val_f1,val_score,final_acc,"
                "test_acc,test_f1,test_score,epochs,sec_per_epoch,dir\n");
        for (int i = 0; i < sw->nr; i++) {
            const srun *r = &sw->runs[i];
            for (int g = 0; g < sw->ng; g++)
                fprintf(f, "%s,", sw->g[g].val[sw->combos[r->combo].vi[g]]);
            const char *st = r->state == RUN_DONE ? (ok[i] ? "finished" : "unreadable")
                             : r->state == RUN_FAILED ? "failed" : r->state == RUN_RUNNING
                             ? "running" : "pending";
            fprintf(f, "%llu,%s", (unsigned long long)r->seed, st);
            if (ok[i]) {
                const sweep_run_metrics *m = &rm[i];
                fprintf(f, ",%d,%s,%.6f,%.6f,%.6f,%.6f", m->best_epoch,
                        m->best_is_ema ? "ema" : "raw", m->best_acc, m->best_f1, m->best_score,
                        m->final_acc);
                if (isfinite(m->test_acc))
                    fprintf(f, ",%.6f,%.6f,%.6f", m->test_acc, m->test_f1, m->test_score);
                else fprintf(f, ",,,");
                fprintf(f, ",%d,%.2f", m->epochs, m->sec_per_epoch);
            } else {
                fprintf(f, ",,,,,,,,,,");
            }
            fprintf(f, ",%s\n", r->dir);
        }
        if (atomic_fclose(f, tmp, path, err, sizeof err)) rc = -1;
    } else rc = -1;
    // summary.csv: one row per combination
    snprintf(path, sizeof path, "%s/summary.csv", sw->out);
    f = atomic_fopen(path, "w", tmp, sizeof tmp, err, sizeof err);
    if (f) {
        for (int g = 0; g < sw->ng; g++) fprintf(f, "%s,", sw->g[g].key);
        fprintf(f, "runs");
        const char *names[] = {"val_acc", "val_f1", "val_score", "final_acc", "test_acc",
                               "test_f1", "test_score"};
        for (int k = 0; k < 7; k++)
            fprintf(f, ",%s_mean,%s_std,%s_min,%s_max", names[k], names[k], names[k], names[k]);
        fprintf(f, ",params,sec_per_epoch\n");
        for (int ci = 0; ci < sw->nc; ci++) {
            const combo_sum *s = &cs[ci];
            for (int g = 0; g < sw->ng; g++)
                fprintf(f, "%s,", sw->g[g].val[sw->combos[ci].vi[g]]);
            fprintf(f, "%d", s->runs);
            const sweep_stat *st[] = {&s->acc, &s->f1, &s->score, &s->final, &s->test_acc,
                                      &s->test_f1, &s->test_score};
            for (int k = 0; k < 7; k++) csv_stat(f, st[k]);
            if (sw->combos[ci].params) fprintf(f, ",%lld", (long long)sw->combos[ci].params);
            else fprintf(f, ",");
            if (s->secs.n) fprintf(f, ",%.2f\n", s->secs.mean);
            else fprintf(f, ",\n");
        }
        if (atomic_fclose(f, tmp, path, err, sizeof err)) rc = -1;
    } else rc = -1;
    // summary.md
    snprintf(path, sizeof path, "%s/summary.md", sw->out);
    f = atomic_fopen(path, "w", tmp, sizeof tmp, err, sizeof err);
    if (f) {
        fprintf(f, "# Sweep summary\n\n    %s\n\n", sw->cmdline);
        fprintf(f, "%d of %d runs finished (%d combination%s x %d seed%s). Per combination: mean "
                "± sample standard deviation [min, max] over the finished seeds, in percent. "
                "*best*: the epoch with the best validation accuracy (the one in best.h5), with "
                "its macro F1 and score (0.67 F1 + 0.33 accuracy); *final*: the last epoch's "
                "validation accuracy%s%s.\n\n",
                finished, sw->nr, sw->nc, sw->nc == 1 ? "" : "s", sw->seeds,
                sw->seeds == 1 ? "" : "s",
                any_test ? "; *test*: the test split evaluated once with best.h5 "
                           "(data.val_split: selection on the held-out validation set)" : "",
                any_ema ? "; with train.ema the better of the raw and the EMA weights" : "");
        const double vs = config_float(sw->base, "data.val_split");
        if (vs > 0)
            fprintf(f, "Validation: %g of every training class held out (data.val_split, "
                    "data.val_seed %ld); test: the %s split, once per run.\n\n", vs,
                    config_int(sw->base, "data.val_seed"), config_str(sw->base, "eval.split"));
        else
            fprintf(f, "Validation: the %s split (eval.split; the official code selects its "
                    "best epoch there too, so these are not held-out numbers: see "
                    "data.val_split).\n\n", config_str(sw->base, "eval.split"));
        for (int g = 0; g < sw->ng; g++) fprintf(f, "| %s ", sw->g[g].key);
        fprintf(f, "| runs | best val acc | macro F1 | score | final acc |%s parameters | s/epoch |\n",
                any_test ? " test acc | test F1 |" : "");
        for (int g = 0; g < sw->ng; g++) fprintf(f, "| --- ");
        fprintf(f, "| ---: | ---: | ---: | ---: | ---: |%s ---: | ---: |\n",
                any_test ? " ---: | ---: |" : "");
        for (int ci = 0; ci < sw->nc; ci++) {
            const combo_sum *s = &cs[ci];
            char a[96], b[96], c[96], d[96], e[96], t[96];
            fmt_stat(a, sizeof a, &s->acc, true);
            fmt_stat(b, sizeof b, &s->f1, true);
            fmt_stat(c, sizeof c, &s->score, true);
            fmt_stat(d, sizeof d, &s->final, true);
            for (int g = 0; g < sw->ng; g++)
                fprintf(f, "| %s ", sw->g[g].val[sw->combos[ci].vi[g]]);
            fprintf(f, "| %d | %s | %s | %s | %s |", s->runs, a, b, c, d);
            if (any_test) {
                fmt_stat(e, sizeof e, &s->test_acc, true);
                fmt_stat(t, sizeof t, &s->test_f1, true);
                fprintf(f, " %s | %s |", e, t);
            }
            if (sw->combos[ci].params) fprintf(f, " %lld |", (long long)sw->combos[ci].params);
            else fprintf(f, " - |");
            if (s->secs.n) fprintf(f, " %.1f |\n", s->secs.mean);
            else fprintf(f, " - |\n");
        }
        fprintf(f, "\nPer run: runs.csv; the same numbers unrounded: summary.csv; picture: "
                "summary.png.\n");
        if (atomic_fclose(f, tmp, path, err, sizeof err)) rc = -1;
    } else rc = -1;
    // summary.png: best validation accuracy per combination, spread over seeds
    {
        const char **labels = malloc((size_t)sw->nc * sizeof(char *));
        const double **vals = malloc((size_t)sw->nc * sizeof(double *));
        int *counts = malloc((size_t)sw->nc * sizeof(int));
        char (*short_lab)[256] = malloc((size_t)sw->nc * sizeof *short_lab);
        AG_ASSERT(labels && vals && counts && short_lab, "out of memory");
        for (int ci = 0; ci < sw->nc; ci++) {
            // the values alone when one grid, else "depth=4 levels=2" (key tails)
            size_t len = 0;
            short_lab[ci][0] = 0;
            for (int g = 0; g < sw->ng; g++) {
                const char *k = strrchr(sw->g[g].key, '.');
                k = k ? k + 1 : sw->g[g].key;
                const char *v = sw->g[g].val[sw->combos[ci].vi[g]];
                if (len < sizeof short_lab[0])
                    len += (size_t)(sw->ng == 1
                        ? snprintf(short_lab[ci] + len, sizeof short_lab[0] - len, "%s=%s", k, v)
                        : snprintf(short_lab[ci] + len, sizeof short_lab[0] - len, "%s%s=%s",
                                   g ? " " : "", k, v));
            }
            if (!sw->ng) snprintf(short_lab[ci], sizeof short_lab[0], "recipe");
            labels[ci] = short_lab[ci];
            vals[ci] = cs[ci].accs;
            counts[ci] = cs[ci].runs;
        }
        char title[256];
        snprintf(title, sizeof title, "best validation accuracy over %d seed%s (%d of %d runs)",
                 sw->seeds, sw->seeds == 1 ? "" : "s", finished, sw->nr);
        plot_spread_data pd = {sw->nc, labels, vals, counts, title, "accuracy (%)"};
        snprintf(path, sizeof path, "%s/summary.png", sw->out);
        if (plot_spread(path, &pd, err, sizeof err)) {
            fprintf(log, "sweep: %s\n", err);
            rc = -1;
        }
        free(labels);
        free(vals);
        free(counts);
        free(short_lab);
    }
    for (int ci = 0; ci < sw->nc; ci++) free(cs[ci].accs);
    free(cs);
    free(rm);
    free(ok);
    free(buf);
    if (rc) fprintf(log, "sweep: could not write every summary file in %s\n", sw->out);
    return rc;
}

// ---------------------------------------------------------------------------
// Running

static volatile sig_atomic_t g_stop;
static pid_t g_children[SWEEP_MAX_JOBS];

static void on_signal(int sig) {
    g_stop = sig;
    for (int i = 0; i < SWEEP_MAX_JOBS; i++)
        if (g_children[i] > 0) kill(g_children[i], SIGTERM);
}

static void self_exe(char *buf, size_t n, const char *argv0) {
    ssize_t k = readlink("/proc/self/exe", buf, n - 1);
    if (k > 0) buf[k] = 0;
    else snprintf(buf, n, "%s", argv0);
}

// Starts run r as a child `poster train`, output appended to r->dir/train.log.
static int start_run(sweep *sw, srun *r, const char *exe, int slot, FILE *log, char *err,
                     size_t errlen) {
    static config c;
    if (run_config(sw, r->combo, r->seed, &c, err, errlen)) return -1;
    if (train_mkdir_p(r->dir, err, errlen)) return -1;
    char ini[1700], last[1700], logp[1700], p[1700];
    snprintf(ini, sizeof ini, "%s/run.ini", r->dir);
    snprintf(last, sizeof last, "%s/last.h5", r->dir);
    snprintf(logp, sizeof logp, "%s/train.log", r->dir);
    if (write_run_ini(&c, ini, err, errlen)) return -1;
    int done_epochs = exists(last) ? ckpt_epochs(last) : -1;
    const bool resume = done_epochs >= 0;
    if (!resume) {   // a fresh start: the logs of an attempt without a checkpoint go
        const char *stale[] = {"log.csv", "log.jsonl", "ema.csv", "test.json", NULL};
        for (int i = 0; stale[i]; i++) {
            snprintf(p, sizeof p, "%s/%s", r->dir, stale[i]);
            remove(p);
        }
    }
    char threads[64] = "";
    if (sw->threads) snprintf(threads, sizeof threads, "train.threads=%d", sw->threads);
    const char *args[16];
    int na = 0;
    args[na++] = exe;
    args[na++] = "train";
    if (resume) {
        args[na++] = "--resume";
        args[na++] = last;
    }
    args[na++] = "--config";
    args[na++] = ini;
    args[na++] = "--out";
    args[na++] = r->dir;
    if (threads[0]) {
        args[na++] = "--set";
        args[na++] = threads;
    }
    args[na] = NULL;
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", logp, strerror(errno));
        return -1;
    }
    dprintf(fd, "==== poster sweep: %s", resume ? "resuming" : "starting");
    for (int i = 1; i < na; i++) dprintf(fd, " %s", args[i]);
    dprintf(fd, "\n");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(exe, (char *const *)args);
        fprintf(stderr, "poster sweep: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(fd);
    r->pid = pid;
    r->state = RUN_RUNNING;
    r->t0 = now_s();
    g_children[slot] = pid;
    fprintf(log, "sweep: [%d/%d] %s seed %llu: %s -> %s\n", (int)(r - sw->runs) + 1, sw->nr,
            sw->combos[r->combo].label, (unsigned long long)r->seed,
            resume ? "resuming" : "started", logp);
    if (resume)
        fprintf(log, "       (from %s, %d epoch%s done)\n", last, done_epochs,
                done_epochs == 1 ? "" : "s");
    fflush(log);
    return 0;
}

// The last non-empty line of a file (a failed run's message).
static void last_line(const char *path, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0]) snprintf(out, n, "%s", line);
    }
    fclose(f);
}

static int run_all(sweep *sw, const char *exe, FILE *log) {
    int slot_run[SWEEP_MAX_JOBS];
    for (int i = 0; i < SWEEP_MAX_JOBS; i++) slot_run[i] = -1, g_children[i] = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   // no SA_RESTART: waitpid returns on a signal
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int next = 0, running = 0, failed = 0;
    char err[4096];
    for (;;) {
        while (!g_stop && running < sw->jobs && next < sw->nr) {
            srun *r = &sw->runs[next++];
            if (r->state == RUN_DONE) {
                fprintf(log, "sweep: [%d/%d] %s seed %llu: finished earlier, skipped\n",
                        (int)(r - sw->runs) + 1, sw->nr, sw->combos[r->combo].label,
                        (unsigned long long)r->seed);
                continue;
            }
            int slot = 0;
            while (slot_run[slot] >= 0) slot++;
            if (start_run(sw, r, exe, slot, log, err, sizeof err)) {
                fprintf(log, "sweep: %s seed %llu: %s\n", sw->combos[r->combo].label,
                        (unsigned long long)r->seed, err);
                r->state = RUN_FAILED;
                failed++;
                continue;
            }
            slot_run[slot] = (int)(r - sw->runs);
            running++;
        }
        if (!running) break;
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int slot = 0;
        while (slot < SWEEP_MAX_JOBS && !(slot_run[slot] >= 0 && sw->runs[slot_run[slot]].pid == pid))
            slot++;
        if (slot == SWEEP_MAX_JOBS) continue;
        srun *r = &sw->runs[slot_run[slot]];
        slot_run[slot] = -1;
        g_children[slot] = 0;
        running--;
        const double secs = now_s() - r->t0;
        char p[1700];
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            snprintf(p, sizeof p, "%s/sweep_done", r->dir);
            FILE *f = fopen(p, "w");
            if (f) {
                fprintf(f, "finished (poster train exit 0)\n");
                fclose(f);
            }
            r->state = RUN_DONE;
            sweep_run_metrics m;
            if (sweep_read_run(r->dir, &m, err, sizeof err) == 0)
                fprintf(log, "sweep: [%d/%d] %s seed %llu: finished in %.0f s: best val acc "
                        "%.4f (epoch %d), final %.4f",
                        (int)(r - sw->runs) + 1, sw->nr, sw->combos[r->combo].label,
                        (unsigned long long)r->seed, secs, m.best_acc, m.best_epoch,
                        m.final_acc),
                fprintf(log, isfinite(m.test_acc) ? ", test %.4f\n" : "\n", m.test_acc);
            else fprintf(log, "sweep: %s\n", err);
            write_summary(sw, log);
        } else {
            r->state = RUN_FAILED;
            failed++;
            char msg[1024];
            snprintf(p, sizeof p, "%s/train.log", r->dir);
            last_line(p, msg, sizeof msg);
            if (WIFSIGNALED(st))
                fprintf(log, "sweep: %s seed %llu: stopped by signal %d; last line of %s: %s\n",
                        sw->combos[r->combo].label, (unsigned long long)r->seed, WTERMSIG(st), p,
                        msg);
            else
                fprintf(log, "sweep: %s seed %llu: failed (exit %d); last line of %s: %s\n",
                        sw->combos[r->combo].label, (unsigned long long)r->seed,
                        WIFEXITED(st) ? WEXITSTATUS(st) : -1, p, msg);
        }
        fflush(log);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return failed;
}

int sweep_main(config *base, const sweep_args *a) {
    static sweep sw;
    memset(&sw, 0, sizeof sw);
    sw.base = base;
    char err[4096];
    int rc = 1;
    {   // the recipe's [sweep] grids first, the command line's on top
        char g[600];
        snprintf(g, sizeof g, "%s", config_str(base, "sweep.grid"));
        for (char *save = NULL, *t = strtok_r(g, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            while (*t == ' ') t++;
            if (*t && add_grid(&sw, t, err, sizeof err)) {
                fprintf(stderr, "poster sweep: sweep.grid: %s\n", err);
                return 1;
            }
        }
    }
    for (int i = 0; i < a->ngrids; i++)
        if (add_grid(&sw, a->grids[i], err, sizeof err)) {
            fprintf(stderr, "poster sweep: %s\n", err);
            return 1;
        }
    sw.seeds = a->seeds ? a->seeds : (int)config_int(base, "sweep.seeds");
    sw.jobs = a->jobs ? a->jobs : (int)config_int(base, "sweep.jobs");
    snprintf(sw.out, sizeof sw.out, "%s", a->out ? a->out : config_str(base, "sweep.out"));
    sw.seed0 = (uint64_t)config_int(base, "train.seed");
    if (sw.jobs > 1 && !config_has(base, "train.threads")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        sw.threads = (int)(cores / sw.jobs) > 0 ? (int)(cores / sw.jobs) : 1;
    }
    snprintf(sw.cmdline, sizeof sw.cmdline, "%s", a->cmdline ? a->cmdline : "poster sweep");
    // combinations: mixed radix, the last grid fastest
    sw.nc = 1;
    for (int g = 0; g < sw.ng; g++) sw.nc *= sw.g[g].n;
    sw.combos = calloc((size_t)sw.nc, sizeof(combo));
    sw.nr = sw.nc * sw.seeds;
    sw.runs = calloc((size_t)sw.nr, sizeof(srun));
    AG_ASSERT(sw.combos && sw.runs, "out of memory");
    for (int ci = 0; ci < sw.nc; ci++) {
        combo *c = &sw.combos[ci];
        int rem = ci;
        for (int g = sw.ng - 1; g >= 0; g--) {
            c->vi[g] = rem % sw.g[g].n;
            rem /= sw.g[g].n;
        }
        size_t len = 0;
        for (int g = 0; g < sw.ng; g++)
            if (len < sizeof c->label)
                len += (size_t)snprintf(c->label + len, sizeof c->label - len, "%s%s=%s",
                                        g ? "," : "", sw.g[g].key, sw.g[g].val[c->vi[g]]);
        if (!sw.ng) snprintf(c->label, sizeof c->label, "recipe");
        for (char *p = c->label; *p; p++)   // one folder level per combination
            if (*p == '/' || *p == ' ') *p = '_';
    }
    {   // every run's configuration must validate before anything runs
        static config probe;
        for (int ci = 0; ci < sw.nc; ci++)
            for (int s = 0; s < sw.seeds; s++) {
                srun *r = &sw.runs[ci * sw.seeds + s];
                r->combo = ci;
                r->seed = sw.seed0 + (uint64_t)s;
                snprintf(r->dir, sizeof r->dir, "%s/%s/seed%llu", sw.out, sw.combos[ci].label,
                         (unsigned long long)r->seed);
                if (s == 0 && run_config(&sw, ci, r->seed, &probe, err, sizeof err)) {
                    fprintf(stderr, "poster sweep: %s\n", err);
                    goto done;
                }
                char p[1700];
                snprintf(p, sizeof p, "%s/sweep_done", r->dir);
                r->state = exists(p) ? RUN_DONE : RUN_PENDING;
            }
    }
    int ndone = 0;
    for (int i = 0; i < sw.nr; i++) ndone += sw.runs[i].state == RUN_DONE;
    printf("sweep: %d combination%s x %d seed%s = %d runs in %s (%d finished earlier), %d at "
           "once\n",
           sw.nc, sw.nc == 1 ? "" : "s", sw.seeds, sw.seeds == 1 ? "" : "s", sw.nr, sw.out, ndone,
           sw.jobs);
    if (sw.threads) printf("sweep: %d threads per run (train.threads)\n", sw.threads);
    if (a->dry) {
        for (int i = 0; i < sw.nr; i++) {
            char p[1700];
            snprintf(p, sizeof p, "%s/last.h5", sw.runs[i].dir);
            printf("  %-9s %s\n", sw.runs[i].state == RUN_DONE ? "finished"
                                  : exists(p) ? "resume" : "new", sw.runs[i].dir);
        }
        rc = 0;
        goto done;
    }
    if (train_mkdir_p(sw.out, err, sizeof err)) {
        fprintf(stderr, "poster sweep: %s\n", err);
        goto done;
    }
    fflush(stdout);
    char exe[1024];
    self_exe(exe, sizeof exe, a->argv0);
    int failed = run_all(&sw, exe, stdout);
    write_summary(&sw, stdout);
    ndone = 0;
    for (int i = 0; i < sw.nr; i++) ndone += sw.runs[i].state == RUN_DONE;
    printf("sweep: %d of %d runs finished%s; summary in %s/summary.md (.csv, .png)\n", ndone,
           sw.nr, failed ? " (some failed: see the messages above)" : "", sw.out);
    if (g_stop) {
        printf("sweep: stopped by signal %d; run the same command again to continue\n",
               (int)g_stop);
        rc = 128 + (int)g_stop;
    } else {
        rc = failed || ndone < sw.nr ? 1 : 0;
    }
done:
    free(sw.combos);
    free(sw.runs);
    return rc;
}
