// The training trajectory against PyTorch's official loop, short version: the
// reduced POSTER (depth 1, ir_units 2,1,2) from the contract's deterministic
// weights, 5 SAM(Adam) steps of batch 4 through `train_run` (data.augment=off,
// data.sampler=sequential, train.max_steps=5) on the dataset cache
// tests/fixtures/trajectory_data.h5, against tests/fixtures/trajectory_small.h5
// (tests/reference/ref_trajectory.py fixture: the same steps in float64 and float32
// PyTorch). `make check-torch` runs the large model for 20 steps.
// Also: the switches (keys, loader options, sequential batches = evaluation
// batches) and train.max_steps stopping mid-epoch and resuming bit-identically.
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers/poster.h"
#include "layers/state_io.h"
#include "test_util.h"
#include "train/trainer.h"

#define REF "trajectory_small.h5"
#define DATA FIXTURE_DIR "/trajectory_data.h5"
// As ref_trajectory.py: losses within max(1e-4, 3 x the largest drift so far of
// the fixture's float32 runs: torch32 and ULP_RUNS torch32 runs from starting
// weights one ulp away, since one float32 run is one draw of the rounding noise);
// the state's displacement within 3 x torch32's difference (parameters and
// buffers) and within 10 x per tensor.
#define TOL_LOSS 1e-4
#define LOSS_F32 3.0
#define TOL_STATE 3.0
#define TOL_TENSOR 10.0
// Inert tensors (exact gradient 0: float64 moved them by less than INERT_MOVE x lr
// per element) are checked against what Adam can do instead, as in
// ref_trajectory.py: ||w_S - w_0|| <= lr sqrt(n) sum_t adam_step_bound(t).
#define INERT_MOVE 1e-3
#define TRAJ_LR 4e-5

// Largest |m_hat / sqrt(v_hat)| of Adam's step t (betas 0.9, 0.999), whatever the
// gradients (Cauchy-Schwarz on m_t against v_t).
static double adam_step_bound(int t) {
    const double b1 = 0.9, b2 = 0.999, r = b1 * b1 / b2;
    double geo = 0;
    for (int k = 0; k < t; k++) geo += pow(r, k);
    return (1 - b1) / sqrt(1 - b2) * sqrt(geo) * sqrt(1 - pow(b2, t)) / (1 - pow(b1, t));
}

static char g_tmp[256];

static const char *tp(const char *rel) {
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s%s", g_tmp, rel);
    return b;
}

static FILE *quiet_log(void) {
    FILE *f = fopen(tp("/messages.log"), "a");
    if (!f) fail_msg("cannot write %s/messages.log", g_tmp);
    return f;
}

static void set_all(config *c, const char **sets) {
    char err[2048];
    for (int i = 0; sets && sets[i]; i++)
        if (config_set(c, sets[i], err, sizeof err)) fail_msg("%s", err);
}

static void fresh_config(config *c) {
    config_init(c);
    train_config_register(c);
}

static void validate(config *c) {
    char err[2048];
    if (config_validate(c, err, sizeof err)) fail_msg("%s", err);
}

// ---------------------------------------------------------------------------

static void test_switch_keys(void **st) {
    (void)st;
    static config c;
    loader_opts lo;
    char err[2048];
    fresh_config(&c);
    validate(&c);
    train_loader_opts(&c, &lo, 8, true);
    assert_true(lo.train_aug && lo.shuffle && !lo.balanced);   // the official defaults
    train_loader_opts(&c, &lo, 8, false);
    assert_true(!lo.train_aug && !lo.shuffle);
    set_all(&c, (const char *[]){"data.augment=off", "data.sampler=sequential", NULL});
    validate(&c);
    train_loader_opts(&c, &lo, 8, true);
    assert_true(!lo.train_aug && !lo.shuffle && !lo.balanced);
    set_all(&c, (const char *[]){"data.augment=on", "data.sampler=balanced", NULL});
    validate(&c);
    train_loader_opts(&c, &lo, 8, true);
    assert_true(lo.train_aug && lo.balanced);
    // Bad values name the key and the choices.
    fresh_config(&c);
    set_all(&c, (const char *[]){"data.sampler=random", NULL});
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "data.sampler"));
    assert_non_null(strstr(err, "sequential"));
    fresh_config(&c);
    set_all(&c, (const char *[]){"train.max_steps=-1", NULL});
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "train.max_steps"));
    fresh_config(&c);
    set_all(&c, (const char *[]){"data.augment=maybe", NULL});
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "data.augment"));
}

