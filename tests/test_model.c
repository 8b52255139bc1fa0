// The POSTER model's structure: every tensor of the official state dict under
// its name and shape (docs/poster_state_dict.tsv), parameter kinds, the
// parameter counts of docs/POSTER.md's "Sizes" table and the ablations, options and
// their validation, PyTorch-default initialization, and the HDF5 state files.
// Forward behaviour (modes, streams, drop path, CLI) is in test_model_forward.c;
// numerical parity with PyTorch in test_poster_parity.c.
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include "layers/layers.h"
#include "layers/poster.h"
#include "layers/state_io.h"

#define TSV "docs/poster_state_dict.tsv"

static poster_model *make(const char *text, uint64_t seed) {
    poster_opts o;
    char err[512];
    if (poster_opts_from_text(text, &o, err, sizeof err)) fail_msg("%s: %s", text, err);
    poster_model *m = poster_create(&o, seed, err, sizeof err);
    if (!m) fail_msg("%s: %s", text, err);
    return m;
}

static int64_t trainable(poster_model *m) {   // PyTorch's sense: requires_grad
    param_store *s = poster_store(m);
    return store_count(s, PARAM_TRAINABLE) + store_count(s, PARAM_UNUSED);
}

static bool starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static bool ends(const char *s, const char *p) {
    size_t n = strlen(s), k = strlen(p);
    return n >= k && !strcmp(s + n - k, p);
}

// ---------------------------------------------------------------------------

static void test_state_dict_matches_tsv(void **state) {
    (void)state;
    FILE *f = fopen(TSV, "r");
    if (!f) fail_msg("cannot open %s (run the tests from the repository root; the TSV lives "
                     "in docs/)", TSV);
    poster_model *m = make("", 1);
    param_store *s = poster_store(m);
    char line[512];
    int row = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        char *cols[4] = {line, "", "", ""};
        int nc = 1;
        for (char *p = line; *p && nc < 4; p++)
            if (*p == '\t') {
                *p = 0;
                cols[nc++] = p + 1;
            }
        if (row >= s->n) fail_msg("TSV row %d (%s) beyond the model's %d tensors", row + 1, cols[0], s->n);
        param *p = &s->params[row];
        if (strcmp(p->name, cols[0]))
            fail_msg("row %d: TSV %s, model %s", row + 1, cols[0], p->name);
        // shape: "scalar" or AxBxC
        int nd = 0, sh[T_MAXDIM];
        if (strcmp(cols[1], "scalar")) {
            char *q = cols[1];
            while (*q) {
                sh[nd++] = (int)strtol(q, &q, 10);
                if (*q == 'x') q++;
            }
        }
        bool same = nd == p->ndim;
        for (int d = 0; same && d < nd; d++) same = sh[d] == p->shape[d];
        if (!same) fail_msg("%s: TSV shape %s, model ndim %d", p->name, cols[1], p->ndim);
        bool is_int = !strcmp(cols[2], "int64");
        assert_true(is_int == (p->kind == PARAM_COUNTER));
        bool frozen = !strcmp(cols[3], "frozen");
        assert_true(frozen == starts(p->name, "face_landback."));
        // Kinds.
        bool running = ends(p->name, ".running_mean") || ends(p->name, ".running_var");
        enum param_kind want;
        if (is_int) want = PARAM_COUNTER;
        else if (running) want = PARAM_BUFFER;
        else if (frozen) want = PARAM_FROZEN;
        else if (starts(p->name, "ir_back.output_layer.") || !strcmp(p->name, "pyramid_fuse.cls_token"))
            want = PARAM_UNUSED;
        else want = PARAM_TRAINABLE;
        if (p->kind != want) fail_msg("%s: kind %d, expected %d", p->name, p->kind, want);
        row++;
    }
    fclose(f);
    assert_int_equal(row, 1309);
    assert_int_equal(s->n, 1309);
    poster_free(m);
}

