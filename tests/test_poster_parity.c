// The reduced POSTER model (depth 1, ir_units 2,1,2, 3 pyramid levels, token
// mix on, landmark_bn batch, 7 classes) against the float64 PyTorch reference
// of tests/fixtures/poster_small.h5 (tests/reference/make_poster_fixture.py):
// same deterministic weights and input by the contract (poster_fill_deterministic),
// then eval logits, train logits, loss, every gradient and every BatchNorm
// running statistic after the train forward.
#include "test_util.h"

#include "layers/layers.h"
#include "layers/poster.h"
#include "layers/loss.h"
#include "autograd/ops_ref.h"

#define FIXTURE "poster_small.h5"

typedef struct names {
    char **v;
    int n, cap;
} names;

// Collects "<name>" from "<name>/<suffix>" dataset paths.
static int collect_suffix(const char *path, void *ctx, const char *suffix) {
    names *l = ctx;
    size_t n = strlen(path), k = strlen(suffix);
    if (n <= k || strcmp(path + n - k, suffix)) return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, (size_t)l->cap * sizeof(char *));
    }
    l->v[l->n] = strndup(path, n - k);
    l->n++;
    return 0;
}
static int collect_index(const char *path, void *ctx) { return collect_suffix(path, ctx, "/index"); }

static void names_free(names *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static poster_model *small_model(void) {
    poster_opts o;
    char err[512];
    assert_int_equal(poster_opts_from_text("depth=1 pyramid_levels=3 token_mix=on "
                                           "landmark_bn=batch streams=both num_classes=7 "
                                           "ir_units=2,1,2 drop_path_rate=0.1",
                                           &o, err, sizeof err), 0);
    poster_model *m = poster_create(&o, 1, err, sizeof err);
    if (!m) fail_msg("%s", err);
    poster_fill_deterministic(poster_store(m));
    return m;
}

// Reads group/index and group/values; returns the count, gathers ours at those indices.
static int64_t sampled(hid_t f, const char *group, const float *ours, int64_t numel,
                       float **want, float **got) {
    char p[400], err[512];
    int64_t n;
    snprintf(p, sizeof p, "%s/index", group);
    int64_t *idx = tu_fixture_int64(f, p, &n);
    snprintf(p, sizeof p, "%s/values", group);
    int nd, sh[T_MAXDIM];
    if (h5_read_floats(f, p, want, &nd, sh, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(shape_numel(nd, sh), n);
    *got = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= numel) fail_msg("%s: index %lld out of range", group, (long long)idx[i]);
        (*got)[i] = ours[idx[i]];
    }
    free(idx);
    return n;
}

static double norm2(const float *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

// u_i(name) (docs/POSTER.md, "Deterministic test weights") equals the Python
// reference's bit for bit, on the names and indices of tests/fixtures/contract_ref.h5
// (tests/reference/ref_contract.py), indices past 2^32 included.
static int collect_u(const char *path, void *ctx) { return collect_suffix(path, ctx, "/values"); }

static void check_contract_u(void) {
    hid_t f = tu_fixture_open("contract_ref.h5");
    char fmt[64];
    int64_t version = 0;
    assert_int_equal(h5_read_attr_str(f, "/", "format", fmt, sizeof fmt), 0);
    assert_string_equal(fmt, "poster-contract-fixture");
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &version), 0);
    assert_int_equal(version, 1);
    names l = {0};
    h5_list_datasets(f, "u", collect_u, &l);
    assert_true(l.n >= 4);
    int checked = 0, saw_input = 0, saw_bias = 0;
    for (int i = 0; i < l.n; i++) {
        const char *name = l.v[i];
        char p[400];
        int64_t n;
        snprintf(p, sizeof p, "u/%s/index", name);
        int64_t *idx = tu_fixture_int64(f, p, &n);
        snprintf(p, sizeof p, "u/%s/values", name);
        double *want = malloc((size_t)n * sizeof(double));
        hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
        assert_true(d >= 0);
        assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, want) >= 0);
        H5Dclose(d);
        for (int64_t k = 0; k < n; k++, checked++) {
            double got = poster_contract_u(name, idx[k]);
            if (got != want[k])
                fail_msg("u_%lld(\"%s\"): %.17g, reference %.17g", (long long)idx[k], name, got,
                         want[k]);
        }
        saw_input += !strcmp(name, "input");
        saw_bias += !strcmp(name, "head.linear.bias");
        free(idx);
        free(want);
    }
    assert_true(saw_input && saw_bias);
    assert_true(checked >= 10);
    names_free(&l);
    h5_close(f);
}

