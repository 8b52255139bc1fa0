// Metrics against hand-computed values; the printed table and the CSV carry
// them; the confusion PNG, read back with cairo, shades each cell by its
// row-normalized value (darkest where the largest is); the curves PNG is drawn.
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
    // The printed table: headline metrics, one row per class, the confusion matrix,
    // each value parsed back and compared with the hand-computed ones.
    f = fopen(tu_path("/m.txt"), "w+");
    metrics_print(&m, &c, names, f);
    rewind(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    double f1 = (0.75 + 4.0 / 7 + 0.4) / 3, v;
    long long cnt;
    assert_int_equal(sscanf(strstr(buf, "samples "), "samples %lld", &cnt), 1);
    assert_int_equal(cnt, 10);
    assert_int_equal(sscanf(strstr(buf, "accuracy "), "accuracy %lf", &v), 1);
    assert_true(fabs(v - 0.6) < 5e-5);
    assert_int_equal(sscanf(strstr(buf, "macro F1 "), "macro F1 %lf", &v), 1);
    assert_true(fabs(v - f1) < 5e-5);
    assert_int_equal(sscanf(strstr(buf, "score "), "score %lf", &v), 1);
    assert_true(fabs(v - (0.67 * f1 + 0.33 * 0.6)) < 5e-5);
    // class rows: name, samples, accuracy, precision, F1
    const double want_row[3][4] = {{4, 0.75, 0.75, 0.75},
                                   {4, 0.5, 2.0 / 3, 4.0 / 7},
                                   {2, 0.5, 1.0 / 3, 0.4}};
    char *table = strstr(buf, "\nclass ");
    assert_non_null(table);
    char *cm = strstr(buf, "confusion matrix (rows = target, columns = prediction)");
    assert_non_null(cm);
    for (int a = 0; a < 3; a++) {
        char key[32];
        snprintf(key, sizeof key, "\n%s ", names[a]);
        char *row = strstr(table, key);
        if (!row || row > cm) fail_msg("no table row for %s:\n%s", names[a], buf);
        char nm[32];
        double acc, prec, cf1;
        assert_int_equal(sscanf(row + 1, "%31s %lld %lf %lf %lf", nm, &cnt, &acc, &prec, &cf1), 5);
        assert_int_equal(cnt, (long long)want_row[a][0]);
        if (fabs(acc - want_row[a][1]) > 5e-5 || fabs(prec - want_row[a][2]) > 5e-5 ||
            fabs(cf1 - want_row[a][3]) > 5e-5)
            fail_msg("%s row: %.4f %.4f %.4f, want %.4f %.4f %.4f", nm, acc, prec, cf1,
                     want_row[a][1], want_row[a][2], want_row[a][3]);
    }
    // confusion rows (target) x columns (prediction): the counts of fill()
    const long long want_cm[3][3] = {{3, 1, 0}, {0, 2, 2}, {1, 0, 1}};
    char *hdr = strchr(cm, '\n');
    assert_non_null(hdr);
    assert_non_null(strstr(hdr, "Surprise"));
    char *line = strchr(hdr + 1, '\n');   // end of the column header line
    for (int a = 0; a < 3; a++) {
        assert_non_null(line);
        char nm[32];
        long long x[3];
        assert_int_equal(sscanf(line + 1, "%31s %lld %lld %lld", nm, &x[0], &x[1], &x[2]), 4);
        assert_string_equal(nm, names[a]);
        for (int b = 0; b < 3; b++)
            if (x[b] != want_cm[a][b])
                fail_msg("confusion[%d][%d] printed %lld, want %lld", a, b, x[b], want_cm[a][b]);
        line = strchr(line + 1, '\n');
    }
    assert_int_not_equal(metrics_write_csv(tu_path("/nonexistent_dir/x/m.csv"), &m, &c, names, err,
                                           sizeof err), 0);
    assert_non_null(strstr(err, "nonexistent_dir"));
    metrics_free(&m);
    confusion_free(&c);
}

// RGB of pixel (x, y) of an image surface (RGB24 or ARGB32: 0x00RRGGBB in memory order).
static uint32_t px_at(cairo_surface_t *s, int x, int y) {
    unsigned char *d = cairo_image_surface_get_data(s);
    return *(uint32_t *)(d + (size_t)y * cairo_image_surface_get_stride(s) + 4 * (size_t)x) & 0xffffff;
}