// docs/POSTER.md's "Sizes" table, and the pyramid ablations derived from its
// per-block sizes.
static void test_parameter_counts(void **state) {
    (void)state;
    const int64_t block_l = 3690356, block_m = 932724, block_s = 242036, up = 20100,
                  down_m = 20100, down_s = 40100, conv = 100 * 100 + 100;
    struct {
        const char *opts;
        int64_t trainable;
    } cases[] = {
        {"", 70843151},
        {"num_classes=8", 70843664},          // + 513
        {"depth=6", 61032519},
        {"depth=4", 51221887},
        {"token_mix=off", 70600751},          // - 8 blocks x 3 levels x (100*100 + 100)
        // levels 2: per block no block_s, no upsample_s; no downsample_s:
        // 70,843,151 - 8 x (242,036 + 20,100) - 40,100 = 68,705,963
        {"pyramid_levels=2", 70843151 - 8 * (block_s + up) - down_s},
        // levels 1: also no block_m, no upsample_m, no downsample_m:
        // 68,705,963 - 8 x (932,724 + 20,100) - 20,100 = 61,063,271
        {"pyramid_levels=1", 70843151 - 8 * (block_s + up) - down_s - 8 * (block_m + up) - down_m},
        {"pyramid_levels=1 depth=4", 70843151 - 4 * (block_l + block_m + block_s + 2 * up) -
                                         4 * (block_s + up + block_m + up) - down_s - down_m},
    };
    assert_int_equal(cases[5].trainable, 68705963);
    assert_int_equal(cases[6].trainable, 61063271);
    assert_int_equal(70843151 - 70600751, 8 * 3 * conv);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        poster_model *m = make(cases[i].opts, 1);
        if (trainable(m) != cases[i].trainable)
            fail_msg("'%s': %lld trainable, expected %lld", cases[i].opts,
                     (long long)trainable(m), (long long)cases[i].trainable);
        param_store *s = poster_store(m);
        assert_int_equal(store_count(s, PARAM_FROZEN), 1007248);
        poster_free(m);
    }
    poster_model *m = make("", 1);
    param_store *s = poster_store(m);
    assert_int_equal(store_count(s, PARAM_TRAINABLE), 57995023);
    assert_int_equal(store_count(s, PARAM_UNUSED), 12847616 + 512);
    assert_int_equal(s->n_train, 57995023);
    // Per-block sizes as docs/POSTER.md states them.
    int64_t bl = 0, bm = 0, bs = 0, um = 0, us = 0, ds = 0;
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind == PARAM_BUFFER || p->kind == PARAM_COUNTER) continue;
        if (starts(p->name, "pyramid_fuse.blocks.3.block_l.")) bl += p->numel;
        if (starts(p->name, "pyramid_fuse.blocks.3.block_m.")) bm += p->numel;
        if (starts(p->name, "pyramid_fuse.blocks.3.block_s.")) bs += p->numel;
        if (starts(p->name, "pyramid_fuse.blocks.3.upsample_m.")) um += p->numel;
        if (starts(p->name, "pyramid_fuse.blocks.3.upsample_s.")) us += p->numel;
        if (starts(p->name, "pyramid_fuse.downsample_s.")) ds += p->numel;
    }
    assert_int_equal(bl, block_l);
    assert_int_equal(bm, block_m);
    assert_int_equal(bs, block_s);
    assert_int_equal(um, up);
    assert_int_equal(us, up);
    assert_int_equal(ds, down_s);
    poster_free(m);

    // Absent levels have no tensors at all; ir_units keeps the body.N naming.
    m = make("pyramid_levels=1 ir_units=2,1,2", 1);
    s = poster_store(m);
    for (int i = 0; i < s->n; i++) {
        assert_null(strstr(s->params[i].name, "block_m"));
        assert_null(strstr(s->params[i].name, "block_s"));
        assert_null(strstr(s->params[i].name, "sample_"));
    }
    assert_non_null(store_find(s, "ir_back.body.4.res_layer.4.running_var"));
    assert_null(store_find(s, "ir_back.body.5.res_layer.0.weight"));
    assert_non_null(store_find(s, "ir_back.body.2.shortcut_layer.0.weight"));   // 64 -> 128
    assert_non_null(store_find(s, "ir_back.body.3.shortcut_layer.0.weight"));   // 128 -> 256
    assert_null(store_find(s, "ir_back.body.4.shortcut_layer.0.weight"));
    poster_free(m);
}

