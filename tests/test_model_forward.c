// POSTER forward behaviour on the reduced model (depth 1-2, ir_units 2,1,2,
// batch 2): input sizes, train/eval BatchNorm modes of both streams
// (landmark_bn, streams), which tensors get gradients, drop path, and the
// `poster forward` / `poster info` commands (errors included).
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include "layers/layers.h"
#include "layers/poster.h"
#include "layers/state_io.h"
#include "cli/cli.h"
#include "layers/loss.h"

#define SMALL "depth=1 ir_units=2,1,2"

static poster_model *make(const char *text) {
    poster_opts o;
    char err[512];
    if (poster_opts_from_text(text, &o, err, sizeof err)) fail_msg("%s: %s", text, err);
    poster_model *m = poster_create(&o, 3, err, sizeof err);
    if (!m) fail_msg("%s: %s", text, err);
    poster_fill_deterministic(poster_store(m));
    return m;
}

static tensor *input(int B, float scale) {
    tensor *x = tensor_new(T_SHAPE(B, 3, 224, 224));
    poster_contract_input(x->data, x->numel, "input", scale);
    return x;
}

static tensor *forward_nograd(poster_model *m, tensor *x, bool train, rng *r) {
    bool prev = ag_no_grad_begin();
    tensor *y = poster_forward(m, x, train, r);
    ag_no_grad_end(prev);
    return y;
}

static float *copy_of(const float *p, int64_t n) {
    float *c = malloc((size_t)n * sizeof(float));
    memcpy(c, p, (size_t)n * sizeof(float));
    return c;
}

static bool same(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

// ---------------------------------------------------------------------------

static void test_input_112(void **state) {
    (void)state;
    poster_model *m = make(SMALL);
    tensor *x = input(2, 1.5f);
    tensor *a = forward_nograd(m, x, false, NULL);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 7);
    tensor *b = forward_nograd(m, op_subsample(x, 2), false, NULL);
    assert_true(same(a->data, b->data, a->numel));
    for (int64_t i = 0; i < a->numel; i++) assert_true(isfinite(a->data[i]));
    ag_step_reset();
    poster_free(m);
}

// The fused inference path (nn_set_infer_fusion: conv + BatchNorm + PReLU +
// residual in one op) gives exactly the floats of the ops one after another:
// in evaluation (both streams fused) and in a no-grad training forward with
// landmark_bn=frozen (the landmark stream fused, IR-50 on batch statistics).
static void test_infer_fusion(void **state) {
    (void)state;
    const struct { const char *opts; bool train; } cases[] = {
        {SMALL, false}, {SMALL " landmark_bn=frozen", true}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        float *y[2];
        int64_t n = 0;
        for (int f = 0; f < 2; f++) {
            poster_model *m = make(cases[k].opts);
            nn_set_infer_fusion(f);
            rng r;
            rng_seed(&r, 7);
            tensor *t = forward_nograd(m, input(2, 1.5f), cases[k].train, &r);
            n = t->numel;
            y[f] = copy_of(t->data, n);
            ag_step_reset();
            poster_free(m);
        }
        nn_set_infer_fusion(true);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += y[0][i] != y[1][i];
        if (bad) fail_msg("%s: %lld of %lld logits differ with fusion", cases[k].opts,
                          (long long)bad, (long long)n);
        free(y[0]);
        free(y[1]);
    }
}

// SAM's second pass with the landmark stream's first-pass output
// (poster_landmark_reuse): logits, every float of the state (running
// statistics included) and every counter bit-identical to running the stream
// twice; a different input in the second pass runs the stream again.
typedef struct two_pass {
    float *logits[2], *state;
    int64_t *counters, nl, ns;
    int nc, hits;
} two_pass;

static two_pass run_two_passes(bool reuse, float second_scale) {
    poster_model *m = make(SMALL " drop_path_rate=0");
    param_store *s = poster_store(m);
    two_pass o = {0};
    for (int k = 0; k < 2; k++) {
        if (reuse) poster_landmark_reuse(m, k == 0 ? POSTER_LM_RECORD : POSTER_LM_REPLAY);
        tensor *t = forward_nograd(m, input(2, k == 0 ? 1.5f : second_scale), true, NULL);
        o.nl = t->numel;
        o.logits[k] = copy_of(t->data, t->numel);
        if (reuse) poster_landmark_reuse(m, POSTER_LM_OFF);
        ag_step_reset();
        // SAM moves the trainable weights between the passes; the stream's stay.
        if (k == 0)
            for (int64_t i = 0; i < s->n_train; i++) s->data[i] += 1e-3f * (float)(i % 7);
    }
    o.hits = poster_landmark_reuse_hits(m);
    o.ns = s->n_float;
    o.state = copy_of(s->data, s->n_float);
    o.nc = s->n_counters;
    o.counters = malloc((size_t)s->n_counters * sizeof(int64_t));
    memcpy(o.counters, s->counters, (size_t)s->n_counters * sizeof(int64_t));
    poster_free(m);
    return o;
}

