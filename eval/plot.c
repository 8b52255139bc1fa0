// Confusion matrix and training-curve pictures with cairo (see plot.h).
#include "plot.h"

#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/atomic.h"
#include "autograd/tensor.h"

static int finish(cairo_surface_t *surf, const char *path, char *err, size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cairo_surface_flush(surf);
    cairo_status_t st = cairo_surface_write_to_png(surf, tmp);
    cairo_surface_destroy(surf);
    if (st != CAIRO_STATUS_SUCCESS) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, cairo_status_to_string(st));
        remove(tmp);
        return -1;
    }
    return atomic_commit(tmp, path, err, errlen);
}

// Matplotlib's "Blues" between its end points, in linear steps.
static void blues(double t, double *r, double *g, double *b) {
    static const double stops[9][3] = {
        {247, 251, 255}, {222, 235, 247}, {198, 219, 239}, {158, 202, 225}, {107, 174, 214},
        {66, 146, 198},  {33, 113, 181},  {8, 81, 156},    {8, 48, 107}};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i >= 8) i = 7;
    double f = x - i;
    *r = (stops[i][0] + f * (stops[i + 1][0] - stops[i][0])) / 255;
    *g = (stops[i][1] + f * (stops[i + 1][1] - stops[i][1])) / 255;
    *b = (stops[i][2] + f * (stops[i + 1][2] - stops[i][2])) / 255;
}

static void text_centered(cairo_t *cr, const char *s, double x, double y) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - e.width / 2 - e.x_bearing, y - e.height / 2 - e.y_bearing);
    cairo_show_text(cr, s);
}

static void text_right(cairo_t *cr, const char *s, double x, double y) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - e.width - e.x_bearing, y - e.height / 2 - e.y_bearing);
    cairo_show_text(cr, s);
}

int plot_confusion(const char *path, const int64_t *m, int k, const char *const *names,
                   const char *title, char *err, size_t errlen) {
    AG_ASSERT(k > 0, "plot_confusion with %d classes", k);
    char buf[64];
    // Measure the longest class name to size the margins.
    cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 8, 8);
    cairo_t *pc = cairo_create(probe);
    cairo_select_font_face(pc, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(pc, 14);
    double name_w = 0;
    for (int a = 0; a < k; a++) {
        const char *nm = names && names[a] ? names[a] : (snprintf(buf, sizeof buf, "%d", a), buf);
        cairo_text_extents_t e;
        cairo_text_extents(pc, nm, &e);
        if (e.width > name_w) name_w = e.width;
    }
    cairo_destroy(pc);
    cairo_surface_destroy(probe);
    const double cell = k <= 10 ? 64 : (k <= 20 ? 40 : 24);
    const double left = name_w + 60, top = 60, bottom = name_w * 0.75 + 60, right = 100;
    const int W = (int)(left + k * cell + right), H = (int)(top + k * cell + bottom);
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    for (int a = 0; a < k; a++) {
        int64_t row = 0;
        for (int b = 0; b < k; b++) row += m[(int64_t)a * k + b];
        for (int b = 0; b < k; b++) {
            double v = row ? (double)m[(int64_t)a * k + b] / row : 0;
            double r, g, bl;
            blues(v, &r, &g, &bl);
            cairo_set_source_rgb(cr, r, g, bl);
            cairo_rectangle(cr, left + b * cell, top + a * cell, cell, cell);
            cairo_fill(cr);
            if (cell >= 24) {
                snprintf(buf, sizeof buf, "%.2f", v);
                if (v > 0.5) cairo_set_source_rgb(cr, 1, 1, 1);
                else cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
                cairo_set_font_size(cr, cell >= 60 ? 15 : (cell >= 40 ? 11 : 8));
                text_centered(cr, buf, left + (b + 0.5) * cell, top + (a + 0.5) * cell);
            }
        }
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, left, top, k * cell, k * cell);
    cairo_stroke(cr);
    // Axis labels: targets down the left, predictions along the bottom (rotated).
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 14);
    for (int a = 0; a < k; a++) {
        const char *nm = names && names[a] ? names[a] : (snprintf(buf, sizeof buf, "%d", a), buf);
        text_right(cr, nm, left - 8, top + (a + 0.5) * cell);
        cairo_text_extents_t e;
        cairo_text_extents(cr, nm, &e);
        cairo_save(cr);
        cairo_translate(cr, left + (a + 0.5) * cell, top + k * cell + 8);
        cairo_rotate(cr, -M_PI / 4);
        cairo_move_to(cr, -e.width - e.x_bearing, e.height / 2);
        cairo_show_text(cr, nm);
        cairo_restore(cr);
    }
    cairo_set_font_size(cr, 16);
    text_centered(cr, "Predicted", left + k * cell / 2, H - 18);
    cairo_save(cr);
    cairo_translate(cr, 18, top + k * cell / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_centered(cr, "True", 0, 0);
    cairo_restore(cr);
    if (title) {
        cairo_set_font_size(cr, 17);
        text_centered(cr, title, left + k * cell / 2, top / 2);
    }
    // Color bar 0..1.
    double cx = left + k * cell + 30, ch = k * cell;
    for (int i = 0; i < 100; i++) {
        double r, g, bl;
        blues(1 - i / 99.0, &r, &g, &bl);
        cairo_set_source_rgb(cr, r, g, bl);
        cairo_rectangle(cr, cx, top + ch * i / 100, 18, ch / 100 + 1);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 11);
    for (int i = 0; i <= 4; i++) {
        snprintf(buf, sizeof buf, "%.2f", 1 - i / 4.0);
        cairo_move_to(cr, cx + 22, top + ch * i / 4 + 4);
        cairo_show_text(cr, buf);
    }
    cairo_destroy(cr);
    return finish(surf, path, err, errlen);
}

