// Winograd convolution for 3x3 stride-1 conv2d (groups 1): most of the IR-50
// trunk's multiply-adds. Two tile sizes:
//   - F(2x2, 3x3): 4x4 input tiles, 16 products per 2x2 outputs (2.25x fewer
//     multiplies than direct); transforms use only 0, +-1 and 1/2.
//   - F(4x4, 3x3): 6x6 input tiles, 36 products per 4x4 outputs (4x fewer);
//     interpolation points 0, +-1, +-2 and infinity (Lavin & Gray). Its
//     float32 error, up to 7e-6 of the largest output in tests/test_ops_conv.c,
//     is about 3x F(2x2)'s; ops_conv.c picks the tile per pass (wino_tile).
// Each of the a*a transformed elements is one sgemm [Co, Ci] x [Ci, tiles]
// over the tiles of the whole batch, cut into chunks of whole tile rows so V
// (transformed input) and M (products) stay in the last-level cache. A chunk's
// tile row R = b * th + ti holds the tw tiles of output rows m*ti .. m*ti+m-1
// of sample b, so the transforms run on contiguous rows: a vertical pass over
// full padded rows (vectorized over columns) and a horizontal pass over the
// tiles of the row.
//
// The three passes of a training step:
//   forward  y = conv(x, w) + bias;
//   dx      += conv(dy, w') with w'[ci][co] = rot180(w[co][ci]) and padding
//              2 - pad: the same kernel on the flipped, transposed filters;
//   dw      += G^T (sum over tiles of (A dY A^T) . (B^T d B)) G: the exact
//              gradient of the forward formula (linear algebra, no new error
//              beyond rounding).
// Work is split over threads by channel (transforms) and by transformed
// element (sgemms, single-threaded inside the region), all with static
// schedules and a fixed chunking: results are bit-identical run to run for
// a given thread count.
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "ops_ref.h"

// V + M (or Y + V) of one chunk: about 8 MB, within the shared L3.
#define CHUNK_FLOATS ((int64_t)1 << 21)
#define MIN_TILES 256

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

typedef struct wino_plan {
    int m, a;        // output tile m x m, input tile a x a (a = m + 2)
    int th, tw;      // tile rows per sample, tiles per tile row
    int64_t nrows;   // tile rows of the batch, B * th
    int64_t rc;      // tile rows per chunk
} wino_plan;

static wino_plan plan_make(int m, int B, int Ci, int Co, int Ho, int Wo) {
    wino_plan P;
    P.m = m;
    P.a = m + 2;
    P.th = (Ho + m - 1) / m;
    P.tw = (Wo + m - 1) / m;
    P.nrows = (int64_t)B * P.th;
    P.rc = CHUNK_FLOATS / ((int64_t)P.a * P.a * (Ci + Co)) / P.tw;
    // At least MIN_TILES tiles per sgemm: below that, packing the [Co, Ci]
    // matrix costs too much next to the product (the 256-channel 14x14 layers).
    if (P.rc * P.tw < MIN_TILES) P.rc = (MIN_TILES + P.tw - 1) / P.tw;
    if (P.rc < 1) P.rc = 1;
    if (P.rc > P.nrows) P.rc = P.nrows;
    return P;
}

// ---------------------------------------------------------------------------
// 1-D transforms. B^T (input), A^T (output), G (filter); the backward uses
// their transposes A (output gradient) and G^T (filter gradient).

// F(2, 3)
#define BT2(d0, d1, d2, d3, o0, o1, o2, o3) \
    do {                                    \
        o0 = d0 - d2;                       \
        o1 = d1 + d2;                       \
        o2 = d2 - d1;                       \
        o3 = d1 - d3;                       \
    } while (0)

// F(4, 3), points 0, 1, -1, 2, -2, inf:
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
//          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
#define BT4(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) \
    do {                                                    \
        float s12_ = d1 + d2, t12_ = d1 - d2;              \
        float s34_ = d3 + d4, t43_ = d4 - d3;              \
        float e42_ = d4 - d2, e31_ = d3 - d1;              \
        o0 = 4.0f * d0 - 5.0f * d2 + d4;                    \
        o1 = s34_ - 4.0f * s12_;                            \
        o2 = t43_ + 4.0f * t12_;                            \
        o3 = e42_ + 2.0f * e31_;                            \
        o4 = e42_ - 2.0f * e31_;                            \
        o5 = 4.0f * d1 - 5.0f * d3 + d5;                    \
    } while (0)