static void free_two_pass(two_pass *o) {
    free(o->logits[0]);
    free(o->logits[1]);
    free(o->state);
    free(o->counters);
}

static void test_landmark_reuse(void **state) {
    (void)state;
    for (int c = 0; c < 2; c++) {
        float second = c == 0 ? 1.5f : 1.25f;   // the same input, then another one
        two_pass a = run_two_passes(false, second), b = run_two_passes(true, second);
        assert_int_equal(b.hits, c == 0 ? 1 : 0);
        for (int k = 0; k < 2; k++) assert_true(same(a.logits[k], b.logits[k], a.nl));
        assert_true(same(a.state, b.state, a.ns));
        assert_int_equal(a.nc, b.nc);
        assert_memory_equal(a.counters, b.counters, (size_t)a.nc * sizeof(int64_t));
        if (c == 0) assert_false(same(a.logits[0], a.logits[1], a.nl));   // the weights moved
        free_two_pass(&a);
        free_two_pass(&b);
    }
}

// Running statistics of each stream after one train forward, per option.
static void test_bn_modes(void **state) {
    (void)state;
    const char *lm = "face_landback.conv_4.3.conv_dw.bn.running_var";
    const char *ir = "ir_back.body.1.res_layer.0.running_mean";
    struct {
        const char *opts;
        bool train, lm_changes, ir_changes;
    } cases[] = {
        {SMALL, false, false, false},
        {SMALL, true, true, true},                                   // the official quirk
        {SMALL " landmark_bn=frozen", true, false, true},
        {SMALL " streams=image", true, false, true},
    };
    float *logits_both = NULL;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tensor *x = input(1, 1.5f);   // the arena is reset after each case
        poster_model *m = make(cases[k].opts);
        param_store *s = poster_store(m);
        param *pl = store_find(s, lm), *pi = store_find(s, ir);
        float *l0 = copy_of(pl->t.data, pl->numel), *i0 = copy_of(pi->t.data, pi->numel);
        float *all0 = copy_of(s->data, s->n_float);
        tensor *y = forward_nograd(m, x, cases[k].train, NULL);
        if (cases[k].lm_changes == same(l0, pl->t.data, pl->numel)) fail_msg("%s: landmark stats", cases[k].opts);
        if (cases[k].ir_changes == same(i0, pi->t.data, pi->numel)) fail_msg("%s: ir stats", cases[k].opts);
        for (int i = 0; i < s->n; i++) {
            param *p = &s->params[i];
            bool gdc = strstr(p->name, "output_layer.") != NULL;   // never computed
            bool lmk = !strncmp(p->name, "face_landback.", 14);
            if (p->kind == PARAM_COUNTER) {
                int64_t want = !cases[k].train || gdc ? 0 : lmk ? cases[k].lm_changes : 1;
                if (*p->counter != want)
                    fail_msg("%s: %s = %lld, want %lld", cases[k].opts, p->name,
                             (long long)*p->counter, (long long)want);
            } else if (p->kind != PARAM_BUFFER || gdc) {
                // Parameters never change in a forward; unused BNs keep their stats.
                assert_true(same(all0 + p->offset, p->t.data, p->numel));
            }
        }
        if (k == 1) logits_both = copy_of(y->data, y->numel);
        if (k == 3) assert_false(same(logits_both, y->data, y->numel));
        free(l0);
        free(i0);
        free(all0);
        ag_step_reset();
        poster_free(m);
    }
    free(logits_both);
}

// Gradients reach exactly the TRAINABLE tensors (not the landmark stream, not
// ir_back.output_layer, not cls_token, not model.freeze'd prefixes).
static void test_gradients(void **state) {
    (void)state;
    const char *variants[] = {SMALL, SMALL " freeze=ir_back.,head."};
    for (int v = 0; v < 2; v++) {
        poster_model *m = make(variants[v]);
        param_store *s = poster_store(m);
        store_zero_grad(s);
        tensor *x = input(1, 1.5f);   // batch 1: BatchNorm still sees >= 49 values
        tensor *y = poster_forward(m, x, true, NULL);
        loss_opts lo;
        loss_opts_default(&lo);
        int64_t target[1] = {6};
        tensor *loss = loss_compute(&lo, y, target);
        assert_true(isfinite(loss->data[0]));
        ag_backward(loss);
        int nonzero = 0, n_train = 0;
        for (int i = 0; i < s->n; i++) {
            param *p = &s->params[i];
            bool frozen_by_opt = v == 1 && (!strncmp(p->name, "ir_back.", 8) ||
                                            !strncmp(p->name, "head.", 5));
            if (p->kind == PARAM_TRAINABLE) {
                assert_false(frozen_by_opt);
                n_train++;
                double g = 0;
                for (int64_t j = 0; j < p->numel; j++) {
                    assert_true(isfinite(p->t.grad[j]));
                    g += fabs(p->t.grad[j]);
                }
                nonzero += g > 0;
            } else if (p->kind == PARAM_FROZEN || p->kind == PARAM_UNUSED) {
                assert_null(p->t.grad);   // nothing allocated a gradient for it
                assert_false(p->t.requires_grad);
            }
        }
        // All but a handful (structural zeros need exact arithmetic) move.
        assert_true(nonzero >= n_train - 2);
        assert_true(n_train > 40);
        ag_step_reset();
        poster_free(m);
    }
}