// Reads the first `nb` batches of an epoch.
static float *read_batches(const config *c, bool train, int epoch, int nb, int B) {
    char err[2048];
    dataset *d;
    if (dataset_open(c, "train", &d, err, sizeof err)) fail_msg("%s", err);
    loader_opts lo;
    train_loader_opts(c, &lo, B, train);
    lo.workers = 1;
    lo.log = NULL;
    loader *L = loader_create(d, &lo, err, sizeof err);
    if (!L) fail_msg("%s", err);
    const size_t per = (size_t)3 * 224 * 224;
    float *img = malloc((size_t)nb * B * per * sizeof(float));
    int64_t lab[64];
    loader_start_epoch(L, epoch);
    for (int b = 0; b < nb; b++)
        assert_int_equal(loader_next(L, img + (size_t)b * B * per, lab, err, sizeof err), B);
    loader_free(L);
    dataset_close(d);
    return img;
}

// Training batches with augment off and the sequential sampler are exactly the
// evaluation batches in file order, in every epoch (what `poster data dump`
// writes, and what the PyTorch side of the comparison reads).
static void test_sequential_is_eval_order(void **st) {
    (void)st;
    static config c;
    fresh_config(&c);
    set_all(&c, (const char *[]){"data.cache=" DATA, "train.seed=5", NULL});
    validate(&c);
    const int B = 4, nb = 2;
    const size_t n = (size_t)nb * B * 3 * 224 * 224 * sizeof(float);
    float *ev = read_batches(&c, false, 0, nb, B);
    float *official = read_batches(&c, true, 1, nb, B);
    assert_memory_not_equal(ev, official, n);   // augmented and shuffled: not these
    free(official);
    set_all(&c, (const char *[]){"data.augment=off", "data.sampler=sequential", NULL});
    for (int epoch = 0; epoch < 2; epoch++) {
        float *tr = read_batches(&c, true, epoch, nb, B);
        assert_memory_equal(ev, tr, n);
        free(tr);
    }
    set_all(&c, (const char *[]){"data.sampler=shuffle", NULL});
    float *sh = read_batches(&c, true, 0, nb, B);
    assert_memory_not_equal(ev, sh, n);   // shuffled, not augmented: another order
    free(sh);
    free(ev);
}

// ---------------------------------------------------------------------------

typedef struct names {
    char **v;
    int n, cap;
} names;

static int collect_index(const char *path, void *ctx) {
    names *l = ctx;
    size_t n = strlen(path);
    if (n <= 6 || strcmp(path + n - 6, "/index")) return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, (size_t)l->cap * sizeof(char *));
    }
    l->v[l->n++] = strndup(path, n - 6);
    return 0;
}

static const param *find_param(const param_store *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->params[i].name, name)) return &s->params[i];
    return NULL;
}

// steps.csv: loss (first pass) and loss_sam per step.
static int read_steps(const char *path, double (*out)[2], int max) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s", path);
    char line[512];
    int n = 0;
    if (!fgets(line, sizeof line, f)) fail_msg("%s is empty", path);
    assert_non_null(strstr(line, "step,epoch,batch,lr,loss,loss_sam,acc"));
    while (fgets(line, sizeof line, f) && n < max) {
        long long step;
        int ep, b;
        double lr;
        if (sscanf(line, "%lld,%d,%d,%lf,%lf,%lf", &step, &ep, &b, &lr, &out[n][0],
                   &out[n][1]) != 6)
            fail_msg("%s: bad row %s", path, line);
        assert_int_equal(step, n + 1);
        n++;
    }
    fclose(f);
    return n;
}