// A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
#define AT4(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3) \
    do {                                            \
        float s12_ = m1 + m2, t12_ = m1 - m2;      \
        float s34_ = m3 + m4, t34_ = m3 - m4;      \
        o0 = m0 + s12_ + s34_;                      \
        o1 = t12_ + 2.0f * t34_;                    \
        o2 = s12_ + 4.0f * s34_;                    \
        o3 = t12_ + 8.0f * t34_ + m5;               \
    } while (0)

// A (6x4) on an output-gradient column y0..y3.
#define A4(y0, y1, y2, y3, o0, o1, o2, o3, o4, o5) \
    do {                                           \
        float s02_ = y0 + y2, s13_ = y1 + y3;     \
        float u02_ = y0 + 4.0f * y2, u13_ = 2.0f * y1 + 8.0f * y3; \
        o0 = y0;                                   \
        o1 = s02_ + s13_;                          \
        o2 = s02_ - s13_;                          \
        o3 = u02_ + u13_;                          \
        o4 = u02_ - u13_;                          \
        o5 = y3;                                   \
    } while (0)


// ---------------------------------------------------------------------------
// Filter transform: U [a*a][Co][Ci] = G g G^T. flip: the filters of the dx
// convolution, g'[co][ci] = rot180(w[ci][co]) with w stored [Ci][Co][3][3].

// One filter g (element (r, c) at gp[r * rs + c * cs]) to its 16 transformed
// values u[e * plane], e = 4 k + l.
static inline void filter_f2(const float *gp, int rs, int cs, float *u, int64_t plane) {
    float t[4][3];
    for (int c = 0; c < 3; c++) {   // t = G g
        float g0 = gp[c * cs], g1 = gp[rs + c * cs], g2 = gp[2 * rs + c * cs];
        t[0][c] = g0;
        t[1][c] = 0.5f * (g0 + g1 + g2);
        t[2][c] = 0.5f * (g0 - g1 + g2);
        t[3][c] = g2;
    }
    for (int r = 0; r < 4; r++) {   // U = t G^T
        float *ur = u + (int64_t)r * 4 * plane;
        ur[0] = t[r][0];
        ur[plane] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
        ur[2 * plane] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
        ur[3 * plane] = t[r][2];
    }
}

// Vectorized over ci as weights_f4 (below): a SAM step transforms every 3x3
// filter twice, and the scalar loop was 1.7% of it.
static void weights_f2(const float *w, int Co, int Ci, bool flip, float *U) {
    int64_t plane = (int64_t)Co * Ci;
    int64_t sci = flip ? (int64_t)Co * 9 : 9, sco = flip ? 9 : (int64_t)Ci * 9;
    int64_t off = flip ? 8 : 0;
    int rs = flip ? -3 : 3, cs = flip ? -1 : 1;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float *u0 = U + (int64_t)co * Ci;
        const float *wc = w + co * sco + off;
#pragma omp simd
        for (int ci = 0; ci < Ci; ci++) filter_f2(wc + ci * sci, rs, cs, u0 + ci, plane);
    }
}

// Vectorized over ci: the 36 stores of each filter go to 36 planes a quarter
// megabyte apart, so a loop over ci keeps every plane's writes contiguous.
// G (6x3) = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
//            1/24 -1/12 1/6; 0 0 1] on a filter column or row.
#define G4(a, b, c, o0, o1, o2, o3, o4, o5)                    \
    do {                                                       \
        float s_ = (a) + (c), p_ = (a) * (1.0f / 24) + (c) * (1.0f / 6), \
              q_ = (b) * (1.0f / 12);                          \
        o0 = 0.25f * (a);                                      \
        o1 = -(s_ + (b)) * (1.0f / 6);                         \
        o2 = -(s_ - (b)) * (1.0f / 6);                         \
        o3 = p_ + q_;                                          \
        o4 = p_ - q_;                                          \
        o5 = (c);                                              \
    } while (0)

// One filter g (row-major 3x3, element (r, c) at gp[r * rs + c * cs]) to its
// 36 transformed values u[e * plane], e = 6 k + l.
static inline void filter_f4(const float *gp, int rs, int cs, float *u, int64_t plane) {
    float t[6][3];
    for (int c = 0; c < 3; c++)   // t = G g, column by column
        G4(gp[c * cs], gp[rs + c * cs], gp[2 * rs + c * cs], t[0][c], t[1][c], t[2][c], t[3][c],
           t[4][c], t[5][c]);
    for (int k = 0; k < 6; k++) {   // U = t G^T, row by row
        float *uk = u + 6 * k * plane;
        G4(t[k][0], t[k][1], t[k][2], uk[0], uk[plane], uk[2 * plane], uk[3 * plane],
           uk[4 * plane], uk[5 * plane]);
    }
}

