// Optimizers and schedules against PyTorch: a two-layer network built with
// op_linear, 3 steps of SGD (momentum, Nesterov, weight decay), Adam, AdamW,
// SAM+Adam and ASAM+SGD; parameters must match torch within 1e-5 relative.
// The loss 2*LSCE(0.2)+CE is computed here in double and seeded into the tape,
// so this test depends only on op_linear and the optimizers. The schedules
// against torch's schedulers (tests/fixtures/sched_ref.h5, tests/reference/ref_sched.py).
#include "test_util.h"
#include "train/optim.h"
#include "train/sched.h"

enum { B = 8, D = 5, H = 6, K = 4, STEPS = 3 };

typedef struct net {
    param_store s;
    int w1, b1, w2, b2, frozen, unused;
} net;

static void net_init(net *n, hid_t f) {
    store_init(&n->s);
    n->w1 = store_add(&n->s, "fc1.weight", PARAM_TRAINABLE, T_SHAPE(H, D));
    n->frozen = store_add(&n->s, "frozen.weight", PARAM_FROZEN, T_SHAPE(3));
    n->b1 = store_add(&n->s, "fc1.bias", PARAM_TRAINABLE, T_SHAPE(H));
    n->unused = store_add(&n->s, "unused.weight", PARAM_UNUSED, T_SHAPE(2, 2));
    n->w2 = store_add(&n->s, "fc2.weight", PARAM_TRAINABLE, T_SHAPE(K, H));
    n->b2 = store_add(&n->s, "fc2.bias", PARAM_TRAINABLE, T_SHAPE(K));
    store_finalize(&n->s);
    const char *names[4] = {"init/w1", "init/b1", "init/w2", "init/b2"};
    int idx[4] = {n->w1, n->b1, n->w2, n->b2};
    for (int i = 0; i < 4; i++) {
        tensor *t = tu_fixture_tensor(f, names[i]);
        tensor *p = store_tensor(&n->s, idx[i]);
        assert_int_equal(t->numel, p->numel);
        memcpy(p->data, t->data, (size_t)t->numel * sizeof(float));
    }
    for (int i = 0; i < 3; i++) store_tensor(&n->s, n->frozen)->data[i] = 1.5f + i;
    for (int i = 0; i < 4; i++) store_tensor(&n->s, n->unused)->data[i] = -0.5f;
}

// 2 * LSCE(0.2) + CE, mean over the batch: value and d/dlogits, in double.
static double official_loss(const float *z, const int64_t *y, float *dz) {
    const double s = 0.2, wl = 2.0, wc = 1.0;
    double total = 0;
    for (int i = 0; i < B; i++) {
        const float *r = z + i * K;
        double mx = r[0];
        for (int k = 1; k < K; k++) mx = r[k] > mx ? r[k] : mx;
        double se = 0;
        for (int k = 0; k < K; k++) se += exp(r[k] - mx);
        double lse = mx + log(se), mean_nlp = 0;
        for (int k = 0; k < K; k++) mean_nlp += (lse - r[k]) / K;
        double nll = lse - r[y[i]];
        total += wl * ((1 - s) * nll + s * mean_nlp) + wc * nll;
        for (int k = 0; k < K; k++) {
            double p = exp(r[k] - lse), onehot = k == y[i];
            double g = wl * ((1 - s) * (p - onehot) + s * (p - 1.0 / K)) + wc * (p - onehot);
            dz[i * K + k] = (float)(g / B);
        }
    }
    return total / B;
}

// forward + backward for batch `step`; gradients accumulate into the store.
static void fwd_bwd(net *n, hid_t f, int step) {
    tensor *xs = tu_fixture_tensor(f, "x");
    int64_t cnt;
    int64_t *ys = tu_fixture_int64(f, "y", &cnt);
    tensor *x = tensor_from(T_SHAPE(B, D), xs->data + step * B * D);
    tensor *h = op_linear(x, store_tensor(&n->s, n->w1), store_tensor(&n->s, n->b1));
    tensor *z = op_linear(h, store_tensor(&n->s, n->w2), store_tensor(&n->s, n->b2));
    float dz[B * K];
    official_loss(z->data, ys + step * B, dz);
    ag_backward_seed(z, dz);
    free(ys);
    ag_step_reset();
}

