// Model selection extras: the held-out validation split (data.val_split) is
// stratified, disjoint from the rest of train and the same for the same seed;
// the test split is evaluated once at the end with best.h5; the EMA of the
// weights (train.ema) equals a hand-computed average after 3 steps, copies the
// buffers, and survives resume bit-identically; checkpoints of version 1 (no
// EMA) still resume; test-time augmentation equals the mean of the two passes.
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "data/split.h"
#include "eval/tta.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/ema.h"
#include "train/trainer.h"

static char g_tmp[256];

static const char *tp(const char *rel) {
    static char bufs[16][512];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, 512, "%s%s", g_tmp, rel);
    return b;
}

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

static const char *synth_dir(void) {
    const char *dir = tp("/synth");
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/EmoLabel/list_patition_label.txt", dir);
    if (access(path, F_OK) == 0) return dir;
    assert_int_equal(synth_write(dir, 6, 7, err, sizeof err), 0);
    return dir;
}

static void small_config(config *c, const char *out, const char **sets) {
    config_init(c);
    train_config_register(c);
    char err[2048], kv[700];
    const char *base[] = {
        "model.depth=1", "model.ir_units=1,1,1", "data.format=rafdb", "data.image_size=112",
        "data.workers=1", "train.epochs=1", "train.batch_size=4", "train.micro_batch=4",
        "train.max_batches=1", "train.threads=2", "train.progress=off", "train.init=",
        "optim.lr=1e-3", "eval.split=test", "eval.batch_size=16", "eval.plots=off", NULL};
    for (int i = 0; base[i]; i++) assert_int_equal(config_set(c, base[i], err, sizeof err), 0);
    snprintf(kv, sizeof kv, "data.root=%s", synth_dir());
    assert_int_equal(config_set(c, kv, err, sizeof err), 0);
    snprintf(kv, sizeof kv, "train.out_dir=%s", out);
    assert_int_equal(config_set(c, kv, err, sizeof err), 0);
    for (int i = 0; sets && sets[i]; i++)
        if (config_set(c, sets[i], err, sizeof err)) fail_msg("%s", err);
    if (config_validate(c, err, sizeof err)) fail_msg("%s", err);
}

static FILE *quiet_log(void) {
    FILE *f = fopen(tp("/messages.log"), "a");
    if (!f) fail_msg("cannot write %s/messages.log", g_tmp);
    return f;
}

// ---------------------------------------------------------------------------

static void test_split_stratified(void **st) {
    (void)st;
    // 6 classes with 10, 20, 1, 2, 30, 5 samples, interleaved
    const int counts[6] = {10, 20, 1, 2, 30, 5};
    int labels[68], n = 0, left[6];
    memcpy(left, counts, sizeof left);
    for (int round = 0; n < 68; round++)
        for (int k = 0; k < 6; k++)
            if (left[k]) labels[n++] = k, left[k]--;
    assert_int_equal(n, 68);
    int held[68], rest[68], nh, nr, held2[68], rest2[68], nh2, nr2;
    split_stratified(labels, n, 6, 0.1, 1, held, &nh, rest, &nr);
    assert_int_equal(nh + nr, n);
    // round(0.1 * c), at most c - 1: 1, 2, 0, 0, 3, 1
    const int want[6] = {1, 2, 0, 0, 3, 1};
    int per[6] = {0};
    for (int i = 0; i < nh; i++) per[labels[held[i]]]++;
    for (int k = 0; k < 6; k++) assert_int_equal(per[k], want[k]);
    // disjoint, together every sample once, both ascending
    bool seen[68] = {false};
    for (int i = 0; i < nh; i++) {
        assert_false(seen[held[i]]);
        seen[held[i]] = true;
        if (i) assert_true(held[i] > held[i - 1]);
    }
    for (int i = 0; i < nr; i++) {
        assert_false(seen[rest[i]]);
        seen[rest[i]] = true;
        if (i) assert_true(rest[i] > rest[i - 1]);
    }
    for (int i = 0; i < n; i++) assert_true(seen[i]);
    // the same seed: the same split; another seed: another one
    split_stratified(labels, n, 6, 0.1, 1, held2, &nh2, rest2, &nr2);
    assert_int_equal(nh2, nh);
    assert_memory_equal(held2, held, (size_t)nh * sizeof(int));
    split_stratified(labels, n, 6, 0.1, 2, held2, &nh2, rest2, &nr2);
    assert_int_equal(nh2, nh);
    assert_true(memcmp(held2, held, (size_t)nh * sizeof(int)) != 0);
    // half: a class of 2 gives 1, a class of 1 keeps its only sample
    split_stratified(labels, n, 6, 0.5, 1, held, &nh, rest, &nr);
    memset(per, 0, sizeof per);
    for (int i = 0; i < nh; i++) per[labels[held[i]]]++;
    const int want2[6] = {5, 10, 0, 1, 15, 3};
    for (int k = 0; k < 6; k++) assert_int_equal(per[k], want2[k]);
}