// Vectorized over ci: the 36 stores of each filter go to 36 planes a quarter
// megabyte apart, so a loop over ci keeps every plane's writes contiguous.
static void weights_f4(const float *w, int Co, int Ci, bool flip, float *U) {
    int64_t plane = (int64_t)Co * Ci;
    // Runtime strides for both layouts: the loads become gathers either way
    // (gcc does not vectorize the stride-9 groups of the plain layout).
    int64_t sci = flip ? (int64_t)Co * 9 : 9, sco = flip ? 9 : (int64_t)Ci * 9;
    int64_t off = flip ? 8 : 0;
    int rs = flip ? -3 : 3, cs = flip ? -1 : 1;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float *u0 = U + (int64_t)co * Ci;
        const float *wc = w + co * sco + off;
#pragma omp simd
        for (int ci = 0; ci < Ci; ci++) filter_f4(wc + ci * sci, rs, cs, u0 + ci, plane);
    }
}

// ---------------------------------------------------------------------------
// Input transform: V[e][ci][n] = (B^T d B)[e] for the a x a input patch d of
// tile n of the chunk of nr tile rows starting at R0 (n = r * tw + j).

// rows[k][q] = x[ci][m*ti - p + k][q - p], zero outside (q < WP). pre (or
// NULL): {k, o} of this channel, inside values become x * k + o (the fused
// eval-mode BatchNorm before the conv; the padding stays 0 as after it).
static void load_rows(const float *xp, int H, int W, int p, int y0, int a, int WP,
                      const float *pre, float *rows) {
    for (int k = 0; k < a; k++) {
        float *d = rows + (int64_t)k * WP;
        int ih = y0 + k;
        if (ih < 0 || ih >= H) {
            memset(d, 0, (size_t)WP * sizeof(float));
            continue;
        }
        int hi = W + p < WP ? W + p : WP;
        for (int q = 0; q < p && q < WP; q++) d[q] = 0;
        if (hi > p) memcpy(d + p, xp + (int64_t)ih * W, (size_t)(hi - p) * sizeof(float));
        if (pre && hi > p) {
            const float k = pre[0], o = pre[1];
            float *v = d + p;
#pragma omp simd
            for (int q = 0; q < hi - p; q++) v[q] = v[q] * k + o;
        }
        for (int q = hi > p ? hi : p; q < WP; q++) d[q] = 0;
    }
}

static void input_f2(const float *x, int Ci, int H, int W, int p, const wino_plan *P, int64_t R0,
                     int nr, const float *pre_k, const float *pre_o, float *V) {
    int tw = P->tw, WP = 2 * tw + 2, nn = nr * tw;
    int64_t pe = (int64_t)Ci * nn, HW = (int64_t)H * W;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < Ci; ci++) {
        float d[4 * WP], u[4][WP];
        float pre[2] = {pre_k ? pre_k[ci] : 1.0f, pre_k ? pre_o[ci] : 0.0f};
        for (int r = 0; r < nr; r++) {
            int64_t R = R0 + r;
            int b = (int)(R / P->th), ti = (int)(R % P->th);
            load_rows(x + ((int64_t)b * Ci + ci) * HW, H, W, p, 2 * ti - p, 4, WP,
                      pre_k ? pre : NULL, d);
            const float *d0 = d, *d1 = d + WP, *d2 = d + 2 * WP, *d3 = d + 3 * WP;
            for (int q = 0; q < WP; q++)   // B^T down the columns
                BT2(d0[q], d1[q], d2[q], d3[q], u[0][q], u[1][q], u[2][q], u[3][q]);
            float *v = V + (int64_t)ci * nn + (int64_t)r * tw;
            for (int k = 0; k < 4; k++) {
                float *v0 = v + (4 * k) * pe, *v1 = v0 + pe, *v2 = v1 + pe, *v3 = v2 + pe;
                const float *uk = u[k];
                for (int j = 0; j < tw; j++)
                    BT2(uk[2 * j], uk[2 * j + 1], uk[2 * j + 2], uk[2 * j + 3], v0[j], v1[j], v2[j],
                        v3[j]);
            }
        }
    }
}

// F(4x4) transforms work on blocks of up to SUB_TILES tiles (whole tile rows)
// laid out [k][c][n]: element (k, c) of the 6x6 input patch (or of the 4x4
// output) of tile n. Gathering the patches is the only strided step; both
// 1-D passes of the transform are then element-wise over n with long
// unit-stride vectors, whatever the width (14x14 layers have 4 tiles a row).
#define SUB_TILES 128