static void run_case(const char *name, const optim_opts *o) {
    hid_t f = tu_fixture_open("optim_ref.h5");
    net n;
    net_init(&n, f);
    optimizer *opt = optim_create(&n.s, o);
    for (int step = 0; step < STEPS; step++) {
        store_zero_grad(&n.s);
        fwd_bwd(&n, f, step);
        if (o->sam) {
            optim_sam_perturb(opt);
            store_zero_grad(&n.s);
            fwd_bwd(&n, f, step);
            optim_sam_restore(opt);
        }
        optim_step(opt);
    }
    const char *keys[4] = {"w1", "b1", "w2", "b2"};
    int idx[4] = {n.w1, n.b1, n.w2, n.b2};
    for (int i = 0; i < 4; i++) {
        char path[64];
        snprintf(path, sizeof path, "%s/%s", name, keys[i]);
        tensor *want = tu_fixture_tensor(f, path);
        tensor *got = store_tensor(&n.s, idx[i]);
        double e = tu_rel_err(got->data, want->data, want->numel, 1e-6);
        if (!(e <= 1e-5)) fail_msg("%s: relative error %.3g > 1e-5", path, e);
    }
    // Tensors outside the trainable prefix never move.
    for (int i = 0; i < 3; i++) assert_true(store_tensor(&n.s, n.frozen)->data[i] == 1.5f + i);
    for (int i = 0; i < 4; i++) assert_true(store_tensor(&n.s, n.unused)->data[i] == -0.5f);
    optim_free(opt);
    store_free(&n.s);
    h5_close(f);
}

static void test_sgd(void **st) {
    (void)st;
    optim_opts o;
    optim_opts_default(&o);
    o.kind = OPTIM_SGD, o.sam = false, o.lr = 0.1, o.momentum = 0.9, o.weight_decay = 1e-2;
    run_case("sgd", &o);
    o.nesterov = true;
    run_case("sgd_nesterov", &o);
    o.nesterov = false, o.momentum = 0, o.weight_decay = 0;
    run_case("sgd_plain", &o);
}

static void test_adam_adamw(void **st) {
    (void)st;
    optim_opts o;
    optim_opts_default(&o);
    o.sam = false, o.lr = 1e-2, o.weight_decay = 1e-2;
    run_case("adam", &o);
    o.kind = OPTIM_ADAMW, o.beta1 = 0.8, o.beta2 = 0.99, o.eps = 1e-6, o.weight_decay = 0.1;
    run_case("adamw", &o);
}

static void test_sam(void **st) {
    (void)st;
    optim_opts o;
    optim_opts_default(&o);
    o.lr = 1e-2;   // SAM(rho 0.05) + Adam, as the official recipe
    run_case("sam_adam", &o);
    optim_opts_default(&o);
    o.kind = OPTIM_SGD, o.lr = 0.1, o.momentum = 0.9, o.rho = 0.5, o.adaptive = true;
    run_case("asam_sgd", &o);
}

static void test_state_roundtrip(void **st) {
    (void)st;
    hid_t f = tu_fixture_open("optim_ref.h5");
    net n;
    net_init(&n, f);
    optim_opts o;
    optim_opts_default(&o);
    optimizer *a = optim_create(&n.s, &o);
    store_zero_grad(&n.s);
    fwd_bwd(&n, f, 0);
    optim_step(a);
    char err[512];
    hid_t g = h5_create(tu_path("/optim_state.h5"), err, sizeof err);
    assert_true(g >= 0);
    assert_int_equal(optim_write(a, g, "optimizer", err, sizeof err), 0);
    h5_close(g);
    optimizer *b = optim_create(&n.s, &o);
    g = h5_open_read(tu_path("/optim_state.h5"), err, sizeof err);
    assert_int_equal(optim_read(b, g, "optimizer", err, sizeof err), 0);
    assert_int_equal(b->step, 1);
    assert_memory_equal(a->buf1, b->buf1, n.s.n_train * sizeof(float));
    assert_memory_equal(a->buf2, b->buf2, n.s.n_train * sizeof(float));
    optim_free(b);
    o.kind = OPTIM_SGD;   // a state of another kind is refused with a message
    b = optim_create(&n.s, &o);
    assert_int_not_equal(optim_read(b, g, "optimizer", err, sizeof err), 0);
    assert_non_null(strstr(err, "adam"));
    h5_close(g);
    optim_free(a);
    optim_free(b);
    store_free(&n.s);
    h5_close(f);
}

