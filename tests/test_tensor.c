// The core: arena reuse, views sharing gradients, the tape, the parameter store.
#include "test_util.h"

// A scale-by-3 op defined here to exercise the tape without the op library.
static void triple_backward(tape_entry *e) {
    float *gi = tensor_grad(e->in[0]);
    for (int64_t i = 0; i < e->out->numel; i++) gi[i] += 3.0f * e->out->grad[i];
}
static tensor *triple(tensor *x) {
    tensor *y = tensor_like(x);
    for (int64_t i = 0; i < x->numel; i++) y->data[i] = 3.0f * x->data[i];
    if (ag_needs_grad(1, &x)) ag_record("triple", triple_backward, y, 1, &x, NULL);
    return y;
}

static void test_arena_reuses_one_block(void **state) {
    (void)state;
    for (int step = 0; step < 4; step++) {
        for (int i = 0; i < 40; i++) tensor_new(T_SHAPE(1 << 20));   // 160 MB a step
        if (step >= 1) assert_int_equal(arena_block_count(), 1);
        ag_step_reset();
    }
    void *p = arena_alloc(3);
    assert_int_equal((uintptr_t)p % 64, 0);
    ag_step_reset();
    ag_shutdown();
}

static void test_tape_and_views(void **state) {
    (void)state;
    tensor *x = tensor_zeros(T_SHAPE(2, 3));
    x->requires_grad = true;
    for (int i = 0; i < 6; i++) x->data[i] = (float)i;
    tensor *v = tensor_view(x, T_SHAPE(6));
    tensor *y = triple(triple(v));       // 9x
    assert_int_equal(ag_tape_len(), 2);
    float seed[6] = {1, 2, 3, 4, 5, 6};
    ag_backward_seed(y, seed);
    for (int i = 0; i < 6; i++) assert_float_equal(x->grad[i], 9.0f * seed[i], 0);
    // Gradients accumulate.
    tensor *z = triple(x);
    float ones[6] = {1, 1, 1, 1, 1, 1};
    ag_backward_seed(z, ones);
    assert_float_equal(x->grad[0], 9.0f + 3.0f, 0);
    // no_grad records nothing.
    ag_step_reset();
    tensor *a = tensor_zeros(T_SHAPE(4));
    a->requires_grad = true;
    bool prev = ag_no_grad_begin();
    tensor *b = triple(a);
    ag_no_grad_end(prev);
    assert_false(b->requires_grad);
    assert_int_equal(ag_tape_len(), 0);
    ag_step_reset();
}

static void test_store_layout(void **state) {
    (void)state;
    param_store s;
    store_init(&s);
    store_add(&s, "bn.running_mean", PARAM_BUFFER, T_SHAPE(4));
    store_add(&s, "conv.weight", PARAM_TRAINABLE, T_SHAPE(4, 3, 3, 3));
    store_add(&s, "bn.num_batches_tracked", PARAM_COUNTER, 0, NULL);
    store_add(&s, "lm.weight", PARAM_FROZEN, T_SHAPE(5));
    store_add(&s, "fc.bias", PARAM_TRAINABLE, T_SHAPE(7));
    store_finalize(&s);
    assert_int_equal(s.n_train, 108 + 7);
    assert_int_equal(s.n_float, 108 + 7 + 4 + 5);
    param *w = store_find(&s, "conv.weight");
    param *b = store_find(&s, "fc.bias");
    assert_ptr_equal(w->t.data, s.data);
    assert_ptr_equal(b->t.grad, s.grad + 108);
    assert_true(b->t.requires_grad);
    assert_false(store_find(&s, "lm.weight")->t.requires_grad);
    assert_null(store_find(&s, "lm.weight")->t.grad);
    assert_non_null(store_find(&s, "bn.num_batches_tracked")->counter);
    assert_null(store_find(&s, "nope"));
    assert_int_equal(store_count(&s, PARAM_FROZEN), 5);
    s.grad[3] = 1;
    store_zero_grad(&s);
    assert_float_equal(s.grad[3], 0, 0);
    store_free(&s);
}

static void test_rng(void **state) {
    (void)state;
    rng a, b;
    rng_seed(&a, 7);
    rng_seed(&b, 7);
    double mean = 0, var = 0;
    int n = 100000;
    for (int i = 0; i < n; i++) {
        assert_true(rng_u64(&a) == rng_u64(&b));
        double z = rng_normal(&a);
        rng_normal(&b);
        mean += z;
        var += z * z;
    }
    mean /= n;
    var = var / n - mean * mean;
    assert_true(fabs(mean) < 0.02);
    assert_true(fabs(var - 1) < 0.02);
    int hist[5] = {0};
    for (int i = 0; i < 50000; i++) hist[rng_below(&a, 5)]++;
    for (int k = 0; k < 5; k++) assert_true(abs(hist[k] - 10000) < 500);
}

static void test_h5_roundtrip(void **state) {
    (void)state;
    char err[512];
    const char *path = tu_path("/test_h5_roundtrip.h5");
    hid_t f = h5_create(path, err, sizeof err);
    assert_true(f >= 0);
    float d[6] = {1, 2, 3, 4, 5, 6};
    int64_t c = 42;
    assert_int_equal(h5_write_floats(f, "state_dict/a.b.weight", d, T_SHAPE(2, 3), err, sizeof err), 0);
    assert_int_equal(h5_write_int64s(f, "state_dict/a.num", &c, 0, NULL, err, sizeof err), 0);
    assert_int_equal(h5_write_attr_str(f, "/", "format", "poster-state"), 0);
    assert_int_equal(h5_write_attr_i64(f, "/", "version", 3), 0);
    h5_close(f);
    f = h5_open_read(path, err, sizeof err);
    assert_true(f >= 0);
    float *r;
    int nd, shape[5];
    assert_int_equal(h5_read_floats(f, "state_dict/a.b.weight", &r, &nd, shape, err, sizeof err), 0);
    assert_int_equal(nd, 2);
    assert_int_equal(shape[1], 3);
    assert_memory_equal(r, d, sizeof d);
    free(r);
    assert_int_not_equal(h5_read_floats(f, "state_dict/missing", &r, &nd, shape, err, sizeof err), 0);
    assert_non_null(strstr(err, "missing"));
    char s[64];
    int64_t v;
    assert_int_equal(h5_read_attr_str(f, "/", "format", s, sizeof s), 0);
    assert_string_equal(s, "poster-state");
    assert_int_equal(h5_read_attr_i64(f, "/", "version", &v), 0);
    assert_int_equal(v, 3);
    h5_close(f);
    assert_true(h5_open_read(tu_path("/does_not_exist.h5"), err, sizeof err) < 0);
    assert_non_null(strstr(err, "does_not_exist.h5"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_reuses_one_block),
        cmocka_unit_test(test_tape_and_views),
        cmocka_unit_test(test_store_layout),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_h5_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
