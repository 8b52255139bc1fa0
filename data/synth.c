// Synthetic expression dataset in the RAF-DB basic layout: antialiased cartoon
// faces (cairo) whose class shows only in the shapes of mouth, eyes and brows.
// Pose, scale, skin/hair/background colours, lighting and noise are drawn
// independently of the class, so a model has to learn shapes, not colours.
#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/atomic.h"
#include "data/data_internal.h"

#define SZ 100


static double U(rng *r, double a, double b) { return a + (b - a) * rng_uniform(r); }

static void hsv(double h, double s, double v, double *rgb) {
    h = fmod(h, 1.0) * 6;
    int i = (int)h;
    double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    double t3[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, t3[i % 6], sizeof t3[0]);
}

// Brow from (x_in, y_in) near the nose to (x_out, y_out), slightly arched.
static void brow(cairo_t *cr, double side, double yin, double yout, double arch) {
    double xi = side * 5, xo = side * 23;
    cairo_move_to(cr, xi, yin);
    cairo_curve_to(cr, xi + side * 5, yin - arch, xo - side * 5, yout - arch, xo, yout);
    cairo_stroke(cr);
}

void synth_face(int k, uint64_t seed, uint8_t *rgb) {
    rng r;
    rng_seed(&r, seed);
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, SZ, SZ);
    cairo_t *cr = cairo_create(surf);
    double bg[3], skin[3], hair[3], ink[3];
    hsv(U(&r, 0, 1), U(&r, 0.1, 0.7), U(&r, 0.3, 1.0), bg);
    hsv(U(&r, 0.02, 0.12), U(&r, 0.15, 0.6), U(&r, 0.45, 1.0), skin);
    hsv(U(&r, 0, 1), U(&r, 0.2, 0.9), U(&r, 0.05, 0.6), hair);
    hsv(U(&r, 0, 1), U(&r, 0.0, 0.6), U(&r, 0.0, 0.25), ink);
    cairo_set_source_rgb(cr, bg[0], bg[1], bg[2]);
    cairo_paint(cr);
    // Pose: shift, rotation, scale.
    // The face fills most of the picture (expression strokes of several pixels even
    // at 112x112 after resizing) and the pose jitter stays moderate: the classes are
    // meant to be learnable in minutes by a small model trained from scratch.
    cairo_translate(cr, SZ / 2 + U(&r, -4, 4), SZ / 2 + 3 + U(&r, -4, 4));
    cairo_rotate(cr, U(&r, -0.12, 0.12));
    double s = U(&r, 1.0, 1.12);
    cairo_scale(cr, s, s);
    // Hair (behind), head, ears.
    cairo_set_source_rgb(cr, hair[0], hair[1], hair[2]);
    cairo_save(cr);
    cairo_scale(cr, 37, U(&r, 38, 46));
    cairo_arc(cr, 0, -0.1, 1, M_PI, 2 * M_PI);
    cairo_restore(cr);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, skin[0], skin[1], skin[2]);
    for (int e = -1; e <= 1; e += 2) {
        cairo_arc(cr, e * 33, 2, 6, 0, 2 * M_PI);
        cairo_fill(cr);
    }
    cairo_save(cr);
    cairo_scale(cr, 32, 40);
    cairo_arc(cr, 0, 0.05, 1, 0, 2 * M_PI);
    cairo_restore(cr);
    cairo_fill(cr);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    const double lw = U(&r, 3.0, 4.0);
    cairo_set_line_width(cr, lw);
    cairo_set_source_rgb(cr, ink[0], ink[1], ink[2]);
    // Eyes: openness is part of the expression.
    const double eye_h = k == 0 || k == 1 ? U(&r, 6.5, 7.5) : k == 5 || k == 2 ? U(&r, 1.2, 2.0)
                                                                            : U(&r, 3.5, 4.5);
    const double eye_y = U(&r, -9, -6), eye_x = U(&r, 12, 15);
    for (int e = -1; e <= 1; e += 2) {
        cairo_save(cr);
        cairo_translate(cr, e * eye_x, eye_y);
        cairo_scale(cr, 6.5, eye_h);
        cairo_arc(cr, 0, 0, 1, 0, 2 * M_PI);
        cairo_restore(cr);
        cairo_set_source_rgb(cr, 0.95, 0.95, 0.95);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, ink[0], ink[1], ink[2]);
        cairo_set_line_width(cr, 1.5);
        cairo_stroke(cr);
        cairo_arc(cr, e * eye_x + U(&r, -1, 1), eye_y, fmin(2.6, eye_h), 0, 2 * M_PI);
        cairo_fill(cr);
    }
    // Brows: heights of the inner and outer ends (negative is up).
    cairo_set_line_width(cr, lw);
    const double by = eye_y - 9;
    double yin = by, yout = by, arch = U(&r, 0, 1.5);
    switch (k) {
    case 0: yin = yout = by - U(&r, 7, 9); arch = U(&r, 4, 6); break;           // raised, arched
    case 1: yin = by - U(&r, 8, 10); yout = by + U(&r, 0, 1); break;            // worried
    case 2: yin = by + U(&r, 3, 5); yout = by + U(&r, 1, 3); break;             // lowered
    case 4: yin = by - U(&r, 5, 7); yout = by + U(&r, 2, 4); arch = 0; break;  // sad slant
    case 5: yin = by + U(&r, 6, 8); yout = by - U(&r, 4, 6); arch = 0; break;  // angry V
    default: yin = yout = by + U(&r, -1, 1); break;
    }
    for (int e = -1; e <= 1; e += 2) brow(cr, e, yin, yout, arch);
    // Nose.
    cairo_set_line_width(cr, 1.6);
    cairo_move_to(cr, 0, -2);
    cairo_line_to(cr, U(&r, -3, 3), 7);
    cairo_line_to(cr, 2, 8);
    cairo_stroke(cr);
    // Mouth.
    const double my = U(&r, 19, 22), mw = U(&r, 14, 17);
    cairo_set_line_width(cr, lw);
    switch (k) {
    case 0:   // open round
        cairo_save(cr);
        cairo_translate(cr, 0, my + 1);
        cairo_scale(cr, U(&r, 6, 8), U(&r, 9, 11));
        cairo_arc(cr, 0, 0, 1, 0, 2 * M_PI);
        cairo_restore(cr);
        cairo_fill(cr);
        break;
    case 1: {   // wide open grimace with teeth
        double h = U(&r, 5, 7);
        cairo_move_to(cr, -mw, my);
        cairo_curve_to(cr, -mw / 2, my - h, mw / 2, my - h, mw, my);
        cairo_curve_to(cr, mw / 2, my + h + 2, -mw / 2, my + h + 2, -mw, my);
        cairo_close_path(cr);
        cairo_fill_preserve(cr);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.95, 0.95, 0.95);
        cairo_rectangle(cr, -mw * 0.6, my - h * 0.45, mw * 1.2, h * 0.5);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, ink[0], ink[1], ink[2]);
        break;
    }
    case 2: {   // lip raised on one side, wavy
        double side = rng_uniform(&r) < 0.5 ? -1 : 1;
        cairo_move_to(cr, -side * mw, my + 2);
        cairo_curve_to(cr, -side * mw / 3, my - 4, side * mw / 4, my + 5, side * mw, my - U(&r, 7, 10));
        cairo_stroke(cr);
        // Nose wrinkles.
        cairo_set_line_width(cr, 1.3);
        for (int e = -1; e <= 1; e += 2) {
            cairo_move_to(cr, e * 3, 1);
            cairo_line_to(cr, e * 6, 4);
            cairo_stroke(cr);
        }
        break;
    }
    case 3: {   // smile, sometimes open
        double d = U(&r, 12, 16);
        cairo_move_to(cr, -mw, my - 5);
        cairo_curve_to(cr, -mw / 2, my - 5 + d, mw / 2, my - 5 + d, mw, my - 5);
        if (rng_uniform(&r) < 0.5) {
            cairo_close_path(cr);
            cairo_fill_preserve(cr);
        }
        cairo_stroke(cr);
        break;
    }
    case 4: {   // frown
        double d = U(&r, 11, 14);
        cairo_move_to(cr, -mw, my + 5);
        cairo_curve_to(cr, -mw / 2, my + 5 - d, mw / 2, my + 5 - d, mw, my + 5);
        cairo_stroke(cr);
        break;
    }
    case 5:   // pressed lips, corners down
        cairo_set_line_width(cr, lw * 1.4);
        cairo_move_to(cr, -mw * 0.8, my + 5);
        cairo_line_to(cr, -mw * 0.5, my);
        cairo_line_to(cr, mw * 0.5, my);
        cairo_line_to(cr, mw * 0.8, my + 5);
        cairo_stroke(cr);
        break;
    default:   // neutral: straight
        cairo_move_to(cr, -mw * 0.8, my + 1);
        cairo_line_to(cr, mw * 0.8, my + 1);
        cairo_stroke(cr);
        break;
    }
    // Lighting gradient over the whole picture, random direction and strength.
    cairo_identity_matrix(cr);
    double a = U(&r, 0, 2 * M_PI), g = U(&r, 0, 0.35);
    cairo_pattern_t *pat = cairo_pattern_create_linear(SZ / 2 - 50 * cos(a), SZ / 2 - 50 * sin(a),
                                                       SZ / 2 + 50 * cos(a), SZ / 2 + 50 * sin(a));
    cairo_pattern_add_color_stop_rgba(pat, 0, 1, 1, 1, g);
    cairo_pattern_add_color_stop_rgba(pat, 1, 0, 0, 0, g);
    cairo_set_source(cr, pat);
    cairo_paint(cr);
    cairo_pattern_destroy(pat);
    cairo_destroy(cr);
    cairo_surface_flush(surf);
    const uint8_t *data = cairo_image_surface_get_data(surf);
    const int stride = cairo_image_surface_get_stride(surf);
    const double sigma = U(&r, 1, 6);
    for (int y = 0; y < SZ; y++) {
        const uint32_t *row = (const uint32_t *)(data + (size_t)y * stride);
        for (int x = 0; x < SZ; x++) {
            uint32_t p = row[x];
            int c3[3] = {(int)(p >> 16) & 255, (int)(p >> 8) & 255, (int)p & 255};
            for (int c = 0; c < 3; c++) {
                double v = c3[c] + sigma * rng_normal(&r);
                rgb[((size_t)y * SZ + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
            }
        }
    }
    cairo_surface_destroy(surf);
}

static int mkdir_one(const char *p, char *err, size_t errlen) {
    if (mkdir(p, 0777) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create folder %s: %s", p, strerror(errno));
        return -1;
    }
    return 0;
}

// A grid of the first faces of each class (rows: classes), for a visual check.
static int write_montage(const char *path, uint64_t seed, int cols, char *err, size_t errlen) {
    const int lab_w = 80, W = lab_w + cols * SZ, H = 7 * SZ;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    uint8_t *data = cairo_image_surface_get_data(surf);
    const int stride = cairo_image_surface_get_stride(surf);
    memset(data, 255, (size_t)stride * H);
    uint8_t *rgb = malloc(SZ * SZ * 3);
    for (int k = 0; k < 7; k++)
        for (int j = 0; j < cols; j++) {
            synth_face(k, data_mix_seed(seed, 0xFACE, (uint64_t)k, (uint64_t)j), rgb);
            for (int y = 0; y < SZ; y++) {
                uint32_t *row = (uint32_t *)(data + (size_t)(k * SZ + y) * stride) + lab_w + j * SZ;
                for (int x = 0; x < SZ; x++) {
                    const uint8_t *p = rgb + ((size_t)y * SZ + x) * 3;
                    row[x] = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
                }
            }
        }
    free(rgb);
    cairo_surface_mark_dirty(surf);
    // A grey bar per row, lighter for later classes (no text: cairo's toy font
    // API leaves fontconfig allocations behind, which LeakSanitizer reports).
    for (int k = 0; k < 7; k++)
        for (int y = k * SZ + 10; y < (k + 1) * SZ - 10; y++) {
            uint32_t *row = (uint32_t *)(data + (size_t)y * stride);
            for (int x = 10; x < 10 + 8 * (k + 1); x++) row[x] = 0x303030;
        }
    int rc = cairo_surface_write_to_png(surf, path) == CAIRO_STATUS_SUCCESS ? 0 : -1;
    if (rc) snprintf(err, errlen, "%s: cannot write the PNG", path);
    cairo_surface_destroy(surf);
    return rc;
}

int synth_write(const char *dir, int per_class, uint64_t seed, char *err, size_t errlen) {
    if (per_class < 1) {
        snprintf(err, errlen, "--per-class must be at least 1");
        return -1;
    }
    char p[1200];
    if (mkdir_one(dir, err, errlen)) return -1;
    snprintf(p, sizeof p, "%s/EmoLabel", dir);
    if (mkdir_one(p, err, errlen)) return -1;
    snprintf(p, sizeof p, "%s/Image", dir);
    if (mkdir_one(p, err, errlen)) return -1;
    snprintf(p, sizeof p, "%s/Image/aligned", dir);
    if (mkdir_one(p, err, errlen)) return -1;
    // Samples (class, index) in a seeded random order; about 80% of each class train.
    const int n = 7 * per_class, ntr = (int)lround(per_class * 0.8);
    int *ord = malloc((size_t)n * sizeof(int));
    sampler_shuffle(ord, n, seed, 0x517);
    char list[1200], tmp[1300];
    snprintf(list, sizeof list, "%s/EmoLabel/list_patition_label.txt", dir);
    FILE *f = atomic_fopen(list, "w", tmp, sizeof tmp, err, errlen);
    if (!f) {
        free(ord);
        return -1;
    }
    int rc = 0, itr = 0, ite = 0;
    uint8_t *rgb = malloc(SZ * SZ * 3);
    for (int t = 0; t < n && !rc; t++) {
        const int k = ord[t] / per_class, j = ord[t] % per_class;
        const bool train = j < ntr || per_class == 1;
        char name[64];
        if (train) snprintf(name, sizeof name, "train_%05d", ++itr);
        else snprintf(name, sizeof name, "test_%04d", ++ite);
        synth_face(k, data_mix_seed(seed, 0xFACE, (uint64_t)k, (uint64_t)j), rgb);
        snprintf(p, sizeof p, "%s/Image/aligned/%s_aligned.jpg", dir, name);
        rc = image_save_jpeg(p, rgb, SZ, SZ, 92, err, errlen);
        fprintf(f, "%s.jpg %d\n", name, k + 1);
    }
    free(rgb);
    free(ord);
    if (rc) atomic_fabort(f, tmp);
    else rc = atomic_fclose(f, tmp, list, err, errlen);
    if (!rc) {
        snprintf(p, sizeof p, "%s/montage.png", dir);
        rc = write_montage(p, seed, 10, err, errlen);
    }
    return rc;
}