static void test_freeze(void **state) {
    (void)state;
    poster_model *m = make("freeze=ir_back.,pyramid_fuse.blocks.7.", 1);
    param_store *s = poster_store(m);
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind == PARAM_BUFFER || p->kind == PARAM_COUNTER) continue;
        bool fr = starts(p->name, "ir_back.") || starts(p->name, "pyramid_fuse.blocks.7.") ||
                  starts(p->name, "face_landback.");
        if (fr != (p->kind == PARAM_FROZEN)) fail_msg("%s: kind %d", p->name, p->kind);
    }
    // 30,459,584 (ir_back, output_layer included) + 4,905,316 (a pyramid block)
    assert_int_equal(store_count(s, PARAM_FROZEN), 1007248 + 30459584 + 4905316);
    poster_free(m);

    poster_opts o;
    char err[512];
    poster_opts_default(&o);
    snprintf(o.freeze, sizeof o.freeze, "ir_back.,no_such_module");
    assert_null(poster_create(&o, 1, err, sizeof err));
    assert_non_null(strstr(err, "no_such_module"));
}

static void test_options(void **state) {
    (void)state;
    config c;
    char err[1024];
    config_init(&c);
    poster_config_register(&c);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    poster_opts o, d;
    assert_int_equal(poster_opts_from_config(&c, &o, err, sizeof err), 0);
    poster_opts_default(&d);
    assert_int_equal(memcmp(&o, &d, sizeof o), 0);

    const char *sets[] = {"model.depth=4", "model.pyramid_levels=2", "model.token_mix=off",
                          "model.landmark_bn=frozen", "model.streams=image_only",
                          "model.num_classes=8", "model.drop_path_rate=0.2",
                          "model.ir_units=2,1,2", "model.freeze=ir_back."};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        assert_int_equal(config_set(&c, sets[i], err, sizeof err), 0);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    assert_int_equal(poster_opts_from_config(&c, &o, err, sizeof err), 0);
    assert_int_equal(o.depth, 4);
    assert_int_equal(o.pyramid_levels, 2);
    assert_false(o.token_mix);
    assert_int_equal(o.landmark_bn, LANDMARK_BN_FROZEN);
    assert_int_equal(o.streams, STREAMS_IMAGE_ONLY);
    assert_int_equal(o.num_classes, 8);
    assert_true(fabsf(o.drop_path_rate - 0.2f) < 1e-7f);
    assert_int_equal(o.ir_units[0], 2);
    assert_int_equal(o.ir_units[2], 2);
    assert_string_equal(o.freeze, "ir_back.");

    // Text round trip (the model_options attribute).
    char text[700];
    poster_opts_text(&o, text, sizeof text);
    assert_string_equal(text, "depth=4 pyramid_levels=2 token_mix=off landmark_bn=frozen "
                              "streams=image num_classes=8 ir_units=2,1,2 drop_path_rate=0.2 "
                              "freeze=ir_back.");
    poster_opts back;
    assert_int_equal(poster_opts_from_text(text, &back, err, sizeof err), 0);
    assert_int_equal(memcmp(&o, &back, sizeof o), 0);

    // Invalid values name the key.
    const char *bad[] = {"model.pyramid_levels=4", "model.depth=0", "model.landmark_bn=maybe",
                         "model.streams=landmark", "model.token_mix=perhaps",
                         "model.drop_path_rate=1.5", "model.num_classes=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config c2;
        config_init(&c2);
        poster_config_register(&c2);
        assert_int_equal(config_set(&c2, bad[i], err, sizeof err), 0);
        err[0] = 0;
        assert_int_not_equal(config_validate(&c2, err, sizeof err), 0);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(bad[i], '=') - bad[i]), bad[i]);
        if (!strstr(err, key)) fail_msg("error for %s does not name the key: %s", bad[i], err);
    }
    // ir_units needs exactly three stages.
    config c3;
    config_init(&c3);
    poster_config_register(&c3);
    assert_int_equal(config_set(&c3, "model.ir_units=3,4", err, sizeof err), 0);
    assert_int_equal(config_validate(&c3, err, sizeof err), 0);
    assert_int_not_equal(poster_opts_from_config(&c3, &o, err, sizeof err), 0);
    assert_non_null(strstr(err, "model.ir_units"));
    assert_int_not_equal(poster_opts_from_text("depth=two", &o, err, sizeof err), 0);
    assert_int_not_equal(poster_opts_from_text("colour=red", &o, err, sizeof err), 0);

    char buf[32];
    assert_string_equal(poster_fmt_count(70843151, buf, sizeof buf), "70,843,151");
    assert_string_equal(poster_fmt_count(512, buf, sizeof buf), "512");
    assert_string_equal(poster_fmt_count(1000, buf, sizeof buf), "1,000");
}