static int find_source(const dataset *d, const char *src) {
    for (int i = 0; i < dataset_size(d); i++)
        if (!strcmp(dataset_source(d, i), src)) return i;
    return -1;
}

static void test_holdout_datasets(void **st) {
    (void)st;
    static config c;
    char err[2048];
    small_config(&c, tp("/unused"), (const char *[]){"data.val_split=0.25", NULL});
    dataset *all, *tr, *va, *te, *tr2, *va2, *te2, *test;
    assert_int_equal(dataset_open(&c, "train", &all, err, sizeof err), 0);
    assert_int_equal(dataset_open(&c, "test", &test, err, sizeof err), 0);
    if (dataset_open_holdout(&c, "test", &tr, &va, &te, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_non_null(te);
    assert_int_equal(dataset_size(te), dataset_size(test));
    assert_int_equal(dataset_size(tr) + dataset_size(va), dataset_size(all));
    assert_int_equal(dataset_num_classes(va), dataset_num_classes(all));
    int per_all[16] = {0}, per_val[16] = {0};
    for (int i = 0; i < dataset_size(all); i++) per_all[dataset_label(all, i)]++;
    for (int i = 0; i < dataset_size(va); i++) {
        const char *s = dataset_source(va, i);
        int j = find_source(all, s);
        assert_true(j >= 0);
        assert_int_equal(dataset_label(all, j), dataset_label(va, i));   // labels travel along
        assert_int_equal(find_source(tr, s), -1);                        // not trained on
        per_val[dataset_label(va, i)]++;
    }
    for (int k = 0; k < dataset_num_classes(all); k++) {
        int w = (int)floor(0.25 * per_all[k] + 0.5);
        if (w > per_all[k] - 1) w = per_all[k] - 1;
        assert_int_equal(per_val[k], w);
    }
    // the same again
    assert_int_equal(dataset_open_holdout(&c, "test", &tr2, &va2, &te2, NULL, err, sizeof err), 0);
    assert_int_equal(dataset_size(va2), dataset_size(va));
    for (int i = 0; i < dataset_size(va); i++)
        assert_string_equal(dataset_source(va2, i), dataset_source(va, i));
    dataset_close(tr2);
    dataset_close(va2);
    dataset_close(te2);
    // off: validation on eval.split, no test set
    assert_int_equal(config_set(&c, "data.val_split=0", err, sizeof err), 0);
    assert_int_equal(dataset_open_holdout(&c, "test", &tr2, &va2, &te2, NULL, err, sizeof err), 0);
    assert_null(te2);
    assert_int_equal(dataset_size(tr2), dataset_size(all));
    assert_int_equal(dataset_size(va2), dataset_size(test));
    dataset_close(tr2);
    dataset_close(va2);
    dataset_close(tr);
    dataset_close(va);
    dataset_close(te);
    dataset_close(all);
    dataset_close(test);
}

// ---------------------------------------------------------------------------
// EMA

// The raw weights (in the model's store) and the EMA of checkpoint path.
static ema *load_both(poster_model *m, const char *path) {
    char err[2048];
    param_store *s = poster_store(m);
    if (ckpt_load(path, s, NULL, NULL, err, sizeof err)) fail_msg("%s", err);
    ema *e = ema_create(s, 0.5);
    memset(e->data, 0, (size_t)e->n_float * sizeof(float));
    hid_t f = h5_open_read(path, err, sizeof err);
    assert_true(f >= 0);
    int rc = ema_read(e, s, f, "ema", err, sizeof err);
    h5_close(f);
    if (rc) fail_msg("%s: no EMA (%d): %s", path, rc, err);
    return e;
}

static void test_ema_hand_and_resume(void **st) {
    (void)st;
    static config c;
    char err[2048];
    const double d = 0.5;   // far from 1, so every step shows
    sh("rm -rf %s %s", tp("/emaA"), tp("/emaB"));
    FILE *log = quiet_log();
    train_args args = {NULL, NULL, log};
    // A: 3 epochs of one step each, straight; held-out validation on
    const char *sets3[] = {"train.ema=0.5", "data.val_split=0.25", "train.epochs=3", NULL};
    small_config(&c, tp("/emaA"), sets3);
    if (train_run(&c, &args, NULL, err, sizeof err)) fail_msg("%s", err);
    // B: the same, one epoch per process, keeping each epoch's last.h5
    for (int k = 1; k <= 3; k++) {
        char ep[32];
        snprintf(ep, sizeof ep, "train.epochs=%d", k);
        small_config(&c, tp("/emaB"), (const char *[]){"train.ema=0.5", "data.val_split=0.25", ep, NULL});
        char last[600], keep[600];
        snprintf(last, sizeof last, "%s/emaB/last.h5", g_tmp);
        args.resume = k > 1 ? last : NULL;
        if (train_run(&c, &args, NULL, err, sizeof err)) fail_msg("epoch %d: %s", k, err);
        snprintf(keep, sizeof keep, "%s/emaB/epoch%d.h5", g_tmp, k);
        sh("cp %s %s", last, keep);
    }
    fclose(log);
    args.resume = NULL;
    // The initial weights: a fresh model of the same seed.
    poster_opts po;
    assert_int_equal(train_model_opts(&c, 7, &po, err, sizeof err), 0);
    poster_model *m0 = poster_create(&po, (uint64_t)config_int(&c, "train.seed"), err, sizeof err);
    poster_model *m = poster_create(&po, 0, err, sizeof err);
    assert_non_null(m0);
    assert_non_null(m);
    const param_store *s0 = poster_store(m0);
    param_store *s = poster_store(m);
    const int64_t nt = s->n_train, nf = s->n_float;
    float *hand = malloc((size_t)nf * sizeof(float));
    memcpy(hand, s0->data, (size_t)nf * sizeof(float));
    double worst = 0;
    int64_t moved = 0;
    for (int k = 1; k <= 3; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/emaB/epoch%d.h5", g_tmp, k);
        ema *e = load_both(m, path);
        assert_int_equal(e->updates, k);
        for (int64_t i = 0; i < nt; i++) {
            hand[i] = (float)(d * hand[i] + (1 - d) * s->data[i]);   // hand: double, rounded
            double err_i = fabs((double)e->data[i] - hand[i]) / (fabs(hand[i]) + 1e-3);
            if (err_i > worst) worst = err_i;
            moved += k == 3 && e->data[i] != s->data[i];
        }
        // BatchNorm buffers (and frozen tensors) copied, counters copied
        assert_memory_equal(e->data + nt, s->data + nt, (size_t)(nf - nt) * sizeof(float));
        assert_memory_equal(e->counters, s->counters, (size_t)s->n_counters * sizeof(int64_t));
        ema_free(e);
    }
    fprintf(stderr, "EMA vs hand-computed average after 3 steps: worst relative %.2e; %lld of "
            "%lld trainable values differ from the raw weights\n", worst, (long long)moved,
            (long long)nt);
    assert_true(worst < 1e-6);
    assert_true(moved > nt / 10);
    // Resumed twice == straight, bit for bit (raw weights and EMA).
    ema *eb = load_both(m, tp("/emaB/epoch3.h5"));
    float *raw_b = malloc((size_t)nf * sizeof(float));
    memcpy(raw_b, s->data, (size_t)nf * sizeof(float));
    ema *ea = load_both(m, tp("/emaA/last.h5"));
    assert_memory_equal(s->data, raw_b, (size_t)nf * sizeof(float));
    assert_memory_equal(ea->data, eb->data, (size_t)nf * sizeof(float));
    assert_memory_equal(ea->counters, eb->counters, (size_t)s->n_counters * sizeof(int64_t));
    ema_free(ea);
    ema_free(eb);
    // best.h5 records which weights won; the test split was evaluated once, with them.
    hid_t f = h5_open_read(tp("/emaA/best.h5"), err, sizeof err);
    char which[16] = "";
    assert_int_equal(h5_read_attr_str(f, "/", "best_weights", which, sizeof which), 0);
    assert_false(h5_exists(f, "ema"));   // best.h5's state_dict is the chosen weights
    h5_close(f);
    assert_true(!strcmp(which, "raw") || !strcmp(which, "ema"));
    FILE *tj = fopen(tp("/emaA/test.json"), "r");
    assert_non_null(tj);
    char text[1024];
    size_t n = fread(text, 1, sizeof text - 1, tj);
    text[n] = 0;
    fclose(tj);
    const char *p = strstr(text, "\"test_acc\":");
    assert_non_null(p);
    double test_acc = atof(p + 11);
    assert_non_null(strstr(text, which));
    if (ckpt_load(tp("/emaA/best.h5"), s, NULL, NULL, err, sizeof err)) fail_msg("%s", err);
    dataset *te;
    assert_int_equal(dataset_open(&c, "test", &te, err, sizeof err), 0);
    confusion cm;
    confusion_init(&cm, 7);
    eval_args eva = {16, 112, 0, NULL, 0, 0};
    double loss;
    assert_int_equal(eval_model(m, te, &eva, &cm, &loss, NULL, err, sizeof err), 0);
    metrics mt;
    metrics_compute(&cm, &mt);
    fprintf(stderr, "best.h5 (%s weights): test accuracy %.4f, test.json %.4f\n", which,
            mt.accuracy, test_acc);
    assert_true(fabs(mt.accuracy - test_acc) < 1e-6);
    assert_int_equal((int)cm.n, dataset_size(te));
    metrics_free(&mt);
    confusion_free(&cm);
    dataset_close(te);
    free(hand);
    free(raw_b);
    poster_free(m0);
    poster_free(m);
}

// A checkpoint without an EMA (version 1, or EMA turned on later) resumes with
// the average starting at the resumed weights.
static void test_ema_from_plain_checkpoint(void **st) {
    (void)st;
    static config c;
    char err[2048];
    sh("rm -rf %s %s", tp("/plain"), tp("/unused2"));
    FILE *log = quiet_log();
    train_args args = {NULL, NULL, log};
    small_config(&c, tp("/plain"), NULL);
    if (train_run(&c, &args, NULL, err, sizeof err)) fail_msg("%s", err);
    hid_t f = h5_open_read(tp("/plain/last.h5"), err, sizeof err);
    assert_false(h5_exists(f, "ema"));
    int64_t ver = 0;
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &ver), 0);
    assert_int_equal(ver, CKPT_VERSION);
    h5_close(f);
    // make it a version-1 file as older builds wrote it
    f = H5Fopen(tp("/plain/last.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Adelete(f, "version");
    h5_close(f);
    f = H5Fopen(tp("/plain/last.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_int_equal(h5_write_attr_i64(f, "/", "version", 1), 0);
    h5_close(f);
    small_config(&c, tp("/plain"), (const char *[]){"train.ema=0.9", "train.epochs=2", NULL});
    args.resume = tp("/plain/last.h5");
    if (train_run(&c, &args, NULL, err, sizeof err)) fail_msg("%s", err);
    fclose(log);
    poster_opts po;
    assert_int_equal(train_model_opts(&c, 7, &po, err, sizeof err), 0);
    poster_model *m = poster_create(&po, 0, err, sizeof err);
    ema *e = load_both(m, tp("/plain/last.h5"));
    assert_int_equal(e->updates, 1);
    ema_free(e);
    poster_free(m);
}

// ---------------------------------------------------------------------------
// TTA

static void test_tta_mean_of_two_passes(void **st) {
    (void)st;
    static config c;
    char err[2048];
    small_config(&c, tp("/unused"), NULL);
    poster_opts po;
    assert_int_equal(train_model_opts(&c, 7, &po, err, sizeof err), 0);
    poster_model *m = poster_create(&po, 11, err, sizeof err);
    assert_non_null(m);
    rng r;
    rng_seed(&r, 3);
    const int n = 2, S = 112, K = 7;
    tensor *x = tu_rand(&r, 4, (int[]){n, 3, S, S}, -2, 2);
    tensor *xf = tensor_new(4, (int[]){n, 3, S, S});
    for (int64_t row = 0; row < (int64_t)n * 3 * S; row++)
        for (int j = 0; j < S; j++) xf->data[row * S + j] = x->data[row * S + (S - 1 - j)];
    float p_tta[14], p1[14], p2[14];
    tta_probs(m, x, TTA_FLIP, p_tta);
    tta_probs(m, x, TTA_OFF, p1);
    tta_probs(m, xf, TTA_OFF, p2);
    // p1 is the plain softmax of the logits
    bool prev = ag_no_grad_begin();
    tensor *z = poster_forward(m, x, false, NULL);
    ag_no_grad_end(prev);
    double diff12 = 0;
    for (int i = 0; i < n; i++) {
        double mx = -INFINITY, sum = 0, s_tta = 0;
        for (int k = 0; k < K; k++) mx = fmax(mx, z->data[i * K + k]);
        for (int k = 0; k < K; k++) sum += exp(z->data[i * K + k] - mx);
        for (int k = 0; k < K; k++) {
            const int j = i * K + k;
            assert_true(fabs(p1[j] - exp(z->data[j] - mx) / sum) < 1e-6);
            assert_true(fabs(p_tta[j] - 0.5 * ((double)p1[j] + p2[j])) < 1e-6);
            diff12 = fmax(diff12, fabs(p1[j] - p2[j]));
            s_tta += p_tta[j];
        }
        assert_true(fabs(s_tta - 1) < 1e-5);
    }
    assert_true(diff12 > 1e-5);   // the flip is a different input
    tensor *lp = tta_log_probs(m, x, TTA_FLIP);
    for (int j = 0; j < n * K; j++) assert_true(fabs(expf(lp->data[j]) - p_tta[j]) < 1e-6);
    ag_step_reset();
    poster_free(m);
}

int main(void) {
    h5_quiet();
    snprintf(g_tmp, sizeof g_tmp, "%s", tu_path("/select"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_tmp);
    if (system(cmd) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_stratified),
        cmocka_unit_test(test_holdout_datasets),
        cmocka_unit_test(test_tta_mean_of_two_passes),
        cmocka_unit_test(test_ema_hand_and_resume),
        cmocka_unit_test(test_ema_from_plain_checkpoint),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    if (rc == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
        system(cmd);
    }
    return rc;
}