static double luma(uint32_t v) {
    return 0.299 * ((v >> 16) & 255) + 0.587 * ((v >> 8) & 255) + 0.114 * (v & 255);
}

// Reads the heat map back from the PNG without knowing the layout: its cells are
// the only blocks of uniform colour other than the white background (text and
// the colour bar's gradient are not uniform over BLK x BLK pixels); their
// bounding box is the k x k grid. Then each cell's colour (sampled in a corner,
// away from the value printed in its middle) must get darker with the
// row-normalized value: the largest value's cell is the darkest, equal values
// have equal colours.
static void check_confusion_cells(cairo_surface_t *s, int k, const int64_t *m) {
    cairo_surface_flush(s);
    const int BLK = 12;
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int y = 0; y + BLK <= h; y += 2)
        for (int x = 0; x + BLK <= w; x += 2) {
            uint32_t c = px_at(s, x, y);
            if (c == 0xffffff) continue;
            int uniform = 1;
            for (int dy = 0; dy < BLK && uniform; dy++)
                for (int dx = 0; dx < BLK && uniform; dx++) uniform = px_at(s, x + dx, y + dy) == c;
            if (!uniform) continue;
            if (x < x0) x0 = x;
            if (y < y0) y0 = y;
            if (x + BLK > x1) x1 = x + BLK;
            if (y + BLK > y1) y1 = y + BLK;
        }
    if (x1 < 0) fail_msg("no uniform heat-map cells found in the confusion PNG");
    double cw = (double)(x1 - x0) / k, ch = (double)(y1 - y0) / k;
    if (!(cw > BLK && fabs(cw - ch) <= 3)) fail_msg("heat map %dx%d px is not %d square cells", x1 - x0, y1 - y0, k);
    double v[64], l[64];
    int best = 0;
    for (int a = 0; a < k; a++) {
        int64_t row = 0;
        for (int b = 0; b < k; b++) row += m[a * k + b];
        for (int b = 0; b < k; b++) {
            int i = a * k + b;
            v[i] = row ? (double)m[i] / row : 0;
            int px = (int)(x0 + b * cw + cw / 6), py = (int)(y0 + a * ch + ch / 6);
            l[i] = luma(px_at(s, px, py));
            if (v[i] > v[best]) best = i;
        }
    }
    for (int i = 0; i < k * k; i++) {
        if (i != best && !(l[best] < l[i]))
            fail_msg("cell %d (value %.2f) is as dark as the largest (%d, %.2f)", i, v[i], best, v[best]);
        for (int j = 0; j < k * k; j++) {
            if (v[i] > v[j] + 1e-9 && !(l[i] < l[j]))
                fail_msg("cell %d (%.2f, luma %.1f) not darker than cell %d (%.2f, luma %.1f)", i,
                         v[i], l[i], j, v[j], l[j]);
            if (fabs(v[i] - v[j]) < 1e-9 && fabs(l[i] - l[j]) > 0.5)
                fail_msg("cells %d and %d hold %.2f but differ in colour", i, j, v[i]);
        }
    }
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
    check_confusion_cells(s, 3, m);
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

static unsigned char *read_all(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
    return b;
}

// plot_release_fonts (called by `poster` at exit) hands fontconfig's and cairo's
// process-wide data back; drawing afterwards must set them up again and give
// the same picture byte for byte.
static void test_plots_after_release(void **st) {
    (void)st;
    int64_t m[4] = {3, 1, 0, 4};
    const char *names[] = {"Happiness", "Neutral"};
    char err[512];
    long n1, n2;
    assert_int_equal(plot_confusion(tu_path("/r1.png"), m, 2, names, "r", err, sizeof err), 0);
    plot_release_fonts();
    assert_int_equal(plot_confusion(tu_path("/r2.png"), m, 2, names, "r", err, sizeof err), 0);
    plot_release_fonts();
    unsigned char *a = read_all(tu_path("/r1.png"), &n1), *b = read_all(tu_path("/r2.png"), &n2);
    assert_true(n1 > 1000);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, (size_t)n1);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_hand), cmocka_unit_test(test_argmax_logits),
        cmocka_unit_test(test_csv_print), cmocka_unit_test(test_plots),
        cmocka_unit_test(test_plots_after_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