// PyTorch defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for linear/conv weights
// and biases (ConvTranspose1d: fan_in = out * k), norms 1/0, PReLU 0.25,
// pos_embed/cls_token 0, MobileFaceNet convs N(0, 2/fan_out).
static void check_uniform(param *p, double bound) {
    double mx = 0, sum = 0, sq = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        double v = p->t.data[i];
        if (fabs(v) > mx) mx = fabs(v);
        sum += v;
        sq += v * v;
    }
    if (mx > bound * (1 + 1e-6)) fail_msg("%s: |w| %.6g > bound %.6g", p->name, mx, bound);
    if (p->numel >= 1000) {
        // U(-b, b): mean 0, variance b^2/3
        double var = sq / p->numel, mean = sum / p->numel;
        if (fabs(var / (bound * bound / 3) - 1) > 0.1 || fabs(mean) > 0.1 * bound)
            fail_msg("%s: mean %.3g var %.3g, expected U(+-%.3g)", p->name, mean, var, bound);
        if (mx < 0.98 * bound) fail_msg("%s: max %.3g, bound %.3g", p->name, mx, bound);
    }
}

static void test_init(void **state) {
    (void)state;
    poster_model *m = make("depth=2 ir_units=2,1,2", 7);
    param_store *s = poster_store(m);
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        const char *n = p->name;
        if (p->kind == PARAM_COUNTER) {
            assert_int_equal(*p->counter, 0);
            continue;
        }
        int role = poster_param_role(m, i);
        // A bias belongs to a norm (constant 0) when its weight is 1-d.
        char wname[200];
        snprintf(wname, sizeof wname, "%.*sweight", (int)(strlen(n) - 4), n);
        bool norm_bias = role == ROLE_BIAS && store_find(s, wname)->ndim == 1;
        double c = role == ROLE_NORM_WEIGHT || role == ROLE_RUNNING_VAR ? 1.0
                   : role == ROLE_PRELU_WEIGHT                          ? 0.25
                                                                        : 0.0;
        bool constant = role == ROLE_NORM_WEIGHT || role == ROLE_RUNNING_VAR ||
                        role == ROLE_PRELU_WEIGHT || role == ROLE_RUNNING_MEAN ||
                        role == ROLE_EMBED || norm_bias;
        if (constant) {
            for (int64_t j = 0; j < p->numel; j++)
                if (p->t.data[j] != (float)c) fail_msg("%s[%lld] = %g, expected %g", n, (long long)j, p->t.data[j], c);
            continue;
        }
        if (starts(n, "face_landback.")) {   // kaiming normal, fan_out, gain sqrt 2
            assert_int_equal(role, ROLE_WEIGHT);
            double fan_out = p->shape[0];
            for (int d = 2; d < p->ndim; d++) fan_out *= p->shape[d];
            double sq = 0;
            for (int64_t j = 0; j < p->numel; j++) sq += (double)p->t.data[j] * p->t.data[j];
            double ratio = sq / p->numel / (2.0 / fan_out);
            if (p->numel >= 4000 && fabs(ratio - 1) > 0.1)
                fail_msg("%s: variance %.3g x 2/fan_out", n, ratio);
            continue;
        }
        // Uniform: the bound from the weight's fan_in (bias: its layer's weight).
        snprintf(wname, sizeof wname, "%.*sweight", (int)(strlen(n) - (role == ROLE_BIAS ? 4 : 6)), n);
        param *w = store_find(s, wname);
        assert_non_null(w);
        double fan = 1;
        for (int d = 1; d < w->ndim; d++) fan *= w->shape[d];   // [Cin, Cout, k] -> Cout*k
        check_uniform(p, 1.0 / sqrt(fan));
    }
    // ConvTranspose1d: fan_in = out * k = 200.
    param *ut = store_find(s, "pyramid_fuse.blocks.1.upsample_m.weight");
    check_uniform(ut, 1.0 / sqrt(200.0));
    // Same seed, same values; another seed, others.
    poster_model *m2 = make("depth=2 ir_units=2,1,2", 7), *m3 = make("depth=2 ir_units=2,1,2", 8);
    assert_int_equal(memcmp(s->data, poster_store(m2)->data, (size_t)s->n_float * sizeof(float)), 0);
    assert_int_not_equal(memcmp(s->data, poster_store(m3)->data, (size_t)s->n_train * sizeof(float)), 0);
    poster_free(m);
    poster_free(m2);
    poster_free(m3);
}

