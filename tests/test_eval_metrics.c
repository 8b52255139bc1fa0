// Metrics against hand-computed values; confusion/curve pictures are written and
// their pixels reflect the values.
#include <cairo.h>

#include "eval/metrics.h"
#include "eval/plot.h"
#include "test_util.h"

static void fill(confusion *c) {
    // rows = target: [3 1 0] [0 2 2] [1 0 1]
    int t[] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    int p[] = {0, 0, 0, 1, 1, 1, 2, 2, 0, 2};
    for (int i = 0; i < 10; i++) confusion_add(c, t[i], p[i]);
}

static void test_metrics_hand(void **st) {
    (void)st;
    confusion c;
    confusion_init(&c, 3);
    fill(&c);
    assert_int_equal(c.m[0 * 3 + 1], 1);
    assert_int_equal(c.m[2 * 3 + 0], 1);
    metrics m;
    metrics_compute(&c, &m);
    assert_true(fabs(m.accuracy - 0.6) < 1e-12);
    double f1 = (0.75 + 4.0 / 7 + 0.4) / 3;
    assert_true(fabs(m.macro_f1 - f1) < 1e-12);
    assert_true(fabs(m.score - (0.67 * f1 + 0.33 * 0.6)) < 1e-12);
    assert_true(fabs(m.class_acc[0] - 0.75) < 1e-12);
    assert_true(fabs(m.class_acc[1] - 0.5) < 1e-12);
    assert_true(fabs(m.class_acc[2] - 0.5) < 1e-12);
    assert_true(fabs(m.precision[0] - 0.75) < 1e-12);
    assert_true(fabs(m.precision[1] - 2.0 / 3) < 1e-12);
    metrics_free(&m);
    confusion_free(&c);
    // A class that never occurs (as target or prediction) is left out of the macro
    // average, as sklearn does.
    confusion_init(&c, 4);
    fill(&c);
    metrics_compute(&c, &m);
    assert_true(fabs(m.macro_f1 - f1) < 1e-12);
    assert_true(m.class_acc[3] == 0);
    metrics_free(&m);
    // A class predicted but never a target counts with F1 0.
    confusion_add(&c, 0, 3);
    metrics_compute(&c, &m);
    assert_true(fabs(m.macro_f1 - (6.0 / (6 + 1 + 2) + 4.0 / 7 + 0.4 + 0) / 4) < 1e-12);
    metrics_free(&m);
    confusion_free(&c);
}

static void test_argmax_logits(void **st) {
    (void)st;
    float z[] = {0.1f, 0.9f, 0.9f, /**/ 2.0f, -1.0f, 0.0f, /**/ -3.0f, -2.0f, -1.0f};
    int64_t y[] = {1, 0, 0};
    assert_int_equal(argmax_row(z, 3), 1);   // first maximum wins
    confusion c;
    confusion_init(&c, 3);
    confusion_add_logits(&c, z, y, 3);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.m[1 * 3 + 1], 1);
    assert_int_equal(c.m[0 * 3 + 0], 1);
    assert_int_equal(c.m[0 * 3 + 2], 1);
    confusion_free(&c);
}

static void test_csv_print(void **st) {
    (void)st;
    confusion c;
    confusion_init(&c, 3);
    fill(&c);
    metrics m;
    metrics_compute(&c, &m);
    const char *names[] = {"Surprise", "Fear", "Disgust"};
    char err[512];
    assert_int_equal(metrics_write_csv(tu_path("/m.csv"), &m, &c, names, err, sizeof err), 0);
    FILE *f = fopen(tu_path("/m.csv"), "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "accuracy,0.600000"));
    assert_non_null(strstr(buf, "Fear,4,0.500000"));
    assert_non_null(strstr(buf, "Disgust,1,0,1"));
    f = fopen(tu_path("/m.txt"), "w");
    metrics_print(&m, &c, names, f);
    fclose(f);
    assert_int_not_equal(metrics_write_csv(tu_path("/nonexistent_dir/x/m.csv"), &m, &c, names, err,
                                           sizeof err), 0);
    assert_non_null(strstr(err, "nonexistent_dir"));
    metrics_free(&m);
    confusion_free(&c);
}

static void test_plots(void **st) {
    (void)st;
    int64_t m[9] = {9, 1, 0, 0, 5, 5, 0, 0, 10};
    const char *names[] = {"Surprise", "Fear", "Happiness"};
    char err[512];
    assert_int_equal(plot_confusion(tu_path("/cm.png"), m, 3, names, "test", err, sizeof err), 0);
    cairo_surface_t *s = cairo_image_surface_create_from_png(tu_path("/cm.png"));
    assert_int_equal(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    assert_true(w > 200 && h > 200);
    cairo_surface_destroy(s);
    double ep[4] = {1, 2, 3, 4}, tl[4] = {2, 1.5, 1.2, 1}, vl[4] = {2.1, 1.7, NAN, 1.3};
    double ta[4] = {0.3, 0.5, 0.6, 0.7}, va[4] = {0.25, 0.45, NAN, 0.66};
    plot_curves_data d = {4, ep, tl, vl, ta, va, "demo"};
    assert_int_equal(plot_curves(tu_path("/curves.png"), &d, err, sizeof err), 0);
    s = cairo_image_surface_create_from_png(tu_path("/curves.png"));
    assert_int_equal(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    // Some pixels carry the train series' blue.
    unsigned char *px = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s), blue = 0;
    for (int y = 0; y < cairo_image_surface_get_height(s); y++)
        for (int x = 0; x < cairo_image_surface_get_width(s); x++) {
            uint32_t v = *(uint32_t *)(px + y * stride + 4 * x);
            int r = (v >> 16) & 255, g = (v >> 8) & 255, b = v & 255;
            if (b > 150 && r < 60 && g > 90 && g < 150) blue++;
        }
    assert_true(blue > 100);
    cairo_surface_destroy(s);
    assert_int_not_equal(plot_curves(tu_path("/nonexistent_dir/x.png"), &d, err, sizeof err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_hand), cmocka_unit_test(test_argmax_logits),
        cmocka_unit_test(test_csv_print), cmocka_unit_test(test_plots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