// ---- training curves ----

static void nice_range(double lo, double hi, double *a, double *b, double *step) {
    if (!(hi > lo)) hi = lo + 1;
    double span = hi - lo, raw = span / 5, mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double s = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    *a = floor(lo / s) * s;
    *b = ceil(hi / s) * s;
    *step = s;
}

typedef struct series {
    const double *y;
    const char *label;
    double r, g, b;
    bool dashed;
} series;

static void panel(cairo_t *cr, double x0, double y0, double w, double h, const char *ylabel,
                  const double *x, int n, const series *ss, int ns, bool legend_left) {
    double ylo = INFINITY, yhi = -INFINITY, xlo = INFINITY, xhi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (x[i] < xlo) xlo = x[i];
        if (x[i] > xhi) xhi = x[i];
        for (int s = 0; s < ns; s++)
            if (ss[s].y && isfinite(ss[s].y[i])) {
                if (ss[s].y[i] < ylo) ylo = ss[s].y[i];
                if (ss[s].y[i] > yhi) yhi = ss[s].y[i];
            }
    }
    if (!isfinite(ylo)) ylo = 0, yhi = 1;
    if (!(xhi > xlo)) xhi = xlo + 1;
    double ya, yb, ys;
    nice_range(ylo, yhi, &ya, &yb, &ys);
    double xa, xb, xs;
    nice_range(xlo, xhi, &xa, &xb, &xs);
    if (xs < 1) xs = 1, xa = floor(xlo), xb = ceil(xhi);
    char buf[32];
    cairo_set_font_size(cr, 11);
    cairo_set_line_width(cr, 1);
    for (double v = ya; v <= yb + ys * 1e-6; v += ys) {   // horizontal grid + labels
        double py = y0 + h - (v - ya) / (yb - ya) * h;
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, x0, py);
        cairo_line_to(cr, x0 + w, py);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        snprintf(buf, sizeof buf, "%g", fabs(v) < ys * 1e-6 ? 0.0 : v);
        text_right(cr, buf, x0 - 5, py);
    }
    for (double v = xa; v <= xb + xs * 1e-6; v += xs) {
        double px = x0 + (v - xa) / (xb - xa) * w;
        cairo_set_source_rgb(cr, 0, 0, 0);
        snprintf(buf, sizeof buf, "%g", v);
        text_centered(cr, buf, px, y0 + h + 12);
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_rectangle(cr, x0, y0, w, h);
    cairo_stroke(cr);
    cairo_set_font_size(cr, 13);
    text_centered(cr, "epoch", x0 + w / 2, y0 + h + 32);
    cairo_save(cr);
    cairo_translate(cr, x0 - 48, y0 + h / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_centered(cr, ylabel, 0, 0);
    cairo_restore(cr);
    cairo_set_line_width(cr, 2);
    for (int s = 0; s < ns; s++) {
        if (!ss[s].y) continue;
        cairo_set_source_rgb(cr, ss[s].r, ss[s].g, ss[s].b);
        double dash[2] = {6, 4};
        cairo_set_dash(cr, dash, ss[s].dashed ? 2 : 0, 0);
        bool pen = false;
        for (int i = 0; i < n; i++) {
            if (!isfinite(ss[s].y[i])) {
                pen = false;
                continue;
            }
            double px = x0 + (x[i] - xa) / (xb - xa) * w;
            double py = y0 + h - (ss[s].y[i] - ya) / (yb - ya) * h;
            if (pen) cairo_line_to(cr, px, py);
            else cairo_move_to(cr, px, py);
            pen = true;
            if (n == 1) cairo_arc(cr, px, py, 3, 0, 2 * M_PI);
        }
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        // legend entry
        double ly = y0 + 14 + 18 * s, lx = legend_left ? x0 + 10 : x0 + w - 120;
        cairo_move_to(cr, lx, ly);
        cairo_line_to(cr, lx + 24, ly);
        cairo_set_dash(cr, dash, ss[s].dashed ? 2 : 0, 0);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_set_font_size(cr, 12);
        cairo_move_to(cr, lx + 30, ly + 4);
        cairo_show_text(cr, ss[s].label);
    }
}

int plot_curves(const char *path, const plot_curves_data *d, char *err, size_t errlen) {
    const int W = 1000, H = 420;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    if (d->n > 0) {
        series loss[2] = {{d->train_loss, "train", 0.12, 0.47, 0.71, false},
                          {d->val_loss, "validation", 1.0, 0.5, 0.05, true}};
        series acc[2] = {{d->train_acc, "train", 0.12, 0.47, 0.71, false},
                         {d->val_acc, "validation", 1.0, 0.5, 0.05, true}};
        panel(cr, 80, 50, 380, 300, "loss", d->epoch, d->n, loss, 2, false);
        panel(cr, 590, 50, 380, 300, "accuracy", d->epoch, d->n, acc, 2, true);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 16);
    text_centered(cr, d->title ? d->title : "training curves", W / 2.0, 22);
    cairo_destroy(cr);
    return finish(surf, path, err, errlen);
}

// ---- a sweep: accuracy per combination with its spread over seeds ----

int plot_spread(const char *path, const plot_spread_data *d, char *err, size_t errlen) {
    const int n = d->n;
    // Measure the labels: rotated under the axis when they do not fit a column.
    cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 8, 8);
    cairo_t *pc = cairo_create(probe);
    cairo_select_font_face(pc, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(pc, 12);
    double label_w = 0;
    for (int i = 0; i < n; i++) {
        cairo_text_extents_t e;
        cairo_text_extents(pc, d->labels[i] ? d->labels[i] : "", &e);
        if (e.width > label_w) label_w = e.width;
    }
    cairo_destroy(pc);
    cairo_surface_destroy(probe);
    const double col = n <= 6 ? 130 : n <= 16 ? 70 : 40;
    const bool rotate = label_w > col - 8;
    const double left = 90, top = 60, right = 40, ph = 340;
    const double bottom = (rotate ? label_w * 0.72 + 30 : 40) + 40;
    const int W = (int)(left + (n > 0 ? n : 1) * col + right), H = (int)(top + ph + bottom);
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W < 420 ? 420 : W, H);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    // y range over every value (percent)
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d->counts[i]; j++) {
            double v = 100 * d->values[i][j];
            if (!isfinite(v)) continue;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    if (!isfinite(lo)) lo = 0, hi = 100;
    double pad = (hi - lo) * 0.15 + 0.5;
    double ya, yb, ys;
    nice_range(lo - pad, hi + pad, &ya, &yb, &ys);
    if (ya < 0) ya = 0;
    if (yb > 100) yb = 100;
    if (!(yb > ya)) yb = ya + ys;
    const double pw = n * col;
    char buf[64];
    cairo_set_line_width(cr, 1);
    cairo_set_font_size(cr, 11);
    for (double v = ya; v <= yb + ys * 1e-6; v += ys) {
        double py = top + ph - (v - ya) / (yb - ya) * ph;
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, left, py);
        cairo_line_to(cr, left + pw, py);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        snprintf(buf, sizeof buf, "%g", v);
        text_right(cr, buf, left - 5, py);
    }