// ---------------------------------------------------------------------------
// State files

static void test_state_io(void **state) {
    (void)state;
    mkdir(tu_tmpdir(), 0755);
    char err[1024];
    const char *path = tu_path("/state.h5");
    poster_model *a = make("depth=1 ir_units=2,1,2", 1);
    param_store *sa = poster_store(a);
    poster_fill_deterministic(sa);
    *store_find(sa, "ir_back.body.0.res_layer.0.num_batches_tracked")->counter = 42;
    char opt[700];
    poster_opts_text(poster_options(a), opt, sizeof opt);
    assert_int_equal(state_save(path, sa, opt, err, sizeof err), 0);
    assert_int_equal(access(tu_path("/state.h5.tmp"), F_OK), -1);   // renamed away

    hid_t f = h5_open_read(path, err, sizeof err);
    assert_true(f >= 0);
    char fmt[64], mo[700];
    int64_t ver = 0;
    assert_int_equal(h5_read_attr_str(f, "/", "format", fmt, sizeof fmt), 0);
    assert_string_equal(fmt, "poster-state");
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &ver), 0);
    assert_int_equal(ver, 1);
    assert_int_equal(h5_read_attr_str(f, "/", "model_options", mo, sizeof mo), 0);
    assert_string_equal(mo, opt);
    int nd, sh[T_MAXDIM];
    assert_int_equal(h5_dataset_shape(f, "state_dict/head.linear.weight", &nd, sh, err, sizeof err), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(sh[0], 7);
    int64_t *cnt;
    assert_int_equal(h5_read_int64s(f, "state_dict/ir_back.body.0.res_layer.0.num_batches_tracked",
                                    &cnt, &nd, sh, err, sizeof err), 0);
    assert_int_equal(nd, 0);
    assert_int_equal(cnt[0], 42);
    free(cnt);
    h5_close(f);

    // Strict round trip into a model with other values.
    poster_model *b = make("depth=1 ir_units=2,1,2", 99);
    param_store *sb = poster_store(b);
    state_report rep;
    assert_int_equal(state_load(path, sb, true, &rep, NULL, err, sizeof err), 0);
    assert_int_equal(rep.matched, sb->n);
    assert_int_equal(memcmp(sa->data, sb->data, (size_t)sa->n_float * sizeof(float)), 0);
    assert_int_equal(memcmp(sa->counters, sb->counters, (size_t)sa->n_counters * sizeof(int64_t)), 0);

    // Strict load into another shape (8 classes): an error naming the tensor, nothing changed.
    poster_model *c = make("depth=1 ir_units=2,1,2 num_classes=8", 5);
    param_store *sc = poster_store(c);
    float *before = malloc((size_t)sc->n_float * sizeof(float));
    memcpy(before, sc->data, (size_t)sc->n_float * sizeof(float));
    assert_int_not_equal(state_load(path, sc, true, &rep, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "head.linear.weight"));
    assert_int_equal(rep.misshaped, 2);
    assert_int_equal(memcmp(before, sc->data, (size_t)sc->n_float * sizeof(float)), 0);
    // Not strict: everything else loads, the head keeps its values.
    FILE *log = fopen(tu_path("/log.txt"), "w+");
    assert_int_equal(state_load(path, sc, false, &rep, log, err, sizeof err), 0);
    assert_int_equal(rep.misshaped, 2);
    assert_int_equal(rep.matched, sc->n - 2);
    param *pw = store_find(sc, "ir_layer.weight");
    assert_int_equal(memcmp(pw->t.data, store_find(sa, "ir_layer.weight")->t.data,
                            (size_t)pw->numel * sizeof(float)), 0);
    param *hw = store_find(sc, "head.linear.weight");
    assert_int_equal(memcmp(hw->t.data, before + hw->offset, (size_t)hw->numel * sizeof(float)), 0);
    rewind(log);
    char text[4096] = "";
    size_t got = fread(text, 1, sizeof text - 1, log);
    text[got] = 0;
    fclose(log);
    assert_non_null(strstr(text, "head.linear.bias"));
    free(before);

    // Missing / unexpected: a 2-level model and the 3-level file.
    poster_model *d = make("depth=1 ir_units=2,1,2 pyramid_levels=2", 5);
    param_store *sd = poster_store(d);
    assert_int_not_equal(state_load(path, sd, true, &rep, NULL, err, sizeof err), 0);
    assert_true(rep.unexpected > 0 && rep.missing == 0);
    assert_non_null(strstr(err, "unexpected"));
    assert_int_equal(state_load(path, sd, false, &rep, NULL, err, sizeof err), 0);
    assert_int_equal(rep.matched, sd->n);
    // A 4-unit IR stage against the file: missing tensors.
    poster_model *e = make("depth=1 ir_units=2,1,3", 5);
    assert_int_not_equal(state_load(path, poster_store(e), true, &rep, NULL, err, sizeof err), 0);
    assert_true(rep.missing > 0);
    assert_non_null(strstr(err, "ir_back.body.5."));

    // Bad files: clear errors.
    assert_int_not_equal(state_load(tu_path("/nope.h5"), sb, true, &rep, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "nope.h5"));
    FILE *junk = fopen(tu_path("/junk.h5"), "w");
    fputs("not hdf5", junk);
    fclose(junk);
    assert_int_not_equal(state_load(tu_path("/junk.h5"), sb, true, &rep, NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "junk.h5"));
    poster_free(a);
    poster_free(b);
    poster_free(c);
    poster_free(d);
    poster_free(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_dict_matches_tsv),
        cmocka_unit_test(test_parameter_counts),
        cmocka_unit_test(test_freeze),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_state_io),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