static void test_trajectory_small(void **st) {
    (void)st;
    char err[4096];
    hid_t f = tu_fixture_open(REF);
    char opts_text[512], sets_text[4096];
    int64_t ver = 0;
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &ver), 0);
    assert_int_equal(ver, 2);   // 2: loss_torch32_ulp
    assert_int_equal(h5_read_attr_str(f, "/", "options", opts_text, sizeof opts_text), 0);
    assert_int_equal(h5_read_attr_str(f, "/", "sets", sets_text, sizeof sets_text), 0);
    // The starting weights: the contract's, written where train.init reads them.
    poster_opts po;
    if (poster_opts_from_text(opts_text, &po, err, sizeof err)) fail_msg("%s", err);
    poster_model *m = poster_create(&po, 1, err, sizeof err);
    if (!m) fail_msg("%s", err);
    param_store *s = poster_store(m);
    poster_fill_deterministic(s);
    if (state_save(tp("/W0.h5"), s, opts_text, err, sizeof err)) fail_msg("%s", err);
    static config c;
    fresh_config(&c);
    assert_int_equal(config_load(&c, "configs/rafdb.ini", err, sizeof err), 0);
    for (char *kv = strtok(sets_text, "\n"); kv; kv = strtok(NULL, "\n"))
        if (config_set(&c, kv, err, sizeof err)) fail_msg("%s", err);
    char kv[700];
    snprintf(kv, sizeof kv, "train.init=%s", tp("/W0.h5"));
    set_all(&c, (const char *[]){"data.cache=" DATA, kv, "eval.split=test", "eval.batch_size=4",
                                 NULL});
    snprintf(kv, sizeof kv, "train.out_dir=%s", tp("/traj"));
    set_all(&c, (const char *[]){kv, NULL});
    validate(&c);
    unlink(tp("/traj/steps.csv"));
    FILE *log = quiet_log();
    train_args a = {NULL, NULL, log};
    train_result res;
    int rc = train_run(&c, &a, &res, err, sizeof err);
    fclose(log);
    if (rc) fail_msg("%s", err);
    assert_int_equal(res.steps, 5);
    assert_int_equal(res.n_params, s->n_float);
    // Losses step by step.
    int nd, sh[T_MAXDIM];
    float *l64, *l32, *lulp;
    if (h5_read_floats(f, "loss_torch64", &l64, &nd, sh, err, sizeof err) ||
        h5_read_floats(f, "loss_torch32", &l32, &nd, sh, err, sizeof err))
        fail_msg("%s", err);
    const int S = sh[0];
    if (h5_read_floats(f, "loss_torch32_ulp", &lulp, &nd, sh, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(nd, 3);
    assert_int_equal(sh[1], S);
    const int U = sh[0];
    assert_true(U >= 1);
    double lc[16][2];
    assert_int_equal(read_steps(tp("/traj/steps.csv"), lc, 16), S);
    double env = 0, worst = 0;
    for (int i = 0; i < S; i++) {
        for (int k = 0; k < 2; k++) {
            const double ref = l64[2 * i + k];
            env = fmax(env, fabs(l32[2 * i + k] - ref) / fabs(ref));
            for (int u = 0; u < U; u++)
                env = fmax(env, fabs(lulp[((size_t)u * S + i) * 2 + k] - ref) / fabs(ref));
        }
        const double tol = fmax(TOL_LOSS, LOSS_F32 * env);
        for (int k = 0; k < 2; k++) {
            double r = fabs(lc[i][k] - l64[2 * i + k]) / fabs(l64[2 * i + k]);
            worst = fmax(worst, r);
            fprintf(stderr, "step %d %s: ours %.7f torch64 %.7f torch32 %.7f rel %.2e (tol %.1e)\n",
                    i + 1, k ? "SAM " : "loss", lc[i][k], l64[2 * i + k], l32[2 * i + k], r, tol);
            if (!(r <= tol)) fail_msg("step %d: loss rel %.3g > %.3g", i + 1, r, tol);
        }
    }
    // The state after the last step, sampled: displacement w_S - w_0 against
    // torch64's, measured against torch32's difference on the same elements.
    names l = {0};
    h5_list_datasets(f, "state", collect_index, &l);
    assert_true(l.n > 100);
    double sum[2][2] = {{0}};   // [params | buffers][ours | torch32]
    double adam_move = 0;       // per element, over the S steps
    for (int t = 1; t <= S; t++) adam_move += TRAJ_LR * adam_step_bound(t);
    int nfail = 0;
    for (int i = 0; i < l.n; i++) {
        const param *p = find_param(s, l.v[i]);
        if (!p || p->kind == PARAM_COUNTER)
            fail_msg("fixture tensor %s is not in the model", l.v[i]);
        char path[400];
        int64_t ns;
        snprintf(path, sizeof path, "state/%s/index", l.v[i]);
        int64_t *idx = tu_fixture_int64(f, path, &ns);
        snprintf(path, sizeof path, "state/%s/displacement", l.v[i]);
        float *d64, *f32;
        if (h5_read_floats(f, path, &d64, &nd, sh, err, sizeof err)) fail_msg("%s", err);
        snprintf(path, sizeof path, "state/%s/f32_diff", l.v[i]);
        if (h5_read_floats(f, path, &f32, &nd, sh, err, sizeof err)) fail_msg("%s", err);
        double dc = 0, dn = 0, mv = 0;
        for (int64_t j = 0; j < ns; j++) {
            assert_true(idx[j] >= 0 && idx[j] < p->numel);
            double w0 = s->data[p->offset + idx[j]], w = res.params[p->offset + idx[j]];
            double e = (w - w0) - d64[j];
            dc += e * e;
            dn += (double)d64[j] * d64[j];
            mv += (w - w0) * (w - w0);
        }
        dc = sqrt(dc);
        const bool buf = strstr(l.v[i], "running_") != NULL;
        sum[buf][0] += dc * dc;
        sum[buf][1] += (double)f32[0] * f32[0];
        const double lim = TOL_TENSOR * f32[0] + 1e-6 * sqrt(dn);
        if (dc == 0 && dn == 0) {
            // frozen or never used: untouched on both sides
        } else if (sqrt(dn) < INERT_MOVE * TRAJ_LR * sqrt((double)ns)) {
            const double bound = adam_move * sqrt((double)ns);
            fprintf(stderr, "%s: inert (float64 moved it %.1e), ours moved it %.2e, Adam's bound "
                    "%.2e\n", l.v[i], sqrt(dn), sqrt(mv), bound);
            if (sqrt(mv) > bound) nfail++;
        } else if (dc > lim && dc > 1e-7) {
            fprintf(stderr, "%s: ||ours - torch64|| %.3e > %g x torch32's %.3e\n", l.v[i], dc,
                    TOL_TENSOR, f32[0]);
            nfail++;
        }
        free(idx);
        free(d64);
        free(f32);
    }
    // Counters (num_batches_tracked: two training forwards per step).
    int ncount = 0;
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (p->kind != PARAM_COUNTER) continue;
        char path[400];
        snprintf(path, sizeof path, "counter/%s", p->name);
        int64_t *want = tu_fixture_int64(f, path, NULL);
        assert_int_equal(res.counters[p->offset], want[0]);
        free(want);
        ncount++;
    }
    assert_true(ncount > 10);
    for (int b = 0; b < 2; b++) {
        double ours = sqrt(sum[b][0]), t32 = sqrt(sum[b][1]);
        fprintf(stderr, "%s: ||ours - torch64|| %.3e, ||torch32 - torch64|| %.3e (ratio %.2f)\n",
                b ? "buffers" : "parameters", ours, t32, ours / t32);
        if (!(ours <= TOL_STATE * t32))
            fail_msg("%s differ %.2f x torch32's", b ? "buffers" : "parameters", ours / t32);
    }
    fprintf(stderr, "largest loss difference %.2e; %d tensors compared\n", worst, l.n);
    assert_int_equal(nfail, 0);
    for (int i = 0; i < l.n; i++) free(l.v[i]);
    free(l.v);
    free(l64);
    free(l32);
    free(lulp);
    train_result_free(&res);
    poster_free(m);
    h5_close(f);
}