// dst[c * ds + j] = src[4 j + c], c < 4, j < n: the four phases of a row.
static inline void split4(const float *restrict src, int n, float *restrict dst, int ds) {
    float *p0 = dst, *p1 = dst + ds, *p2 = dst + 2 * ds, *p3 = dst + 3 * ds;
    for (int j = 0; j < n; j++) {
        p0[j] = src[4 * j];
        p1[j] = src[4 * j + 1];
        p2[j] = src[4 * j + 2];
        p3[j] = src[4 * j + 3];
    }
}

// Inverse of split4: dst[4 j + c] = src[c * ds + j] + bias.
static inline void merge4(const float *restrict src, int ds, int n, float bias,
                          float *restrict dst) {
    const float *p0 = src, *p1 = src + ds, *p2 = src + 2 * ds, *p3 = src + 3 * ds;
    for (int j = 0; j < n; j++) {
        dst[4 * j] = p0[j] + bias;
        dst[4 * j + 1] = p1[j] + bias;
        dst[4 * j + 2] = p2[j] + bias;
        dst[4 * j + 3] = p3[j] + bias;
    }
}

static int sub_rows(int tw) { return SUB_TILES / tw > 0 ? SUB_TILES / tw : 1; }

static void input_f4(const float *x, int Ci, int H, int W, int p, const wino_plan *P, int64_t R0,
                     int nr, const float *pre_k, const float *pre_o, float *V) {
    int tw = P->tw, WP = 4 * tw + 4, nn = nr * tw;
    int rb = sub_rows(tw), ns = rb * tw;   // rows and tiles of a block
    int64_t pe = (int64_t)Ci * nn, HW = (int64_t)H * W;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < Ci; ci++) {
        float row[WP], D[36 * ns];   // D[(6 k + c) * ns + n]
        float pre[2] = {pre_k ? pre_k[ci] : 1.0f, pre_k ? pre_o[ci] : 0.0f};
        for (int r0 = 0; r0 < nr; r0 += rb) {
            int nrb = nr - r0 < rb ? nr - r0 : rb, nb = nrb * tw;
            for (int rr = 0; rr < nrb; rr++) {   // gather the 6x6 patches
                int64_t R = R0 + r0 + rr;
                int b = (int)(R / P->th), ti = (int)(R % P->th);
                const float *xp = x + ((int64_t)b * Ci + ci) * HW;
                for (int k = 0; k < 6; k++) {
                    load_rows(xp, H, W, p, 4 * ti - p + k, 1, WP, pre_k ? pre : NULL, row);
                    float *d = D + 6 * k * ns + rr * tw;
                    split4(row, tw, d, ns);   // patch columns 0-3
                    float *d4 = d + 4 * ns, *d5 = d + 5 * ns;
                    for (int j = 0; j < tw - 1; j++) {   // columns 4-5: next tile's 0-1
                        d4[j] = d[j + 1];
                        d5[j] = d[ns + j + 1];
                    }
                    d4[tw - 1] = row[4 * tw];
                    d5[tw - 1] = row[4 * tw + 1];
                }
            }
            for (int c = 0; c < 6; c++) {   // B^T down the patch columns, in place
                float *d0 = D + c * ns, *d1 = d0 + 6 * ns, *d2 = d1 + 6 * ns, *d3 = d2 + 6 * ns,
                      *d4 = d3 + 6 * ns, *d5 = d4 + 6 * ns;
#pragma omp simd
                for (int n = 0; n < nb; n++) {
                    float o0, o1, o2, o3, o4, o5;
                    BT4(d0[n], d1[n], d2[n], d3[n], d4[n], d5[n], o0, o1, o2, o3, o4, o5);
                    d0[n] = o0;
                    d1[n] = o1;
                    d2[n] = o2;
                    d3[n] = o3;
                    d4[n] = o4;
                    d5[n] = o5;
                }
            }
            float *v = V + (int64_t)ci * nn + (int64_t)r0 * tw;
            for (int k = 0; k < 6; k++) {   // B along the patch rows, into V
                const float *u0 = D + 6 * k * ns, *u1 = u0 + ns, *u2 = u1 + ns, *u3 = u2 + ns,
                            *u4 = u3 + ns, *u5 = u4 + ns;
                float *restrict v0 = v + (6 * k) * pe, *restrict v1 = v0 + pe,
                                *restrict v2 = v1 + pe, *restrict v3 = v2 + pe,
                                *restrict v4 = v3 + pe, *restrict v5 = v4 + pe;
#pragma omp simd
                for (int n = 0; n < nb; n++)
                    BT4(u0[n], u1[n], u2[n], u3[n], u4[n], u5[n], v0[n], v1[n], v2[n], v3[n],
                        v4[n], v5[n]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Output transform: y tile = A^T m A (+ bias), written (or added) into y.

// epi (or NULL): the fused epilogue of channel co on each stored row; the
// residual's rows are at the same offset (off) from epi->res as y's rows from y.
static void store_rows(const float *o, int OW, int rows, int Wo, bool accumulate, float *yr0,
                       const conv_epi *epi, int co, int64_t off) {
    for (int k = 0; k < rows; k++) {
        float *yr = yr0 + (int64_t)k * Wo;
        const float *ok = o + (int64_t)k * OW;
        if (accumulate)
            for (int q = 0; q < Wo; q++) yr[q] += ok[q];
        else
            memcpy(yr, ok, (size_t)Wo * sizeof(float));
        if (epi)
            conv_epi_run(epi, co, yr, epi->res ? epi->res + off + (int64_t)k * Wo : NULL, Wo);
    }
}

static void output_f2(const float *M, int Co, int Ho, int Wo, const wino_plan *P, int64_t R0,
                      int nr, const float *bias, bool accumulate, float *y,
                      const conv_epi *epi) {
    int tw = P->tw, nn = nr * tw, OW = 2 * tw;
    int64_t pm = (int64_t)Co * nn, HWo = (int64_t)Ho * Wo;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float a[2][4][tw], o[2 * OW];
        float bv = bias ? bias[co] : 0.0f;
        for (int r = 0; r < nr; r++) {
            int64_t R = R0 + r;
            int b = (int)(R / P->th), ti = (int)(R % P->th);
            const float *m = M + (int64_t)co * nn + (int64_t)r * tw;
            for (int c = 0; c < 4; c++) {   // A^T along the rows
                const float *m0 = m + c * pm, *m1 = m + (4 + c) * pm, *m2 = m + (8 + c) * pm,
                            *m3 = m + (12 + c) * pm;
                for (int j = 0; j < tw; j++) {
                    a[0][c][j] = m0[j] + m1[j] + m2[j];
                    a[1][c][j] = m1[j] - m2[j] - m3[j];
                }
            }
            for (int k = 0; k < 2; k++)   // A along the columns
                for (int j = 0; j < tw; j++) {
                    o[k * OW + 2 * j] = a[k][0][j] + a[k][1][j] + a[k][2][j] + bv;
                    o[k * OW + 2 * j + 1] = a[k][1][j] - a[k][2][j] - a[k][3][j] + bv;
                }
            int rows = Ho - 2 * ti < 2 ? Ho - 2 * ti : 2;
            int64_t off = ((int64_t)b * Co + co) * HWo + (int64_t)2 * ti * Wo;
            store_rows(o, OW, rows, Wo, accumulate, y + off, epi, co, off);
        }
    }
}

static void output_f4(const float *M, int Co, int Ho, int Wo, const wino_plan *P, int64_t R0,
                      int nr, const float *bias, bool accumulate, float *y,
                      const conv_epi *epi) {
    int tw = P->tw, nn = nr * tw, OW = 4 * tw;
    int rb = sub_rows(tw), ns = rb * tw;
    int64_t pm = (int64_t)Co * nn, HWo = (int64_t)Ho * Wo;
    // The epilogue split: affine and PReLU on the product block, the residual
    // (position-dependent) on the stored rows.
    conv_epi ea = {0}, er = {0};
    const conv_epi *epi_o = NULL, *epi_r = NULL;
    if (epi && (epi->k || epi->slope)) {
        ea = (conv_epi){.k = epi->k, .o = epi->o, .slope = epi->slope};
        epi_o = &ea;
    }
    if (epi && epi->res) {
        er = (conv_epi){.res = epi->res};
        epi_r = &er;
    }
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float T[24 * ns], O[16 * ns], o[OW];   // T[(6 i + l) * ns + n], O[(4 i + c) * ns + n]
        float bv = bias ? bias[co] : 0.0f;
        for (int r0 = 0; r0 < nr; r0 += rb) {
            int nrb = nr - r0 < rb ? nr - r0 : rb, nb = nrb * tw;
            const float *m = M + (int64_t)co * nn + (int64_t)r0 * tw;
            for (int l = 0; l < 6; l++) {   // A^T down each column l of the products
                const float *m0 = m + l * pm, *m1 = m0 + 6 * pm, *m2 = m1 + 6 * pm,
                            *m3 = m2 + 6 * pm, *m4 = m3 + 6 * pm, *m5 = m4 + 6 * pm;
                float *restrict t0 = T + l * ns, *restrict t1 = t0 + 6 * ns,
                                *restrict t2 = t1 + 6 * ns, *restrict t3 = t2 + 6 * ns;
#pragma omp simd
                for (int n = 0; n < nb; n++)
                    AT4(m0[n], m1[n], m2[n], m3[n], m4[n], m5[n], t0[n], t1[n], t2[n], t3[n]);
            }
            for (int i = 0; i < 4; i++) {   // A along each row i
                const float *a0 = T + 6 * i * ns, *a1 = a0 + ns, *a2 = a1 + ns, *a3 = a2 + ns,
                            *a4 = a3 + ns, *a5 = a4 + ns;
                float *restrict o0 = O + 4 * i * ns, *restrict o1 = o0 + ns,
                                *restrict o2 = o1 + ns, *restrict o3 = o2 + ns;
#pragma omp simd
                for (int n = 0; n < nb; n++)
                    AT4(a0[n], a1[n], a2[n], a3[n], a4[n], a5[n], o0[n], o1[n], o2[n], o3[n]);
            }
            float bo = bv;
            if (epi_o) {
                // bias, BatchNorm and PReLU of the fused epilogue on the whole
                // block (long unit-stride runs; the edge tiles' extra outputs
                // are never stored), the residual while scattering below.
                for (int q = 0; q < 16; q++) {
                    float *oq = O + q * ns;
                    for (int n = 0; n < nb; n++) oq[n] = oq[n] + bv;
                    conv_epi_run(&epi_o[0], co, oq, NULL, nb);
                }
                bo = 0.0f;
            }
            for (int rr = 0; rr < nrb; rr++) {   // scatter the 4x4 tiles into y rows
                int64_t R = R0 + r0 + rr;
                int b = (int)(R / P->th), ti = (int)(R % P->th);
                int rows = Ho - 4 * ti < 4 ? Ho - 4 * ti : 4;
                int64_t off = ((int64_t)b * Co + co) * HWo + (int64_t)4 * ti * Wo;
                for (int i = 0; i < rows; i++) {
                    merge4(O + 4 * i * ns + rr * tw, ns, tw, bo, o);
                    store_rows(o, OW, 1, Wo, accumulate, y + off + (int64_t)i * Wo, epi_r, co,
                               off + (int64_t)i * Wo);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Forward / dx driver.

void wino_conv(int m, int B, int Ci, int H, int W, int Co, int p, int Ho, int Wo,
               const float *w, bool flip, const float *bias, bool accumulate, const float *x,
               float *y, const float *pre_k, const float *pre_o, const conv_epi *epi) {
    AG_ASSERT(m == 2 || m == 4, "winograd tile %d", m);
    AG_ASSERT(!(epi && accumulate), "winograd: a fused epilogue on an accumulated output");
    AG_ASSERT((pre_k == NULL) == (pre_o == NULL), "winograd: pre_k and pre_o go together");
    wino_plan P = plan_make(m, B, Ci, Co, Ho, Wo);
    int ne = P.a * P.a;
    size_t nU = pad16((size_t)ne * Co * Ci), nV = pad16((size_t)ne * Ci * P.rc * P.tw);
    float *U = conv_scratch(nU + nV + (size_t)ne * Co * P.rc * P.tw);
    float *V = U + nU, *M = V + nV;
    if (m == 2)
        weights_f2(w, Co, Ci, flip, U);
    else
        weights_f4(w, Co, Ci, flip, U);
    for (int64_t R0 = 0; R0 < P.nrows; R0 += P.rc) {
        int nr = (int)(P.nrows - R0 < P.rc ? P.nrows - R0 : P.rc);
        int nn = nr * P.tw;
        int64_t pe = (int64_t)Ci * nn, pm = (int64_t)Co * nn;
        if (m == 2)
            input_f2(x, Ci, H, W, p, &P, R0, nr, pre_k, pre_o, V);
        else
            input_f4(x, Ci, H, W, p, &P, R0, nr, pre_k, pre_o, V);
        // M[e] [Co, nn] = U[e] [Co, Ci] V[e] [Ci, nn]: single-threaded sgemms.
#pragma omp parallel for schedule(static)
        for (int e = 0; e < ne; e++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, nn, Ci, 1.0f,
                        U + (int64_t)e * Co * Ci, Ci, V + e * pe, nn, 0.0f, M + e * pm, nn);
        if (m == 2)
            output_f2(M, Co, Ho, Wo, &P, R0, nr, bias, accumulate, y, epi);
        else
            output_f4(M, Co, Ho, Wo, &P, R0, nr, bias, accumulate, y, epi);
    }
}

// ---------------------------------------------------------------------------
// dw: Y[e][co][n] = (A dY A^T)[e] of the zero-padded m x m output-gradient
// tile, Mw[e] = sum over tiles Y[e] V[e]^T, dw += G^T Mw G.

static void dy_rows(const float *dp, int Ho, int Wo, int y0, int m, int OW, float *g) {
    for (int k = 0; k < m; k++) {
        float *gk = g + (int64_t)k * OW;
        if (y0 + k < Ho) {
            memcpy(gk, dp + (int64_t)(y0 + k) * Wo, (size_t)Wo * sizeof(float));
            for (int q = Wo; q < OW; q++) gk[q] = 0;
        } else {
            memset(gk, 0, (size_t)OW * sizeof(float));
        }
    }
}

static void dyt_f2(const float *dy, int Co, int Ho, int Wo, const wino_plan *P, int64_t R0,
                   int nr, float *Y) {
    int tw = P->tw, nn = nr * tw, OW = 2 * tw;
    int64_t pm = (int64_t)Co * nn, HWo = (int64_t)Ho * Wo;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float g[2 * OW], t[4][OW];
        for (int r = 0; r < nr; r++) {
            int64_t R = R0 + r;
            int b = (int)(R / P->th), ti = (int)(R % P->th);
            dy_rows(dy + ((int64_t)b * Co + co) * HWo, Ho, Wo, 2 * ti, 2, OW, g);
            const float *g0 = g, *g1 = g + OW;
            for (int q = 0; q < OW; q++) {   // A along the rows
                t[0][q] = g0[q];
                t[1][q] = g0[q] + g1[q];
                t[2][q] = g0[q] - g1[q];
                t[3][q] = -g1[q];
            }
            float *yv = Y + (int64_t)co * nn + (int64_t)r * tw;
            for (int k = 0; k < 4; k++) {   // A^T along the columns
                float *y0 = yv + (4 * k) * pm, *y1 = y0 + pm, *y2 = y1 + pm, *y3 = y2 + pm;
                for (int j = 0; j < tw; j++) {
                    float a = t[k][2 * j], c = t[k][2 * j + 1];
                    y0[j] = a;
                    y1[j] = a + c;
                    y2[j] = a - c;
                    y3[j] = -c;
                }
            }
        }
    }
}

static void dyt_f4(const float *dy, int Co, int Ho, int Wo, const wino_plan *P, int64_t R0,
                   int nr, float *Y) {
    int tw = P->tw, nn = nr * tw, OW = 4 * tw;
    int rb = sub_rows(tw), ns = rb * tw;
    int64_t pm = (int64_t)Co * nn, HWo = (int64_t)Ho * Wo;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++) {
        float g[OW], D[16 * ns], T[24 * ns];   // D[(4 k + c) * ns + n], T[(4 k + c) * ns + n]
        for (int r0 = 0; r0 < nr; r0 += rb) {
            int nrb = nr - r0 < rb ? nr - r0 : rb, nb = nrb * tw;
            for (int rr = 0; rr < nrb; rr++) {   // gather the 4x4 tiles, zero-padded
                int64_t R = R0 + r0 + rr;
                int b = (int)(R / P->th), ti = (int)(R % P->th);
                const float *dp = dy + ((int64_t)b * Co + co) * HWo;
                for (int k = 0; k < 4; k++) {
                    dy_rows(dp, Ho, Wo, 4 * ti + k, 1, OW, g);
                    split4(g, tw, D + 4 * k * ns + rr * tw, ns);
                }
            }
            for (int c = 0; c < 4; c++) {   // A down the tile columns
                const float *g0 = D + c * ns, *g1 = g0 + 4 * ns, *g2 = g1 + 4 * ns,
                            *g3 = g2 + 4 * ns;
                float *restrict t0 = T + c * ns, *restrict t1 = t0 + 4 * ns,
                                *restrict t2 = t1 + 4 * ns, *restrict t3 = t2 + 4 * ns,
                                *restrict t4 = t3 + 4 * ns, *restrict t5 = t4 + 4 * ns;
#pragma omp simd
                for (int n = 0; n < nb; n++)
                    A4(g0[n], g1[n], g2[n], g3[n], t0[n], t1[n], t2[n], t3[n], t4[n], t5[n]);
            }
            float *yv = Y + (int64_t)co * nn + (int64_t)r0 * tw;
            for (int k = 0; k < 6; k++) {   // A along each row, into Y
                const float *s0 = T + 4 * k * ns, *s1 = s0 + ns, *s2 = s1 + ns, *s3 = s2 + ns;
                float *restrict y0 = yv + (6 * k) * pm, *restrict y1 = y0 + pm,
                                *restrict y2 = y1 + pm, *restrict y3 = y2 + pm,
                                *restrict y4 = y3 + pm, *restrict y5 = y4 + pm;
#pragma omp simd
                for (int n = 0; n < nb; n++)
                    A4(s0[n], s1[n], s2[n], s3[n], y0[n], y1[n], y2[n], y3[n], y4[n], y5[n]);
            }
        }
    }
}

static void dw_finish_f2(const float *Mw, int64_t plane, float *dw) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < plane; i++) {
        float m[4][4], t[3][4];
        for (int e = 0; e < 16; e++) m[e / 4][e % 4] = Mw[e * plane + i];
        for (int c = 0; c < 4; c++) {   // t = G^T m
            t[0][c] = m[0][c] + 0.5f * (m[1][c] + m[2][c]);
            t[1][c] = 0.5f * (m[1][c] - m[2][c]);
            t[2][c] = 0.5f * (m[1][c] + m[2][c]) + m[3][c];
        }
        float *d = dw + i * 9;   // i = co * Ci + ci
        for (int r = 0; r < 3; r++) {   // dw += t G
            d[r * 3 + 0] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
            d[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
            d[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
        }
    }
}

// Mw is overwritten: lane i reads element i of the 36 planes, then writes its
// 9 results to element i of planes 0-8 (vector stores), which are added to
// dw [i][9] afterwards.
static void dw_finish_f4(float *Mw, int64_t plane, float *dw) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < plane; i++) {
        float t[3][6];
        for (int c = 0; c < 6; c++) {   // t = G^T m, column by column
            const float *m = Mw + c * plane + i;
            float m0 = m[0], m1 = m[6 * plane], m2 = m[12 * plane], m3 = m[18 * plane],
                  m4 = m[24 * plane], m5 = m[30 * plane];
            float s12 = m1 + m2, t12 = m2 - m1, s34 = m3 + m4, t34 = m3 - m4;
            t[0][c] = 0.25f * m0 - s12 * (1.0f / 6) + s34 * (1.0f / 24);
            t[1][c] = t12 * (1.0f / 6) + t34 * (1.0f / 12);
            t[2][c] = -s12 * (1.0f / 6) + s34 * (1.0f / 6) + m5;
        }
        for (int r = 0; r < 3; r++) {   // t G
            float s12 = t[r][1] + t[r][2], t12 = t[r][2] - t[r][1], s34 = t[r][3] + t[r][4],
                  t34 = t[r][3] - t[r][4];
            float *o = Mw + 3 * r * plane + i;
            o[0] = 0.25f * t[r][0] - s12 * (1.0f / 6) + s34 * (1.0f / 24);
            o[plane] = t12 * (1.0f / 6) + t34 * (1.0f / 12);
            o[2 * plane] = -s12 * (1.0f / 6) + s34 * (1.0f / 6) + t[r][5];
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < plane; i++)
        for (int k = 0; k < 9; k++) dw[i * 9 + k] += Mw[k * plane + i];
}

void wino_dw(int m, int B, int Ci, int H, int W, int Co, int p, int Ho, int Wo, const float *x,
             const float *dy, float *dw) {
    AG_ASSERT(m == 2 || m == 4, "winograd tile %d", m);
    wino_plan P = plan_make(m, B, Ci, Co, Ho, Wo);
    int ne = P.a * P.a;
    size_t nM = pad16((size_t)ne * Co * Ci), nV = pad16((size_t)ne * Ci * P.rc * P.tw);
    float *Mw = conv_scratch(nM + nV + (size_t)ne * Co * P.rc * P.tw);
    float *V = Mw + nM, *Y = V + nV;
    for (int64_t R0 = 0; R0 < P.nrows; R0 += P.rc) {
        int nr = (int)(P.nrows - R0 < P.rc ? P.nrows - R0 : P.rc);
        int nn = nr * P.tw;
        int64_t pe = (int64_t)Ci * nn, pm = (int64_t)Co * nn;
        if (m == 2) {
            input_f2(x, Ci, H, W, p, &P, R0, nr, NULL, NULL, V);
            dyt_f2(dy, Co, Ho, Wo, &P, R0, nr, Y);
        } else {
            input_f4(x, Ci, H, W, p, &P, R0, nr, NULL, NULL, V);
            dyt_f4(dy, Co, Ho, Wo, &P, R0, nr, Y);
        }
#pragma omp parallel for schedule(static)
        for (int e = 0; e < ne; e++)   // Mw[e] [Co, Ci] (+)= Y[e] [Co, nn] V[e]^T [nn, Ci]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, Ci, nn, 1.0f, Y + e * pm, nn,
                        V + e * pe, nn, R0 == 0 ? 0.0f : 1.0f, Mw + (int64_t)e * Co * Ci, Ci);
    }
    if (m == 2)
        dw_finish_f2(Mw, (int64_t)Co * Ci, dw);
    else
        dw_finish_f4(Mw, (int64_t)Co * Ci, dw);
}
