// JPEG decode/encode (TurboJPEG) and PIL's bilinear resize, bit-exact.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "data/data_internal.h"

void image_free(image_u8 *im) {
    free(im->px);
    im->px = NULL;
    im->h = im->w = 0;
}

// A decoder: the TurboJPEG handle, replaced after every failure. libjpeg-turbo
// 2.1 leaves a handle in a broken state when a header fails to parse (the next,
// good file then "decodes" as 0x0), so one bad image would spoil the next ones.
typedef struct image_tj {
    tjhandle h;
} image_tj;

void *image_tj_decoder(void) {
    image_tj *t = malloc(sizeof *t);
    if (!t) return NULL;
    t->h = tjInitDecompress();
    if (!t->h) {
        free(t);
        return NULL;
    }
    return t;
}

void image_tj_free(void *tj) {
    image_tj *t = tj;
    if (!t) return;
    if (t->h) tjDestroy(t->h);
    free(t);
}

static void tj_reset(image_tj *t) {
    if (t->h) tjDestroy(t->h);
    t->h = tjInitDecompress();
}

int image_decode_jpeg(void *tj_, const uint8_t *buf, size_t n, image_u8 *out, char *err,
                      size_t errlen) {
    image_tj *owner = tj_;
    tjhandle tj = owner ? owner->h : tjInitDecompress();
    int rc = -1, w = 0, h = 0, sub = 0, cs = 0;
    out->px = NULL;
    if (!tj) {
        snprintf(err, errlen, "cannot create a JPEG decoder");
        return -1;
    }
    if (n < 4 || buf[0] != 0xFF || buf[1] != 0xD8) {
        snprintf(err, errlen, "not a JPEG file (no SOI marker)");
        goto done;
    }
    if (tjDecompressHeader3(tj, buf, (unsigned long)n, &w, &h, &sub, &cs)) {
        snprintf(err, errlen, "corrupt JPEG header: %s", tjGetErrorStr2(tj));
        goto done;
    }
    // 2^28 pixels (768 MB decoded) bounds what a tiny hostile header can make us allocate.
    if (w <= 0 || h <= 0 || (int64_t)w * h > (int64_t)1 << 28) {
        snprintf(err, errlen, "unsupported JPEG size %dx%d", w, h);
        goto done;
    }
    out->px = malloc((size_t)w * h * 3);
    if (!out->px) {
        snprintf(err, errlen, "out of memory for a %dx%d image", w, h);
        goto done;
    }
    // Default (accurate integer) IDCT and fancy upsampling, as PIL and OpenCV.
    // Any libjpeg warning (e.g. "premature end of data") makes the image bad.
    if (tjDecompress2(tj, buf, (unsigned long)n, out->px, w, 0, h, TJPF_RGB,
                      TJFLAG_STOPONWARNING)) {
        snprintf(err, errlen, "corrupt or truncated JPEG: %s", tjGetErrorStr2(tj));
        free(out->px);
        out->px = NULL;
        goto done;
    }
    out->w = w;
    out->h = h;
    rc = 0;
done:
    if (!owner) tjDestroy(tj);
    else if (rc) tj_reset(owner);
    return rc;
}

static int read_file(const char *path, uint8_t **buf, size_t *n, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            uint8_t *nb = realloc(b, cap);
            if (!nb) break;
            b = nb;
        }
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    *buf = b;
    *n = len;
    return 0;
}

int image_load_jpeg(void *tj, const char *path, image_u8 *out, char *err, size_t errlen) {
    uint8_t *buf;
    size_t n;
    if (read_file(path, &buf, &n, err, errlen)) return -1;
    char e[256];
    int rc = image_decode_jpeg(tj, buf, n, out, e, sizeof e);
    free(buf);
    if (rc) snprintf(err, errlen, "%s: %s", path, e);
    return rc;
}

int image_jpeg_size(void *tj_, const char *path, int *h, int *w, char *err, size_t errlen) {
    uint8_t *buf;
    size_t n;
    if (read_file(path, &buf, &n, err, errlen)) return -1;
    image_tj *owner = tj_;
    tjhandle tj = owner ? owner->h : tjInitDecompress();
    int sub, cs, rc = 0;
    if (n < 4 || tjDecompressHeader3(tj, buf, (unsigned long)n, w, h, &sub, &cs)) {
        snprintf(err, errlen, "%s: corrupt JPEG header", path);
        rc = -1;
    } else if (*w <= 0 || *h <= 0 || (int64_t)*w * *h > (int64_t)1 << 28) {
        snprintf(err, errlen, "%s: unsupported JPEG size %dx%d", path, *w, *h);
        rc = -1;
    }
    if (!owner) tjDestroy(tj);
    else if (rc) tj_reset(owner);
    free(buf);
    return rc;
}

