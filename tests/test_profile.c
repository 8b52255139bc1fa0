// The section profiler (autograd/profile.h), the model's multiply-add count
// (layers/poster_flops.h) and the shared step timing behind `poster bench` and
// bench/bench_model.c (cli/bench.h).
#include "test_util.h"

#include <time.h>

#include "autograd/profile.h"
#include "layers/layers.h"
#include "layers/poster_flops.h"
#include "cli/bench.h"

static bool starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static bool ends(const char *s, const char *p) {
    size_t n = strlen(s), k = strlen(p);
    return n >= k && !strcmp(s + n - k, p);
}

// ---------------------------------------------------------------------------
// profiler

static void test_off_by_default_records_nothing(void **state) {
    (void)state;
    assert_false(prof_enabled());
    prof_reset();
    int p = prof_enter("never");
    assert_int_equal(p, 0);
    rng r;
    rng_seed(&r, 1);
    tensor *a = tu_leaf(&r, T_SHAPE(64, 64), -1, 1);
    ag_backward(op_mean(op_mean(op_matmul(a, a, false, false), 1, false), 0, false));
    prof_leave(p);
    ag_step_reset();
    assert_true(prof_total_seconds() == 0.0);
    assert_int_equal(prof_section_find("never"), -1);   // not even registered
}

static void test_sections_nest(void **state) {
    (void)state;
    prof_set_enabled(true);
    int outer = prof_enter("outer");
    int a = prof_section_find("outer");
    assert_true(a > 0);
    assert_int_equal(prof_current(), a);
    int inner = prof_enter("inner");
    assert_int_equal(inner, a);
    assert_int_equal(prof_current(), prof_section_find("inner"));
    prof_leave(inner);
    assert_int_equal(prof_current(), a);
    prof_leave(outer);
    assert_int_equal(prof_current(), 0);
    assert_string_equal(prof_section_name(0), "other");
    prof_set_enabled(false);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Backward time goes to the section whose forward recorded the op, and the
// sections add up to the wall time.
static void test_backward_attributed_to_recording_section(void **state) {
    (void)state;
    rng r;
    rng_seed(&r, 2);
    tensor *a = tu_leaf(&r, T_SHAPE(384, 384), -1, 1);
    tensor *b = tu_leaf(&r, T_SHAPE(384, 384), -1, 1);
    prof_reset();
    double t0 = now_s();
    prof_set_enabled(true);
    int p = prof_enter("big");
    tensor *y = op_matmul(a, b, false, false);      // 2 sgemms in backward
    prof_leave(p);
    p = prof_enter("small");
    tensor *z = op_scale(y, 2.0f);                  // one pass over y in backward
    prof_leave(p);
    float *seed = malloc((size_t)z->numel * sizeof(float));
    for (int64_t i = 0; i < z->numel; i++) seed[i] = 1.0f;
    ag_backward_seed(z, seed);
    prof_set_enabled(false);
    double wall = now_s() - t0;
    free(seed);
    ag_step_reset();
    int big = prof_section_find("big"), small = prof_section_find("small");
    assert_true(big > 0 && small > 0);
    double bf = prof_seconds(big, PROF_FORWARD), bb = prof_seconds(big, PROF_BACKWARD);
    double sb = prof_seconds(small, PROF_BACKWARD);
    printf("big: forward %.4f backward %.4f s; small: backward %.5f s; wall %.4f\n", bf, bb, sb,
           wall);
    assert_true(bf > 0 && bb > 0 && sb > 0);
    assert_true(bb > sb);          // 2 x 384^3 multiply-adds against 147k multiplies
    double tot = prof_total_seconds();
    assert_true(tot <= wall + 1e-6 && tot >= 0.9 * wall);
}

// ---------------------------------------------------------------------------
// multiply-adds

static void test_macs_large_model_match_spec(void **state) {
    (void)state;
    poster_opts o;
    poster_opts_default(&o);
    poster_macs m;
    poster_count_macs(&o, &m);
    printf("GMAC/image: ir50 %.3f, mobilefacenet %.3f, transformer %.3f, head %.4f, total %.3f\n",
           m.ir50 * 1e-9, m.mobilefacenet * 1e-9, m.transformer * 1e-9, m.head * 1e-9,
           m.total * 1e-9);
    // Spec: "about 7.7 GMAC per image (IR-50 trunk about 5.5, transformer about
    // 2.0, MobileFaceNet about 0.2)".
    assert_true(fabs(m.total / 7.7e9 - 1) < 0.04);
    assert_true(fabs(m.ir50 / 5.5e9 - 1) < 0.03);
    assert_true(fabs(m.transformer / 2.0e9 - 1) < 0.10);
    assert_true(fabs(m.mobilefacenet / 0.2e9 - 1) < 0.15);
    assert_true(fabs(m.total - (m.ir50 + m.mobilefacenet + m.transformer + m.head)) < 1);
    // A training pass: backward twice the forward on the tape, frozen stream forward only.
    double pass = poster_train_pass_flops(&m);
    assert_true(fabs(pass - 2 * (3 * (m.total - m.mobilefacenet) + m.mobilefacenet)) < 1e3);
}

// The transformer's count equals one built from the model's own weight shapes:
// each weight's numel times the positions it is applied at, plus the attention
// products (q k^T and att v: 2 * 50 * 50 * D per cross attention).
static double transformer_macs_from_store(const poster_opts *o) {
    char err[256];
    poster_model *pm = poster_create(o, 1, err, sizeof err);
    if (!pm) fail_msg("%s", err);
    param_store *s = poster_store(pm);
    double macs = 0;
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (!starts(p->name, "pyramid_fuse.") || !ends(p->name, ".weight") || p->ndim < 2)
            continue;
        int D = strstr(p->name, "block_s") ? 128 : strstr(p->name, "block_m") ? 256 : 512;
        double pos = 0;
        if (p->ndim == 2) pos = PF_IMG;                                 // linear over 50 tokens
        else if (ends(p->name, ".conv.weight")) pos = D;                // token mix, k 1
        else if (strstr(p->name, "downsample_m") || strstr(p->name, "upsample_m")) pos = 256;
        else if (strstr(p->name, "downsample_s") || strstr(p->name, "upsample_s")) pos = 128;
        else fail_msg("unexpected transformer weight %s", p->name);
        macs += (double)p->numel * pos;
        if (ends(p->name, ".kv.weight")) macs += 2.0 * PF_IMG * PF_IMG * D;   // attention
    }
    poster_free(pm);
    return macs;
}

