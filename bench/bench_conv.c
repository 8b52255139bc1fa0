// conv2d forward and backward (dx + dw) on the IR-50 trunk shapes at batch 16,
// in GFLOP/s next to a large cblas_sgemm measured in the same run, for both
// threading regimes (samples spread over threads / threaded sgemm per sample).
// bench/bench_conv_torch.py times the same convs in PyTorch.
//
// Usage: bench_conv [reps] [batch] [tile]   (default 2 timed reps after a warm-up,
// batch 16; tile 0 lets conv2d choose the Winograd tile per shape, 2 or 4
// forces F(2x2, 3x3) or F(4x4, 3x3), -1 turns Winograd off: im2col + sgemm)
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/ops_ref.h"

typedef struct shape {
    const char *name;
    int cin, hw, cout, k, stride;
    int count;   // how many times the IR-50 stages 1-3 run this conv per image
} shape;

// Input 112x112; the first unit of each stage has stride 2 on its second conv.
static const shape k_shapes[] = {
    {"stem 3->64 112", 3, 112, 64, 3, 1, 1},
    {"s1u0 64->64 112", 64, 112, 64, 3, 1, 1},
    {"s1u0 64->64 112 s2", 64, 112, 64, 3, 2, 1},
    {"64->64 56", 64, 56, 64, 3, 1, 4},
    {"s2u0 64->128 56", 64, 56, 128, 3, 1, 1},
    {"s2u0 128->128 56 s2", 128, 56, 128, 3, 2, 1},
    {"sc 1x1 64->128 56 s2", 64, 56, 128, 1, 2, 1},
    {"128->128 28", 128, 28, 128, 3, 1, 6},
    {"s3u0 128->256 28", 128, 28, 256, 3, 1, 1},
    {"s3u0 256->256 28 s2", 256, 28, 256, 3, 2, 1},
    {"sc 1x1 128->256 28 s2", 128, 28, 256, 1, 2, 1},
    {"256->256 14", 256, 14, 256, 3, 1, 26},
};
#define N_SHAPES (int)(sizeof k_shapes / sizeof *k_shapes)

static float *rand_buf(int64_t n, unsigned seed) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 8) * (1.0 / 16777216.0)) * 2 - 1;
    }
    return p;
}

static double sgemm_gflops(int n, int reps) {
    float *a = rand_buf((int64_t)n * n, 1), *b = rand_buf((int64_t)n * n, 2);
    float *c = malloc(sizeof(float) * (size_t)n * n);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t = omp_get_wtime();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        t = omp_get_wtime() - t;
        if (r > 0 && t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 2;
    int batch = argc > 2 ? atoi(argv[2]) : 16;
    int tile = argc > 3 ? atoi(argv[3]) : 0;
    if (reps < 1 || batch < 1 || (tile != 0 && tile != 2 && tile != 4 && tile != -1)) {
        fprintf(stderr, "usage: %s [reps >= 1] [batch >= 1] [tile: 0 auto, 2, 4, -1 off]\n",
                argv[0]);
        return 2;
    }
    conv_set_winograd(tile >= 0);
    conv_set_winograd_tile(tile > 0 ? tile : 0);
    ops_set_threads(0);
    double peak = sgemm_gflops(2048, 2);
    printf("threads %d, batch %d, winograd tile %s; sgemm 2048^3: %.1f GFLOP/s\n", ops_threads(),
           batch, tile < 0 ? "off" : tile == 0 ? "auto" : tile == 2 ? "2x2" : "4x4", peak);
    printf("%-24s %5s | %9s %7s %9s %7s | %9s %7s %9s %7s\n", "conv (x count/img)", "GMAC",
           "fwd ms", "GF/s", "bwd ms", "GF/s", "fwd ms", "GF/s", "bwd ms", "GF/s");
    printf("%-24s %5s | %-35s | %-35s\n", "", "", "mode 1: samples over threads",
           "mode 2: threaded sgemm");
    double total[3][2] = {{0}};   // per mode: trunk fwd, bwd seconds per batch
    for (int s = 0; s < N_SHAPES; s++) {
        const shape *sh = &k_shapes[s];
        conv2d_geom g = conv2d_make_geom(batch, sh->cin, sh->hw, sh->hw, sh->cout, sh->k, sh->k,
                                         sh->stride, sh->k / 2, 1);
        int64_t nx = (int64_t)g.B * g.Cin * g.H * g.W, nw = (int64_t)g.Cout * g.Cin * g.KH * g.KW;
        int64_t ny = (int64_t)g.B * g.Cout * g.Ho * g.Wo;
        float *x = rand_buf(nx, 3), *w = rand_buf(nw, 4), *dy = rand_buf(ny, 5);
        float *y = malloc(sizeof(float) * ny), *dx = calloc(nx, sizeof(float));
        float *dw = calloc(nw, sizeof(float));
        double macs = (double)conv2d_macs(&g);
        printf("%-18s (x%2d) %5.2f |", sh->name, sh->count, macs * 1e-9);
        for (int mode = 1; mode <= 2; mode++) {
            conv_set_mode(mode);
            double bf = 1e30, bb = 1e30;
            for (int r = 0; r <= reps; r++) {
                double t0 = omp_get_wtime();
                conv2d_forward(&g, x, w, NULL, y);
                double t1 = omp_get_wtime();
                conv2d_backward(&g, x, w, dy, dx, dw, NULL);
                double t2 = omp_get_wtime();
                if (r > 0) {
                    if (t1 - t0 < bf) bf = t1 - t0;
                    if (t2 - t1 < bb) bb = t2 - t1;
                }
            }
            // The stem's dx is never needed (its input is the image).
            printf(" %9.1f %7.1f %9.1f %7.1f |", bf * 1e3, 2 * macs / bf * 1e-9, bb * 1e3,
                   4 * macs / bb * 1e-9);
            total[mode][0] += bf * sh->count;
            total[mode][1] += bb * sh->count;
        }
        printf("\n");
        fflush(stdout);
        free(x); free(w); free(dy); free(y); free(dx); free(dw);
    }
    conv_set_mode(0);
    for (int mode = 1; mode <= 2; mode++)
        printf("IR-50 stages 1-3 convs, batch %d, mode %d: forward %.2f s, backward %.2f s\n",
               batch, mode, total[mode][0], total[mode][1]);
    ops_conv_release_scratch();
    return 0;
}