// ---------------------------------------------------------------------------

static void tiny_config(config *c, const char *out, const char *max_steps) {
    fresh_config(c);
    char o[600];
    snprintf(o, sizeof o, "train.out_dir=%s", out);
    set_all(c, (const char *[]){
                   "data.cache=" DATA, "model.depth=1", "model.ir_units=1,1,1",
                   "data.image_size=112", "data.workers=1", "data.augment=off", "train.epochs=3",
                   "train.batch_size=4", "train.micro_batch=2", "train.threads=2",
                   "train.progress=off", "optim.lr=1e-3", "eval.split=test", "eval.batch_size=4",
                   "eval.plots=off", o, max_steps, NULL});
    validate(c);
}

// The first data row of a log.csv without its last column (the seconds).
static void log_row(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char head[512];
    if (!fgets(head, sizeof head, f) || !fgets(out, (int)cap, f)) fail_msg("%s: no data row", path);
    fclose(f);
    char *c = strrchr(out, ',');
    if (!c) fail_msg("%s: not a csv row: %s", path, out);
    *c = 0;
}

// train.max_steps stops inside an epoch with a checkpoint at that position; a
// resume with a larger limit continues bit-identically to a run that never stopped
// (drop path on: its random stream is part of what must continue).
static void test_max_steps_resume(void **st) {
    (void)st;
    static config c;
    char err[2048];
    FILE *log = quiet_log();
    train_args args = {NULL, NULL, log};
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s/straight %s/stopped", g_tmp, g_tmp);
    assert_int_equal(system(cmd), 0);
    // 20 training samples in batches of 4: 5 steps per epoch; 7 = 1 epoch + 2 steps.
    tiny_config(&c, tp("/straight"), "train.max_steps=7");
    train_result a, b;
    if (train_run(&c, &args, &a, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(a.steps, 7);
    assert_int_equal(a.epochs_done, 1);
    tiny_config(&c, tp("/stopped"), "train.max_steps=3");
    if (train_run(&c, &args, &b, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(b.steps, 3);
    assert_int_equal(b.epochs_done, 0);
    train_result_free(&b);
    struct stat sb;
    assert_int_equal(stat(tp("/stopped/last.h5"), &sb), 0);
    assert_int_not_equal(stat(tp("/stopped/log.csv"), &sb), 0);   // no epoch ended
    // Rows a killed run wrote after its checkpoint (steps 4 and 5, the last one
    // half-written) are dropped by the resume, which writes its own.
    FILE *sf = fopen(tp("/stopped/steps.csv"), "a");
    assert_non_null(sf);
    fputs("4,1,4,0.001,9.5,9.5,0.25\n5,1,5,0.001,9", sf);
    fclose(sf);
    tiny_config(&c, tp("/stopped"), "train.max_steps=7");
    args.resume = tp("/stopped/last.h5");
    if (train_run(&c, &args, &b, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(b.steps, 7);
    assert_int_equal(a.n_params, b.n_params);
    assert_memory_equal(a.params, b.params, (size_t)a.n_params * sizeof(float));
    assert_memory_equal(a.counters, b.counters, (size_t)a.n_counters * sizeof(int64_t));
    train_result_free(&b);
    // Resuming at the limit does nothing.
    if (train_run(&c, &args, &b, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(b.steps, 7);
    assert_memory_equal(a.params, b.params, (size_t)a.n_params * sizeof(float));
    train_result_free(&b);
    fclose(log);
    // log.csv: the epoch the stop cut in two logs the means over all its batches,
    // as the straight run's (every column but the seconds).
    char la[512], lb[512];
    log_row(tp("/straight/log.csv"), la, sizeof la);
    log_row(tp("/stopped/log.csv"), lb, sizeof lb);
    assert_string_equal(la, lb);
    // steps.csv: one row per step, the stopped run's 3 then the resumed run's 4.
    double rows[16][2], rows_a[16][2];
    assert_int_equal(read_steps(tp("/straight/steps.csv"), rows_a, 16), 7);
    assert_int_equal(read_steps(tp("/stopped/steps.csv"), rows, 16), 7);
    for (int i = 0; i < 7; i++) {
        assert_true(rows[i][0] == rows_a[i][0]);
        assert_true(rows[i][1] == rows_a[i][1]);
    }
    train_result_free(&a);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s", tu_path("/trajectory"));
    mkdir(g_tmp, 0777);
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_switch_keys),
        cmocka_unit_test(test_sequential_is_eval_order),
        cmocka_unit_test(test_max_steps_resume),
        cmocka_unit_test(test_trajectory_small),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_tmp);
    return rc;
}