static void test_macs_follow_model_shapes(void **state) {
    (void)state;
    const char *variants[] = {"", "depth=4", "pyramid_levels=2", "pyramid_levels=1",
                              "token_mix=off"};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        poster_opts o;
        char err[256];
        if (poster_opts_from_text(variants[v], &o, err, sizeof err)) fail_msg("%s", err);
        poster_macs m;
        poster_count_macs(&o, &m);
        double ref = transformer_macs_from_store(&o);
        if (fabs(m.transformer - ref) > 1e-9 * ref)
            fail_msg("'%s': counted %.0f, from the weights %.0f", variants[v], m.transformer, ref);
    }
    poster_opts o;
    poster_opts_default(&o);
    o.streams = STREAMS_IMAGE_ONLY;
    poster_macs m;
    poster_count_macs(&o, &m);
    assert_true(m.mobilefacenet == 0);
    o.ir_units[0] = o.ir_units[1] = o.ir_units[2] = 1;
    poster_macs small;
    poster_count_macs(&o, &small);
    assert_true(small.ir50 < 0.5 * m.ir50);
}

// ---------------------------------------------------------------------------
// the benchmark's training step

static void test_bench_step_runs_sam_and_adam(void **state) {
    (void)state;
    poster_opts o;
    poster_opts_default(&o);
    o.depth = 1;
    o.ir_units[0] = o.ir_units[1] = o.ir_units[2] = 1;
    loss_opts lo;
    loss_opts_default(&lo);
    optim_opts oo;
    optim_opts_default(&oo);
    assert_true(oo.sam);
    bench_ctx c;
    char err[256];
    if (bench_ctx_init(&c, &o, &lo, &oo, 2, 112, err, sizeof err)) fail_msg("%s", err);
    param_store *s = poster_store(c.m);
    float *w0 = malloc((size_t)s->n_train * sizeof(float));
    memcpy(w0, s->data, (size_t)s->n_train * sizeof(float));
    double sec = bench_time(&c, BENCH_STEP, 1, true, NULL, NULL);
    assert_true(sec > 0);
    // Two steps (warm-up + timed) of Adam: weights moved, not left perturbed.
    assert_int_equal(c.opt->step, 2);
    assert_false(c.opt->perturbed);
    int64_t moved = 0;
    for (int64_t i = 0; i < s->n_train; i++) moved += s->data[i] != w0[i];
    assert_true(moved > s->n_train / 2);
    free(w0);
    const char *want[] = {"ir50", "mobilefacenet", "transformer", "head", "sam", "optimizer"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int id = prof_section_find(want[i]);
        if (id < 0 || prof_seconds(id, PROF_FORWARD) + prof_seconds(id, PROF_BACKWARD) <= 0)
            fail_msg("section %s has no time", want[i]);
    }
    assert_true(prof_seconds(prof_section_find("ir50"), PROF_BACKWARD) > 0);
    assert_true(prof_seconds(prof_section_find("transformer"), PROF_BACKWARD) > 0);
    // The frozen stream records no tape: no backward time.
    assert_true(prof_seconds(prof_section_find("mobilefacenet"), PROF_BACKWARD) == 0);
    assert_true(fabs(bench_flops_per_image(&c, BENCH_STEP) -
                     2 * bench_flops_per_image(&c, BENCH_FWD_BWD)) < 1);
    char buf[8192];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    bench_print_split(&c, BENCH_STEP, 1, sec, 10.0, f);
    fclose(f);
    assert_non_null(strstr(buf, "SPLIT train_step transformer "));
    assert_non_null(strstr(buf, "GFLOPS train_step "));
    bench_ctx_free(&c);
    ag_step_reset();
}

static void test_sgemm_gflops_positive(void **state) {
    (void)state;
    double g = bench_sgemm_gflops(256, 2);
    printf("sgemm 256^3: %.1f GFLOP/s\n", g);
    assert_true(g > 0.1 && g < 1e5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_by_default_records_nothing),
        cmocka_unit_test(test_sections_nest),
        cmocka_unit_test(test_backward_attributed_to_recording_section),
        cmocka_unit_test(test_macs_large_model_match_spec),
        cmocka_unit_test(test_macs_follow_model_shapes),
        cmocka_unit_test(test_bench_step_runs_sam_and_adam),
        cmocka_unit_test(test_sgemm_gflops_positive),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
