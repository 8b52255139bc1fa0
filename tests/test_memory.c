// Memory of a POSTER step (reduced model): buffers die when provably dead, so
// the peak is well below what the step allocates; nothing freed early is read
// (poison mode gives bit-identical results); warm steps, training and
// evaluation in turn, neither grow the pool nor fault pages in.
#include "test_util.h"

#include <sys/resource.h>

#include "layers/poster.h"
#include "layers/loss.h"

#define SMALL "depth=2 ir_units=2,1,2"
#define B 2

static poster_model *make(void) {
    poster_opts o;
    char err[512];
    if (poster_opts_from_text(SMALL, &o, err, sizeof err)) fail_msg("%s", err);
    poster_model *m = poster_create(&o, 3, err, sizeof err);
    if (!m) fail_msg("%s", err);
    poster_fill_deterministic(poster_store(m));
    return m;
}

static tensor *input(void) {
    tensor *x = tensor_new(T_SHAPE(B, 3, 224, 224));
    poster_contract_input(x->data, x->numel, "input", 1.5f);
    return x;
}

typedef struct step_out {
    float logits[B * 7], logits_after[B * 7], loss, loss_after;
    float *grad;        // copy of the store's gradients (malloc'd once by the caller)
    size_t peak, handed_out, live_after;
} step_out;

// One training forward + backward (drop path on, batch statistics), then what
// is still live; the caller reads logits and loss after backward, as the trainer does.
static void train_step(poster_model *m, step_out *o) {
    param_store *s = poster_store(m);
    store_zero_grad(s);
    rng r;
    rng_seed(&r, 11);
    int64_t y[B] = {1, 5};
    loss_opts lo;
    loss_opts_default(&lo);
    pool_reset_peak();
    tensor *x = input();
    tensor *z = poster_forward(m, x, true, &r);
    tensor *l = loss_compute(&lo, z, y);
    memcpy(o->logits, z->data, sizeof o->logits);
    o->loss = l->data[0];
    ag_backward(l);
    memcpy(o->logits_after, z->data, sizeof o->logits_after);
    o->loss_after = l->data[0];
    pool_stats ps = pool_get_stats();
    o->peak = ps.peak;
    o->handed_out = ps.handed_out;
    o->live_after = ps.in_use;
    memcpy(o->grad, s->grad, (size_t)s->n_train * sizeof(float));
    ag_step_reset();
}

static size_t eval_peak(poster_model *m) {
    pool_reset_peak();
    bool prev = ag_no_grad_begin();
    tensor *z = poster_forward(m, input(), false, NULL);
    for (int64_t i = 0; i < z->numel; i++) assert_true(isfinite(z->data[i]));
    ag_no_grad_end(prev);
    size_t p = pool_get_stats().peak;
    ag_step_reset();
    return p;
}

static void test_poison_identical(void **state) {
    (void)state;
    poster_model *m = make();
    int64_t n = poster_store(m)->n_train;
    step_out a, b;
    a.grad = malloc((size_t)n * sizeof(float));
    b.grad = malloc((size_t)n * sizeof(float));
    pool_set_poison(false);
    train_step(m, &a);
    pool_set_poison(true);   // freed buffers become NaN and are never reused
    train_step(m, &b);
    pool_set_poison(false);
    assert_memory_equal(a.logits, b.logits, sizeof a.logits);
    assert_memory_equal(a.logits_after, a.logits, sizeof a.logits);
    assert_memory_equal(b.logits_after, b.logits, sizeof b.logits);
    assert_true(a.loss == b.loss && a.loss_after == a.loss && isfinite(a.loss));
    assert_memory_equal(a.grad, b.grad, (size_t)n * sizeof(float));
    double norm = 0;
    for (int64_t i = 0; i < n; i++) norm += (double)a.grad[i] * a.grad[i];
    assert_true(norm > 0 && isfinite(norm));
    free(a.grad);
    free(b.grad);
    poster_free(m);
    ag_shutdown();
}

// Before buffers were freed the peak was everything a step allocated.
static void test_peak_below_allocated(void **state) {
    (void)state;
    pool_set_poison(false);
    poster_model *m = make();
    step_out a;
    a.grad = malloc((size_t)poster_store(m)->n_train * sizeof(float));
    train_step(m, &a);
    size_t ev = eval_peak(m);
    printf("train step: peak %.1f MB of %.1f MB allocated, %.2f MB live after backward; "
           "eval forward peak %.1f MB\n", a.peak / 1048576.0, a.handed_out / 1048576.0,
           a.live_after / 1048576.0, ev / 1048576.0);
    assert_true(a.peak < a.handed_out / 2);
    // After backward only the caller's tensors are left: input, logits, loss.
    assert_true(a.live_after < (size_t)B * 3 * 224 * 224 * 4 + 64 * 1024);
    // No-grad keeps nothing for backward: a few feature maps at a time.
    assert_true(ev < a.peak / 2);
    free(a.grad);
    poster_free(m);
    ag_shutdown();
}

static long minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static long g_warm_faults = -1;      // minor faults of the warm steps below
static size_t g_warm_pool_pages;

static void test_warm_steps_reuse_memory(void **state) {
    (void)state;
    pool_set_poison(false);
    poster_model *m = make();
    step_out a;
    a.grad = malloc((size_t)poster_store(m)->n_train * sizeof(float));
    for (int warm = 0; warm < 2; warm++) {
        train_step(m, &a);
        eval_peak(m);
    }
    pool_stats p0 = pool_get_stats();
    int blocks = arena_block_count();
    long f0 = minor_faults();
    for (int i = 0; i < 3; i++) {
        train_step(m, &a);
        eval_peak(m);
    }
    free(a.grad);
    long faults = minor_faults() - f0;
    pool_stats p1 = pool_get_stats();
    printf("3 warm train+eval steps: %ld minor faults, pool %.1f MB in %d chunks\n", faults,
           p1.capacity / 1048576.0, p1.chunks);
    g_warm_faults = faults;
    g_warm_pool_pages = p1.capacity / 4096;
    assert_true(p1.grows == p0.grows);
    assert_int_equal(arena_block_count(), blocks);
    poster_free(m);
    ag_shutdown();
}

// The page faults of those warm steps (measured there): a re-faulted pool
// would be tens of thousands. Skipped under AddressSanitizer, which re-maps
// its shadow memory when large ranges are unpoisoned.
static void test_warm_steps_no_page_faults(void **state) {
    (void)state;
    if (g_warm_faults < 0) fail_msg("test_warm_steps_reuse_memory did not measure the faults");
#if defined(__SANITIZE_ADDRESS__)
    tu_skip("page-fault count under AddressSanitizer (%ld faults)", g_warm_faults);
#else
    printf("%ld minor faults, bound %zu\n", g_warm_faults, g_warm_pool_pages / 20);
    assert_true((size_t)g_warm_faults < g_warm_pool_pages / 20);
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poison_identical),
        cmocka_unit_test(test_peak_below_allocated),
        cmocka_unit_test(test_warm_steps_reuse_memory),
        cmocka_unit_test(test_warm_steps_no_page_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