int image_save_jpeg(const char *path, const uint8_t *rgb, int h, int w, int quality, char *err,
                    size_t errlen) {
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long len = 0;
    int rc = -1;
    if (!tj) {
        snprintf(err, errlen, "cannot create a JPEG encoder");
        return -1;
    }
    if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &len, TJSAMP_420, quality, 0)) {
        snprintf(err, errlen, "%s: JPEG encoding failed: %s", path, tjGetErrorStr2(tj));
        goto done;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    size_t wr = fwrite(jpg, 1, len, f);
    if (fclose(f) || wr != len) {
        snprintf(err, errlen, "%s: write error", path);
        goto done;
    }
    rc = 0;
done:
    tjFree(jpg);
    tjDestroy(tj);
    return rc;
}

// ---------------------------------------------------------------------------
// PIL Resample.c restated: bilinear filter (support 1), coefficients per output
// pixel normalized to sum 1, converted to 22-bit fixed point, accumulated from
// 1 << 21 (round half up) and clipped to uint8 after each pass.

#define PB 22

typedef struct {
    int ksize;
    int *bounds;   // [out, 2]: first source index, count
    int32_t *kk;   // [out, ksize]
} coeffs;

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void precompute(int in_size, int out_size, coeffs *c) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    c->kk = malloc((size_t)out_size * ksize * sizeof(int32_t));
    double *k = malloc((size_t)ksize * sizeof(double));
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        int32_t *kk = c->kk + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? k[x] : 0.0;
            kk[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PB)) : (int32_t)(0.5 + v * (1 << PB));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(k);
}

static inline uint8_t clip8(int32_t v) {
    if (v >= (1 << PB << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PB);
}

void image_resize_pil(const image_u8 *in, int out_size, int step, uint8_t *out) {
    AG_ASSERT(step == 1 || step == 2, "resize step %d", step);
    AG_ASSERT(out_size % step == 0, "resize size %d step %d", out_size, step);
    const int W = in->w, H = in->h, so = out_size / step;
    coeffs ch, cv;
    precompute(W, out_size, &ch);
    precompute(H, out_size, &cv);
    // Source rows the vertical pass reads (only those of the kept output rows).
    int y0 = H, y1 = 0;
    for (int oy = 0; oy < out_size; oy += step) {
        int a = cv.bounds[2 * oy], b = a + cv.bounds[2 * oy + 1];
        if (a < y0) y0 = a;
        if (b > y1) y1 = b;
    }
    if (y1 < y0) y1 = y0;
    // Horizontal pass: rows y0..y1, kept columns only. tmp [y1-y0, so, 3]
    uint8_t *tmp = malloc((size_t)(y1 - y0) * so * 3 + 1);
    for (int y = y0; y < y1; y++) {
        const uint8_t *src = in->px + (size_t)y * W * 3;
        uint8_t *dst = tmp + (size_t)(y - y0) * so * 3;
        for (int ox = 0; ox < so; ox++) {
            const int xx = ox * step, xmin = ch.bounds[2 * xx], xn = ch.bounds[2 * xx + 1];
            const int32_t *k = ch.kk + (size_t)xx * ch.ksize;
            int32_t s0 = 1 << (PB - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xn; x++) {
                const uint8_t *p = src + (size_t)(xmin + x) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            dst[3 * ox] = clip8(s0);
            dst[3 * ox + 1] = clip8(s1);
            dst[3 * ox + 2] = clip8(s2);
        }
    }
    // Vertical pass over the kept output rows, a whole row at a time (the
    // same sums in the same order as PIL, vectorizable).
    int32_t *acc = malloc((size_t)so * 3 * sizeof(int32_t));
    for (int oy = 0; oy < so; oy++) {
        const int yy = oy * step, ymin = cv.bounds[2 * yy], yn = cv.bounds[2 * yy + 1];
        const int32_t *k = cv.kk + (size_t)yy * cv.ksize;
        uint8_t *dst = out + (size_t)oy * so * 3;
        for (int c = 0; c < so * 3; c++) acc[c] = 1 << (PB - 1);
        for (int y = 0; y < yn; y++) {
            const uint8_t *row = tmp + (size_t)(ymin + y - y0) * so * 3;
            const int32_t ky = k[y];
            for (int c = 0; c < so * 3; c++) acc[c] += row[c] * ky;
        }
        for (int c = 0; c < so * 3; c++) dst[c] = clip8(acc[c]);
    }
    free(acc);
    free(tmp);
    free(ch.bounds);
    free(ch.kk);
    free(cv.bounds);
    free(cv.kk);
}