static void test_drop_path(void **state) {
    (void)state;
    poster_model *m = make("depth=3 ir_units=2,1,2 drop_path_rate=0.2");
    // linspace(0, 0.2, 3)
    assert_true(poster_block_drop_rate(m, 0) == 0.0f);
    assert_true(fabsf(poster_block_drop_rate(m, 1) - 0.1f) < 1e-7f);
    assert_true(fabsf(poster_block_drop_rate(m, 2) - 0.2f) < 1e-7f);
    poster_set_drop_path(m, 0.0f);
    assert_true(poster_block_drop_rate(m, 2) == 0.0f);
    poster_free(m);

    m = make("depth=2 ir_units=2,1,2");
    poster_set_drop_path(m, 0.6f);   // block 1: 0.6
    tensor *x = input(2, 1.5f);
    rng r1, r2;
    rng_seed(&r1, 11);
    rng_seed(&r2, 11);
    tensor *a = forward_nograd(m, x, true, &r1);
    tensor *b = forward_nograd(m, x, true, &r2);
    assert_true(same(a->data, b->data, a->numel));   // same stream, same masks
    tensor *c = forward_nograd(m, x, true, &r1);      // the stream moved on
    assert_false(same(a->data, c->data, a->numel));
    poster_set_drop_path(m, 0.0f);
    tensor *d = forward_nograd(m, x, true, NULL);     // off: no rng needed
    tensor *e = forward_nograd(m, x, true, &r1);
    assert_true(same(d->data, e->data, d->numel));
    poster_set_drop_path(m, 0.6f);
    tensor *f1 = forward_nograd(m, x, false, NULL);   // eval: identity
    poster_set_drop_path(m, 0.0f);
    tensor *f2 = forward_nograd(m, x, false, NULL);
    assert_true(same(f1->data, f2->data, f1->numel));
    ag_step_reset();
    poster_free(m);
}

// ---------------------------------------------------------------------------
// CLI

static int run(const char *const *args) {
    char *argv[32];
    int argc = 0;
    while (args[argc]) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    int rc = !strcmp(args[0], "forward") ? cli_forward(argc, argv) : cli_info(argc, argv);
    fflush(stdout);
    return rc;
}

static void write_input(const char *path, tensor *x, const int64_t *target, int nt) {
    char err[512];
    hid_t f = h5_create(path, err, sizeof err);
    assert_true(f >= 0);
    assert_int_equal(h5_write_floats(f, "input", x->data, x->ndim, x->shape, err, sizeof err), 0);
    if (target)
        assert_int_equal(h5_write_int64s(f, "target", target, 1, (int[]){nt}, err, sizeof err), 0);
    h5_close(f);
}