#define Y(v) (top + ph - (100 * (v) - ya) / (yb - ya) * ph)
    for (int i = 0; i < n; i++) {
        const double cx = left + (i + 0.5) * col;
        const int m = d->counts[i];
        double sum = 0, mn = INFINITY, mx = -INFINITY;
        int k = 0;
        for (int j = 0; j < m; j++)
            if (isfinite(d->values[i][j])) {
                sum += d->values[i][j];
                k++;
                if (d->values[i][j] < mn) mn = d->values[i][j];
                if (d->values[i][j] > mx) mx = d->values[i][j];
            }
        if (k > 0) {
            double mean = sum / k, ss = 0;
            for (int j = 0; j < m; j++)
                if (isfinite(d->values[i][j])) ss += pow(d->values[i][j] - mean, 2);
            double sd = k > 1 ? sqrt(ss / (k - 1)) : 0;
            // min-max whisker (thin), mean +- std box, mean line
            cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
            cairo_set_line_width(cr, 1);
            cairo_move_to(cr, cx, Y(mn));
            cairo_line_to(cr, cx, Y(mx));
            cairo_move_to(cr, cx - 8, Y(mn));
            cairo_line_to(cr, cx + 8, Y(mn));
            cairo_move_to(cr, cx - 8, Y(mx));
            cairo_line_to(cr, cx + 8, Y(mx));
            cairo_stroke(cr);
            double bw = col * 0.36;
            cairo_set_source_rgba(cr, 0.12, 0.47, 0.71, 0.25);
            cairo_rectangle(cr, cx - bw / 2, Y(mean + sd), bw, Y(mean - sd) - Y(mean + sd) + 1);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, 0.12, 0.47, 0.71);
            cairo_set_line_width(cr, 2.5);
            cairo_move_to(cr, cx - bw / 2, Y(mean));
            cairo_line_to(cr, cx + bw / 2, Y(mean));
            cairo_stroke(cr);
            cairo_set_source_rgb(cr, 0, 0, 0);
            cairo_set_font_size(cr, 11);
            snprintf(buf, sizeof buf, "%.2f", 100 * mean);
            text_centered(cr, buf, cx, Y(mx) - 12);
        }
        // every seed's value, spread sideways so equal values stay visible
        cairo_set_source_rgb(cr, 1.0, 0.5, 0.05);
        for (int j = 0; j < m; j++) {
            if (!isfinite(d->values[i][j])) continue;
            double dx = m > 1 ? (j - (m - 1) / 2.0) * (col * 0.3 / (m - 1)) : 0;
            cairo_arc(cr, cx + dx, Y(d->values[i][j]), 3.5, 0, 2 * M_PI);
            cairo_fill(cr);
        }
        // label
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_set_font_size(cr, 12);
        const char *lb = d->labels[i] ? d->labels[i] : "";
        if (rotate) {
            cairo_text_extents_t e;
            cairo_text_extents(cr, lb, &e);
            cairo_save(cr);
            cairo_translate(cr, cx, top + ph + 10);
            cairo_rotate(cr, -M_PI / 4);
            cairo_move_to(cr, -e.width - e.x_bearing, e.height / 2);
            cairo_show_text(cr, lb);
            cairo_restore(cr);
        } else {
            text_centered(cr, lb, cx, top + ph + 16);
        }
    }
#undef Y
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 13);
    cairo_save(cr);
    cairo_translate(cr, 24, top + ph / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_centered(cr, d->ylabel ? d->ylabel : "accuracy (%)", 0, 0);
    cairo_restore(cr);
    cairo_set_font_size(cr, 11);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    text_centered(cr, "dots: seeds; line: mean; box: mean +- std; whiskers: min-max",
                  (W < 420 ? 420 : W) / 2.0, H - 14);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_font_size(cr, 16);
    text_centered(cr, d->title ? d->title : "sweep", (W < 420 ? 420 : W) / 2.0, 24);
    cairo_destroy(cr);
    return finish(surf, path, err, errlen);
}

void plot_release_fonts(void) {
    cairo_debug_reset_static_data();
    FcFini();
}
