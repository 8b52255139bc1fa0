// Training losses against PyTorch: official 2*LSCE(0.2)+CE, plain CE and
// LSCE(0.1): value and d loss / d logits; config validation of loss.*.
#include "test_util.h"
#include "layers/loss.h"

static void check(const char *name, loss_opts o) {
    hid_t f = tu_fixture_open("optim_ref.h5");
    tensor *z = tu_fixture_tensor(f, "loss/logits");
    z->requires_grad = true;
    int64_t cnt;
    int64_t *y = tu_fixture_int64(f, "y", &cnt);   // first batch's targets
    tensor *l = loss_compute(&o, z, y);
    char path[64];
    snprintf(path, sizeof path, "loss/%s/value", name);
    tensor *want = tu_fixture_tensor(f, path);
    double e = fabs(l->data[0] - want->data[0]) / fabs(want->data[0]);
    if (!(e <= 1e-5)) fail_msg("%s: loss %.7g vs torch %.7g", name, l->data[0], want->data[0]);
    ag_backward(l);
    snprintf(path, sizeof path, "loss/%s/grad", name);
    tu_expect_close(path, z, z->grad, tu_fixture_tensor(f, path), 1e-5);
    free(y);
    ag_step_reset();
    h5_close(f);
}

static void test_losses(void **st) {
    (void)st;
    loss_opts o;
    loss_opts_default(&o);
    check("official", o);
    check("ce", (loss_opts){0, 0, 1});
    check("lsce", (loss_opts){1, 0.1f, 0});
}

static void test_loss_config(void **st) {
    (void)st;
    config c;
    config_init(&c);
    loss_config_register(&c);
    char err[1024];
    loss_opts o;
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    assert_int_equal(loss_opts_from_config(&c, &o, err, sizeof err), 0);
    assert_true(o.ls_weight == 2 && o.smoothing == 0.2f && o.ce_weight == 1);
    assert_int_equal(config_set(&c, "loss.smoothing=1.5", err, sizeof err), 0);
    assert_int_not_equal(config_validate(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "loss.smoothing"));
    config_init(&c);
    loss_config_register(&c);
    config_set(&c, "loss.ls_weight=0", err, sizeof err);
    config_set(&c, "loss.ce_weight=0", err, sizeof err);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    assert_int_not_equal(loss_opts_from_config(&c, &o, err, sizeof err), 0);
}

int main(void) {
    h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_loss_config),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ag_shutdown();
    return rc;
}