static void test_cli_forward(void **state) {
    (void)state;
    mkdir(tu_tmpdir(), 0755);
    char err[512];
    poster_model *m = make(SMALL);
    param_store *s = poster_store(m);
    char opt[700];
    poster_opts_text(poster_options(m), opt, sizeof opt);
    assert_int_equal(state_save(tu_path("/W.h5"), s, opt, err, sizeof err), 0);
    tensor *x = input(2, 1.5f);
    int64_t target[2] = {3, 5};
    write_input(tu_path("/IN.h5"), x, target, 2);
    // Inputs for the error cases (the CLI resets the arena: write them first).
    tensor *bad_x = tensor_new(T_SHAPE(2, 3, 100, 100));
    memset(bad_x->data, 0, (size_t)bad_x->numel * sizeof(float));
    write_input(tu_path("/BADSHAPE.h5"), bad_x, target, 2);
    int64_t bad_t[2] = {3, 9};
    write_input(tu_path("/BADTARGET.h5"), x, bad_t, 2);
    write_input(tu_path("/NOTARGET.h5"), x, NULL, 0);

    // In process: the reference.
    store_zero_grad(s);
    tensor *y = poster_forward(m, x, true, NULL);
    loss_opts lo;
    loss_opts_default(&lo);
    tensor *loss = loss_compute(&lo, y, target);
    ag_backward(loss);
    float *want_logits = copy_of(y->data, y->numel), want_loss = loss->data[0];
    int64_t n_logits = y->numel;

    unlink(tu_path("/OUT.h5"));
    const char *ok[] = {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/IN.h5"),
                        "--output", tu_path("/OUT.h5"), "--train-mode", "--grad", NULL};
    assert_int_equal(run(ok), 0);
    hid_t f = h5_open_read(tu_path("/OUT.h5"), err, sizeof err);
    assert_true(f >= 0);
    float *v;
    int nd, sh[T_MAXDIM];
    assert_int_equal(h5_read_floats(f, "logits", &v, &nd, sh, err, sizeof err), 0);
    assert_int_equal(nd, 2);
    assert_true(tu_rel_err(v, want_logits, n_logits, 1e-6) <= 1e-6);
    free(want_logits);
    free(v);
    assert_int_equal(h5_read_floats(f, "loss", &v, &nd, sh, err, sizeof err), 0);
    assert_int_equal(nd, 0);
    assert_true(fabsf(v[0] - want_loss) <= 1e-6f * fabsf(want_loss));
    free(v);
    int n_grad = 0;
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        char name[200];
        snprintf(name, sizeof name, "grad/%s", p->name);
        if (p->kind != PARAM_TRAINABLE) {
            assert_false(h5_exists(f, name));
            continue;
        }
        assert_int_equal(h5_read_floats(f, name, &v, &nd, sh, err, sizeof err), 0);
        assert_int_equal(shape_numel(nd, sh), p->numel);
        assert_true(tu_rel_err(v, p->t.grad, p->numel, 1e-12) <= 1e-5);
        free(v);
        n_grad++;
    }
    assert_int_equal(n_grad, 142);
    assert_true(h5_exists(f, "running/ir_back.input_layer.1.running_var"));
    h5_close(f);

    // Eval, no grad: logits only.
    const char *ev[] = {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/IN.h5"),
                        "--output", tu_path("/OUT2.h5"), NULL};
    assert_int_equal(run(ev), 0);
    f = h5_open_read(tu_path("/OUT2.h5"), err, sizeof err);
    assert_true(h5_exists(f, "logits"));
    assert_false(h5_exists(f, "loss"));
    assert_false(h5_exists(f, "grad"));
    h5_close(f);

    // Errors: non-zero, no output file left behind.
    const char *cases[][12] = {
        {"forward", "--input", tu_path("/IN.h5"), "--output", tu_path("/E.h5"), NULL},   // no weights
        {"forward", "--weights", tu_path("/nope.h5"), "--input", tu_path("/IN.h5"), "--output", tu_path("/E.h5"), NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/nope.h5"), "--output", tu_path("/E.h5"), NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/BADSHAPE.h5"), "--output", tu_path("/E.h5"), NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/BADTARGET.h5"), "--output", tu_path("/E.h5"), "--grad", NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/NOTARGET.h5"), "--output", tu_path("/E.h5"), "--grad", NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/IN.h5"), "--output", tu_path("/E.h5"), "--set", "model.num_classes=8", NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/IN.h5"), "--output", tu_path("/E.h5"), "--bogus", NULL},
        {"forward", "--weights", tu_path("/W.h5"), "--input", tu_path("/IN.h5"), "--output", tu_path("/nonexistent_dir/E.h5"), NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unlink(tu_path("/E.h5"));
        if (run(cases[k]) == 0) fail_msg("error case %zu returned 0", k);
        assert_int_equal(access(tu_path("/E.h5"), F_OK), -1);
        assert_int_equal(access(tu_path("/E.h5.tmp"), F_OK), -1);
    }
    ag_step_reset();
    poster_free(m);
}

static void test_cli_info(void **state) {
    (void)state;
    const char *ok[] = {"info", "--set", "model.depth=4", NULL};
    assert_int_equal(run(ok), 0);
    const char *bad1[] = {"info", "--set", "model.pyramid_levels=5", NULL};
    assert_int_not_equal(run(bad1), 0);
    const char *bad2[] = {"info", "--set", "model.freeze=nothing.", NULL};
    assert_int_not_equal(run(bad2), 0);
    const char *bad3[] = {"info", "--config", tu_path("/missing.ini"), NULL};
    assert_int_not_equal(run(bad3), 0);
    const char *bad4[] = {"info", "extra", NULL};
    assert_int_not_equal(run(bad4), 0);
}

int main(void) {
    ops_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_112),
        cmocka_unit_test(test_bn_modes),
        cmocka_unit_test(test_infer_fusion),
        cmocka_unit_test(test_landmark_reuse),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_drop_path),
        cmocka_unit_test(test_cli_forward),
        cmocka_unit_test(test_cli_info),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