// The generator reproduces the reference's contract values and input.
static void test_contract_values(void **state) {
    (void)state;
    check_contract_u();

    poster_model *m = small_model();
    param_store *s = poster_store(m);
    hid_t f = tu_fixture_open(FIXTURE);
    names l = {0};
    h5_list_datasets(f, "contract", collect_index, &l);
    assert_true(l.n >= 8);
    for (int i = 0; i < l.n; i++) {
        param *p = store_find(s, l.v[i]);
        if (!p) fail_msg("contract tensor %s not in the model", l.v[i]);
        char g[300];
        snprintf(g, sizeof g, "contract/%s", l.v[i]);
        float *want, *got;
        float cnt = 0;
        int64_t n;
        if (p->kind == PARAM_COUNTER) {
            cnt = (float)*p->counter;
            n = sampled(f, g, &cnt, 1, &want, &got);
        } else {
            n = sampled(f, g, p->t.data, p->numel, &want, &got);
        }
        for (int64_t k = 0; k < n; k++)
            if (got[k] != want[k])
                fail_msg("%s[%lld]: %.9g, reference %.9g", l.v[i], (long long)k, got[k], want[k]);
        free(want);
        free(got);
    }
    // The input.
    int64_t numel = 3 * 3 * 224 * 224;
    float *x = malloc((size_t)numel * sizeof(float));
    poster_contract_input(x, numel, "input", 1.5f);
    float *want, *got;
    int64_t n = sampled(f, "input_sample", x, numel, &want, &got);
    for (int64_t k = 0; k < n; k++) assert_true(got[k] == want[k]);
    free(want);
    free(got);
    free(x);
    names_free(&l);
    h5_close(f);
    poster_free(m);
}

// By-name roles (poster_contract_role) equal the roles the modules declared,
// for every option set the reference was checked on.
static void test_contract_roles(void **state) {
    (void)state;
    const char *variants[] = {
        "", "depth=1 ir_units=2,1,2", "pyramid_levels=1", "pyramid_levels=2",
        "token_mix=off", "streams=image", "num_classes=8",
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        poster_opts o;
        char err[512];
        assert_int_equal(poster_opts_from_text(variants[v], &o, err, sizeof err), 0);
        poster_model *m = poster_create(&o, 1, err, sizeof err);
        assert_non_null(m);
        param_store *s = poster_store(m);
        for (int i = 0; i < s->n; i++) {
            int by_name = poster_contract_role(s->params[i].name, s->params[i].ndim);
            if (by_name != poster_param_role(m, i))
                fail_msg("%s (%s): role by name %d, declared %d", s->params[i].name,
                         variants[v], by_name, poster_param_role(m, i));
        }
        poster_free(m);
    }
}

