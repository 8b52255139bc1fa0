// The naive reference kernels the tests compare the fast ones against (plain
// loops, double accumulation). Linked into the tests only, never into poster:
// the Makefile keeps this file out of libposter.a.
#include <math.h>
#include <stdlib.h>

#include "ops.h"
#include "ops_ref.h"

void matmul_naive(bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                  float *C) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(int64_t)k * M + i] : A[(int64_t)i * K + k];
                double b = tb ? B[(int64_t)j * K + k] : B[(int64_t)k * N + j];
                s += a * b;
            }
            C[(int64_t)i * N + j] = (float)s;
        }
}

// The reference: per item, plain loops in double (tests compare against it).
void attention_naive(int B, int Tq, int q0, int Nq, int N, int C, int H, float scale,
                     const float *q, const float *kv, float *o) {
    const int c = C / H;
    double *srow = malloc((size_t)N * sizeof(double));
    AG_ASSERT(srow != NULL, "out of memory");
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Nq; i++) {
                const float *qi = q + ((int64_t)b * Tq + q0 + i) * C + h * c;
                double m = -1e300, sum = 0;
                for (int j = 0; j < N; j++) {
                    const float *kj = kv + ((int64_t)b * N + j) * 2 * C + h * c;
                    double d = 0;
                    for (int t = 0; t < c; t++) d += (double)qi[t] * kj[t];
                    srow[j] = d * scale;
                    if (srow[j] > m) m = srow[j];
                }
                for (int j = 0; j < N; j++) sum += (srow[j] = exp(srow[j] - m));
                for (int t = 0; t < c; t++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++)
                        acc += srow[j] / sum * kv[((int64_t)b * N + j) * 2 * C + C + h * c + t];
                    o[((int64_t)b * Nq + i) * C + h * c + t] = (float)acc;
                }
            }
    free(srow);
}

void conv2d_naive_forward(const conv2d_geom *g, const float *x, const float *w,
                          const float *bias, float *y) {
    int Cg = g->Cin / g->groups, Cog = g->Cout / g->groups;
    for (int b = 0; b < g->B; b++)
        for (int co = 0; co < g->Cout; co++) {
            int gi = co / Cog;
            for (int oh = 0; oh < g->Ho; oh++)
                for (int ow = 0; ow < g->Wo; ow++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < Cg; ci++)
                        for (int kh = 0; kh < g->KH; kh++)
                            for (int kw = 0; kw < g->KW; kw++) {
                                int ih = oh * g->stride - g->pad + kh;
                                int iw = ow * g->stride - g->pad + kw;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                s += (double)x[(((int64_t)b * g->Cin + gi * Cg + ci) * g->H + ih) *
                                                   g->W + iw] *
                                     w[(((int64_t)co * Cg + ci) * g->KH + kh) * g->KW + kw];
                            }
                    y[(((int64_t)b * g->Cout + co) * g->Ho + oh) * g->Wo + ow] = (float)s;
                }
        }
}

void conv2d_naive_backward(const conv2d_geom *g, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db) {
    int Cg = g->Cin / g->groups, Cog = g->Cout / g->groups;
    for (int b = 0; b < g->B; b++)
        for (int co = 0; co < g->Cout; co++) {
            int gi = co / Cog;
            for (int oh = 0; oh < g->Ho; oh++)
                for (int ow = 0; ow < g->Wo; ow++) {
                    float d = dy[(((int64_t)b * g->Cout + co) * g->Ho + oh) * g->Wo + ow];
                    if (db) db[co] += d;
                    for (int ci = 0; ci < Cg; ci++)
                        for (int kh = 0; kh < g->KH; kh++)
                            for (int kw = 0; kw < g->KW; kw++) {
                                int ih = oh * g->stride - g->pad + kh;
                                int iw = ow * g->stride - g->pad + kw;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                int64_t xi =
                                    (((int64_t)b * g->Cin + gi * Cg + ci) * g->H + ih) * g->W + iw;
                                int64_t wi = (((int64_t)co * Cg + ci) * g->KH + kh) * g->KW + kw;
                                if (dx) dx[xi] += d * w[wi];
                                if (dw) dw[wi] += d * x[xi];
                            }
                }
        }
}

void conv_transpose1d_naive_forward(int B, int Cin, int L, int Cout, int k, int stride,
                                    const float *x, const float *w, const float *bias,
                                    float *y) {
    int Lout = (L - 1) * stride + k;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Cout; co++)
            for (int o = 0; o < Lout; o++) {
                double s = bias ? bias[co] : 0.0;
                for (int ci = 0; ci < Cin; ci++)
                    for (int j = 0; j < k; j++) {
                        int d = o - j;
                        if (d < 0 || d % stride || d / stride >= L) continue;
                        s += (double)x[((int64_t)b * Cin + ci) * L + d / stride] *
                             w[((int64_t)ci * Cout + co) * k + j];
                    }
                y[((int64_t)b * Cout + co) * Lout + o] = (float)s;
            }
}

void conv_transpose1d_naive_backward(int B, int Cin, int L, int Cout, int k, int stride,
                                     const float *x, const float *w, const float *dy,
                                     float *dx, float *dw, float *db) {
    int Lout = (L - 1) * stride + k;
    for (int b = 0; b < B; b++)
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < L; t++)
                for (int co = 0; co < Cout; co++)
                    for (int j = 0; j < k; j++) {
                        float d = dy[((int64_t)b * Cout + co) * Lout + t * stride + j];
                        int64_t wi = ((int64_t)ci * Cout + co) * k + j;
                        int64_t xi = ((int64_t)b * Cin + ci) * L + t;
                        if (dx) dx[xi] += d * w[wi];
                        if (dw) dw[wi] += d * x[xi];
                    }
    if (db)
        for (int b = 0; b < B; b++)
            for (int co = 0; co < Cout; co++)
                for (int o = 0; o < Lout; o++) db[co] += dy[((int64_t)b * Cout + co) * Lout + o];
}