// tests/fixtures/sched_ref.h5 (tests/reference/ref_sched.py): float64 rates of
// torch's schedulers and their settings (attributes).
static double *sched_fixture(hid_t f, const char *group, int *n) {
    char p[128], err[512];
    int nd, sh[T_MAXDIM];
    snprintf(p, sizeof p, "%s/lr", group);
    if (h5_dataset_shape(f, p, &nd, sh, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(nd, 1);
    *n = sh[0];
    double *v = malloc((size_t)sh[0] * sizeof(double));
    hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    return v;
}

static double sched_attr(hid_t f, const char *group, const char *name) {
    double v = NAN;
    hid_t a = H5Aopen_by_name(f, group, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) fail_msg("sched_ref.h5: %s has no attribute %s", group, name);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    H5Aclose(a);
    return v;
}

static void expect_rate(const char *what, int i, double got, double want, double rtol) {
    if (!(fabs(got - want) <= rtol * fabs(want)))
        fail_msg("%s[%d]: lr %.17g, torch %.17g", what, i, got, want);
}

// Each schedule against torch's own scheduler, epoch by epoch (and, for the
// warmup, batch by batch): ExponentialLR and StepLR multiply by gamma in double
// exactly as ours do (bit-identical); CosineAnnealingLR's recursive form equals our
// closed form up to rounding.
static void test_sched(void **st) {
    (void)st;
    hid_t f = tu_fixture_open("sched_ref.h5");
    char fmt[64];
    int64_t version = 0;
    assert_int_equal(h5_read_attr_str(f, "/", "format", fmt, sizeof fmt), 0);
    assert_string_equal(fmt, "poster-sched-fixture");
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &version), 0);
    assert_int_equal(version, 1);
    int n;
    double *want;

    sched_opts s = {.kind = SCHED_EXPONENTIAL, .gamma = sched_attr(f, "exponential", "gamma"),
                    .epochs = 300};
    double base = sched_attr(f, "exponential", "base_lr");
    want = sched_fixture(f, "exponential", &n);
    assert_int_equal(n, 300);
    for (int e = 0; e < n; e++) {
        expect_rate("exponential", e, sched_lr(&s, base, e, 0, 10), want[e], 0);
        expect_rate("exponential", e, sched_lr(&s, base, e, 9, 10), want[e], 0);   // per epoch
    }
    free(want);

    s = (sched_opts){.kind = SCHED_COSINE, .min_lr = sched_attr(f, "cosine", "eta_min"),
                     .epochs = (int)sched_attr(f, "cosine", "t_max")};
    base = sched_attr(f, "cosine", "base_lr");
    want = sched_fixture(f, "cosine", &n);
    assert_int_equal(n, s.epochs + 1);
    for (int e = 0; e < n; e++) expect_rate("cosine", e, sched_lr(&s, base, e, 0, 1), want[e], 1e-12);
    free(want);

    s = (sched_opts){.kind = SCHED_STEP, .gamma = sched_attr(f, "step", "gamma"),
                     .step_size = (int)sched_attr(f, "step", "step_size"), .epochs = 12};
    base = sched_attr(f, "step", "base_lr");
    want = sched_fixture(f, "step", &n);
    assert_int_equal(n, 12);
    for (int e = 0; e < n; e++) expect_rate("step", e, sched_lr(&s, base, e, 0, 1), want[e], 0);
    free(want);

    s = (sched_opts){.kind = SCHED_EXPONENTIAL, .gamma = sched_attr(f, "warmup", "gamma"),
                     .warmup_epochs = sched_attr(f, "warmup", "warmup_epochs"), .epochs = 4};
    base = sched_attr(f, "warmup", "base_lr");
    int spe = (int)sched_attr(f, "warmup", "steps_per_epoch");
    want = sched_fixture(f, "warmup", &n);
    assert_int_equal(n, 4 * spe);
    for (int i = 0; i < n; i++)
        expect_rate("warmup", i, sched_lr(&s, base, i / spe, i % spe, spe), want[i], 1e-12);
    free(want);
    h5_close(f);
}

static void test_config(void **st) {
    (void)st;
    config c;
    config_init(&c);
    optim_config_register(&c);
    sched_config_register(&c);
    char err[2048];
    optim_opts o;
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    assert_int_equal(optim_opts_from_config(&c, &o, err, sizeof err), 0);
    assert_int_equal(o.kind, OPTIM_ADAM);   // official defaults
    assert_true(o.sam && o.rho == 0.05 && o.lr == 4e-5 && !o.adaptive);
    assert_int_equal(config_set(&c, "optim.name=rmsprop", err, sizeof err), 0);
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "adam|adamw|sgd"));
    config_init(&c);
    optim_config_register(&c);
    sched_config_register(&c);
    assert_int_equal(config_set(&c, "optim.lr=-1", err, sizeof err), 0);
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    config_init(&c);
    optim_config_register(&c);
    sched_config_register(&c);
    assert_int_equal(config_set(&c, "optim.betas=0.9", err, sizeof err), 0);
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "optim.beta1"));   // lists the valid keys
    config_init(&c);
    optim_config_register(&c);
    sched_config_register(&c);
    assert_int_equal(config_set(&c, "optim.name=sgd", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "optim.nesterov=on", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "optim.momentum=0", err, sizeof err), 0);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    assert_int_not_equal(optim_opts_from_config(&c, &o, err, sizeof err), 0);
    assert_non_null(strstr(err, "momentum"));
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),        cmocka_unit_test(test_adam_adamw),
        cmocka_unit_test(test_sam),        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_sched),      cmocka_unit_test(test_config),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