static void test_parity(void **state) {
    (void)state;
    poster_model *m = small_model();
    param_store *s = poster_store(m);
    hid_t f = tu_fixture_open(FIXTURE);
    const int B = 3;
    int64_t numel = (int64_t)B * 3 * 224 * 224;
    tensor *x = tensor_new(T_SHAPE(B, 3, 224, 224));
    poster_contract_input(x->data, numel, "input", 1.5f);
    int64_t nt;
    int64_t *target = tu_fixture_int64(f, "target", &nt);
    assert_int_equal(nt, B);
    char err[512];
    double gmax = 0;
    {   // h5_read_attr_* has no double version: read the attribute directly.
        hid_t a = H5Aopen_by_name(f, "/", "grad_max_norm", H5P_DEFAULT, H5P_DEFAULT);
        assert_true(a >= 0);
        assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &gmax) >= 0);
        H5Aclose(a);
    }
    assert_true(gmax > 0);

    // 1. eval forward
    bool prev = ag_no_grad_begin();
    tensor *le = poster_forward(m, x, false, NULL);
    ag_no_grad_end(prev);
    tensor *ref = tu_fixture_tensor(f, "logits_eval");
    assert_true(tensor_same_shape(le, ref));
    double e = tu_norm_err(le->data, ref->data, ref->numel, 1e-12);
    printf("logits_eval  rel %.2e\n", e);
    assert_true(e <= 1e-4);

    // 2. train forward (drop path off) + backward of the official loss
    poster_set_drop_path(m, 0.0f);
    store_zero_grad(s);
    tensor *lt = poster_forward(m, x, true, NULL);
    loss_opts lo;
    loss_opts_default(&lo);
    tensor *loss = loss_compute(&lo, lt, target);
    ag_backward(loss);
    ref = tu_fixture_tensor(f, "logits_train");
    e = tu_norm_err(lt->data, ref->data, ref->numel, 1e-12);
    printf("logits_train rel %.2e\n", e);
    assert_true(e <= 1e-4);
    ref = tu_fixture_tensor(f, "loss_train");
    e = fabs((double)loss->data[0] - ref->data[0]) / fabs(ref->data[0]);
    printf("loss         rel %.2e (%.6f)\n", e, (double)loss->data[0]);
    assert_true(e <= 1e-4);

    // 3. gradients: the reference's set equals our gradient-receiving tensors
    names gl = {0};
    h5_list_datasets(f, "grad", collect_index, &gl);
    int n_train = 0;
    for (int i = 0; i < s->n; i++) n_train += s->params[i].kind == PARAM_TRAINABLE;
    assert_int_equal(gl.n, n_train);
    double worst = 0;
    const char *worst_name = "";
    int bad = 0;
    for (int i = 0; i < gl.n; i++) {
        param *p = store_find(s, gl.v[i]);
        if (!p || p->kind != PARAM_TRAINABLE) fail_msg("%s: gets a gradient in torch, not here", gl.v[i]);
        char g[300];
        snprintf(g, sizeof g, "grad/%s", gl.v[i]);
        int64_t zero = 0;
        h5_read_attr_i64(f, g, "structural_zero", &zero);
        char pn[320];
        snprintf(pn, sizeof pn, "grad/%s/norm", gl.v[i]);
        tensor *rn = tu_fixture_tensor(f, pn);
        double ours = norm2(p->t.grad, p->numel);
        if (zero) {
            if (!(ours <= 1e-5 * gmax)) {
                printf("FAIL %s: structurally zero, ||g|| = %.3g\n", gl.v[i], ours);
                bad++;
            }
            continue;
        }
        float *want, *got;
        int64_t n = sampled(f, g, p->t.grad, p->numel, &want, &got);
        double ev = tu_norm_err(got, want, n, 1e-30);
        double en = fabs(ours - rn->data[0]) / rn->data[0];
        if (ev > worst) worst = ev, worst_name = p->name;
        if (getenv("PARITY_VERBOSE")) printf("  %-55s %.2e\n", p->name, ev);
        if (!(ev <= 1e-3 && en <= 1e-3)) {
            printf("FAIL %s: values rel %.3g, norm %.6g vs %.6g\n", gl.v[i], ev, ours,
                   (double)rn->data[0]);
            bad++;
        }
        free(want);
        free(got);
    }
    printf("gradients: %d compared, worst sampled rel %.2e (%s)\n", gl.n, worst, worst_name);
    assert_int_equal(bad, 0);
    names_free(&gl);

    // 4. BatchNorm running statistics after the one train forward
    names rl = {0};
    h5_list_datasets(f, "running", collect_index, &rl);
    int n_buf = 0;
    for (int i = 0; i < s->n; i++) n_buf += s->params[i].kind == PARAM_BUFFER;
    assert_int_equal(rl.n, n_buf);
    double rworst = 0;
    for (int i = 0; i < rl.n; i++) {
        param *p = store_find(s, rl.v[i]);
        if (!p) fail_msg("%s: not in the model", rl.v[i]);
        char g[300];
        snprintf(g, sizeof g, "running/%s", rl.v[i]);
        float *want, *got;
        int64_t n = sampled(f, g, p->t.data, p->numel, &want, &got);
        double ev = tu_norm_err(got, want, n, 1e-30);
        if (ev > rworst) rworst = ev;
        if (!(ev <= 1e-4)) fail_msg("%s: rel %.3g", rl.v[i], ev);
        free(want);
        free(got);
    }
    printf("running stats: %d compared, worst rel %.2e\n", rl.n, rworst);
    names_free(&rl);

    // Counters: every BatchNorm that ran counted one batch; the skipped GDC none.
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind != PARAM_COUNTER) continue;
        bool gdc = !strncmp(p->name, "face_landback.output_layer.", 27);
        bool unused = !strncmp(p->name, "ir_back.output_layer.", 21);
        int64_t want = gdc || unused ? 0 : 1;
        if (*p->counter != want)
            fail_msg("%s = %lld, expected %lld", p->name, (long long)*p->counter, (long long)want);
    }
    (void)err;
    free(target);
    h5_close(f);
    ag_step_reset();
    poster_free(m);
}

int main(void) {
    ops_set_threads(2);
    if (getenv("PARITY_NO_WINOGRAD")) conv_set_winograd(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract_values),
        cmocka_unit_test(test_contract_roles),
        cmocka_unit_test(test_parity),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
