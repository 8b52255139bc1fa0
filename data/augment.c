// The official training augmentations and normalization (docs/POSTER.md, "Input
// pipeline"), computed on the source image so that the 112 fast path (only the
// pixels x[:, :, ::2, ::2] of the 224 result) gives exactly the same values.
//
// Order: basic aug (p 0.5: flip or Gaussian noise, uniformly) -> random flip
// (p 0.5) -> resize 224 (PIL bilinear) -> /255 -> normalize -> random erasing.
// Both flips and the noise act on the source (uint8), so they are shared by the
// two output sizes; erasing is drawn in 224 coordinates and applied to the kept
// pixels only.
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

static const float k_mean[3] = {0.485f, 0.456f, 0.406f};
static const float k_std[3] = {0.229f, 0.224f, 0.225f};
static float g_lut[3][256];
static pthread_once_t g_lut_once = PTHREAD_ONCE_INIT;

// ToTensor: uint8 -> float32 / 255; Normalize: (x - mean) / std, all in float32.
static void lut_init(void) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)v / 255.0f;
            g_lut[c][v] = (x - k_mean[c]) / k_std[c];
        }
}

const float (*aug_norm_lut(void))[256] {
    pthread_once(&g_lut_once, lut_init);
    return (const float(*)[256])g_lut;
}

void aug_scratch_free(aug_scratch *s) {
    free(s->buf);
    free(s->rs);
    memset(s, 0, sizeof *s);
}

void aug_add_noise(uint8_t *px, size_t n, uint64_t seed) {
    rng r;
    rng_seed(&r, seed);
    const double sigma = sqrt(30.0);
    for (size_t i = 0; i < n; i++) {
        double v = px[i] + rng_normal(&r) * sigma;
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        px[i] = (uint8_t)v;   // truncation, as numpy's astype(np.uint8)
    }
}

void aug_flip(const uint8_t *in, int h, int w, uint8_t *out) {
    for (int y = 0; y < h; y++) {
        const uint8_t *s = in + (size_t)y * w * 3;
        uint8_t *d = out + (size_t)y * w * 3;
        for (int x = 0; x < w; x++) memcpy(d + 3 * x, s + 3 * (w - 1 - x), 3);
    }
}

// torchvision.transforms.RandomErasing.get_params, value 0.
bool aug_erase_params(rng *r, int H, int W, int *oi, int *oj, int *oh, int *ow) {
    const double area = (double)H * W;
    const double lr0 = log(0.3), lr1 = log(3.3);
    for (int t = 0; t < 10; t++) {
        double ea = area * (0.02 + (0.1 - 0.02) * rng_uniform(r));
        double ar = exp(lr0 + (lr1 - lr0) * rng_uniform(r));
        // Python's round(): half to even, as nearbyint in the default mode.
        int h = (int)nearbyint(sqrt(ea * ar));
        int w = (int)nearbyint(sqrt(ea / ar));
        if (!(h < H && w < W)) continue;
        *oi = (int)rng_below(r, H - h + 1);
        *oj = (int)rng_below(r, W - w + 1);
        *oh = h;
        *ow = w;
        return true;
    }
    return false;
}

void aug_draw(uint64_t seed, int epoch, int64_t position, aug_plan *p) {
    rng r;
    rng_seed(&r, data_mix_seed(seed, 0xA06, (uint64_t)epoch, (uint64_t)position));
    memset(p, 0, sizeof *p);
    p->basic = -1;
    if (rng_uniform(&r) < 0.5) {
        p->basic = (int)rng_below(&r, 2);
        if (p->basic == 0) p->flip = true;
        else p->noise = true;
    }
    p->noise_seed = rng_u64(&r);
    p->rand_flip = rng_uniform(&r) < 0.5;
    if (p->rand_flip) p->flip = !p->flip;
    if (rng_uniform(&r) < 0.5)
        p->erase = aug_erase_params(&r, 224, 224, &p->ei, &p->ej, &p->eh, &p->ew);
}

static uint8_t *grow(uint8_t **buf, size_t *cap, size_t n) {
    if (*cap < n) {
        free(*buf);
        *buf = malloc(n);
        AG_ASSERT(*buf, "out of memory (%zu bytes)", n);
        *cap = n;
    }
    return *buf;
}

void aug_apply(const image_u8 *src, const aug_plan *plan, bool bgr, int out_size, int step,
               aug_scratch *s, float *out) {
    const size_t npx = (size_t)src->h * src->w * 3;
    image_u8 im = *src;
    if (plan && (plan->noise || plan->flip)) {
        // buf holds [noised source | flipped source].
        uint8_t *b = grow(&s->buf, &s->cap, 2 * npx);
        const uint8_t *cur = src->px;
        if (plan->noise) {
            memcpy(b, src->px, npx);
            aug_add_noise(b, npx, plan->noise_seed);
            cur = b;
        }
        if (plan->flip) {
            aug_flip(cur, src->h, src->w, b + npx);
            cur = b + npx;
        }
        im.px = (uint8_t *)cur;
    }
    const int so = out_size / step;
    const size_t plane = (size_t)so * so;
    uint8_t *rs = grow(&s->rs, &s->rs_cap, plane * 3);
    image_resize_pil(&im, out_size, step, rs);
    const float(*lut)[256] = aug_norm_lut();
    // Channel c of the tensor: RGB index c, or 2 - c for OpenCV's BGR order;
    // the mean/std of position c apply either way (as the official code).
    for (int c = 0; c < 3; c++) {
        const int sc = bgr ? 2 - c : c;
        const float *l = lut[c];
        float *o = out + c * plane;
        for (size_t i = 0; i < plane; i++) o[i] = l[rs[3 * i + sc]];
    }
    if (plan && plan->erase) {
        // Output pixel (y, x) is pixel (y*step, x*step) of the 224 image.
        for (int y = 0; y < so; y++) {
            int yy = y * step;
            if (yy < plan->ei || yy >= plan->ei + plan->eh) continue;
            for (int x = 0; x < so; x++) {
                int xx = x * step;
                if (xx < plan->ej || xx >= plan->ej + plan->ew) continue;
                for (int c = 0; c < 3; c++) out[c * plane + (size_t)y * so + x] = 0.0f;
            }
        }
    }
}
