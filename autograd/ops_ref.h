// Raw-pointer kernels behind op_matmul / op_linear / op_conv*, and the naive
// reference versions the tests compare them against (ops_ref.c, linked into
// the tests only). The fast kernels are also what bench/bench_conv.c times
// (no tape, no arena).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- matmul ----
// C[M,N] = op(A) op(B) (overwrites C). A is [M,K] (or [K,M] with ta), B is
// [K,N] (or [N,K] with tb), all contiguous. Accumulates in double.
void matmul_naive(bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                  float *C);

// ---- attention (op_attention's layout) ----
// o [B, Nq, C] = per head softmax(scale q k^T) v, q rows q0.. of [B, Tq, C],
// kv [B, N, 2C]; in double.
void attention_naive(int B, int Tq, int q0, int Nq, int N, int C, int H, float scale,
                     const float *q, const float *kv, float *o);

// ---- conv2d ----
typedef struct conv2d_geom {
    int B, Cin, H, W;        // input  [B, Cin, H, W]
    int Cout, KH, KW;        // weight [Cout, Cin/groups, KH, KW]
    int stride, pad, groups;
    int Ho, Wo;              // output [B, Cout, Ho, Wo]
} conv2d_geom;

// Fills Ho/Wo and checks the shapes are consistent (AG_ASSERT).
conv2d_geom conv2d_make_geom(int B, int Cin, int H, int W, int Cout, int KH, int KW,
                             int stride, int pad, int groups);
int64_t conv2d_macs(const conv2d_geom *g);   // multiply-adds of one forward

// y = conv(x, w) + bias (bias may be NULL); y overwritten.
void conv2d_forward(const conv2d_geom *g, const float *x, const float *w, const float *bias,
                    float *y);
// The same for an output no gradient flows through (inference): 3x3 stride-1
// layers may take the larger Winograd tile (see wino_tile in ops_conv.c).
void conv2d_forward_inference(const conv2d_geom *g, const float *x, const float *w,
                              const float *bias, float *y);
// Accumulates (+=) into dx, dw, db; each may be NULL (not wanted).
void conv2d_backward(const conv2d_geom *g, const float *x, const float *w, const float *dy,
                     float *dx, float *dw, float *db);
// The same, except that with dx_store dx is overwritten (its old contents
// unread) when conv2d_dx_stores(g); otherwise dx_store must be false.
void conv2d_backward_into(const conv2d_geom *g, const float *x, const float *w,
                          const float *dy, float *dx, bool dx_store, float *dw, float *db);
// Whether conv2d_backward_into can overwrite dx (the Winograd dx path).
bool conv2d_dx_stores(const conv2d_geom *g);
void conv2d_naive_forward(const conv2d_geom *g, const float *x, const float *w,
                          const float *bias, float *y);
void conv2d_naive_backward(const conv2d_geom *g, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db);

// ---- conv-transpose1d ----
// x [B, Cin, L], w [Cin, Cout, k], y [B, Cout, (L-1)*stride + k]
void conv_transpose1d_forward(int B, int Cin, int L, int Cout, int k, int stride,
                              const float *x, const float *w, const float *bias, float *y);
void conv_transpose1d_backward(int B, int Cin, int L, int Cout, int k, int stride,
                               const float *x, const float *w, const float *dy, float *dx,
                               float *dw, float *db);
void conv_transpose1d_naive_forward(int B, int Cin, int L, int Cout, int k, int stride,
                                    const float *x, const float *w, const float *bias,
                                    float *y);
void conv_transpose1d_naive_backward(int B, int Cin, int L, int Cout, int k, int stride,
                                     const float *x, const float *w, const float *dy,
                                     float *dx, float *dw, float *db);

// Threading of the sgemm conv paths, for benchmarks: 0 auto (default), 1 spread
// samples over threads, 2 samples in turn with a threaded sgemm.
void conv_set_mode(int mode);
// Winograd for 3x3 stride-1 convolutions (default on; tests and benchmarks
// turn it off to reach the im2col path for the same shapes).
void conv_set_winograd(bool on);
// Winograd tile: 0 chosen per pass and shape (default: F(2x2) forward, F(4x4)
// dx and dw), 2 forces F(2x2, 3x3) everywhere, 4 F(4x4, 3x3).
void conv_set_winograd_tile(int m);

// ---- inference epilogue of a convolution (op_conv2d_fused) ----
// On a run of n outputs of channel co: y = y * k + o, then PReLU, then + res
// (each step only when its array is non-NULL; res points at the run's own
// elements). The expressions are those of bn_apply, prelu_row and op_add.
typedef struct conv_epi {
    const float *k, *o, *slope;   // [Cout] or NULL
    const float *res;             // [B, Cout, Ho, Wo] or NULL
} conv_epi;

static inline void conv_epi_run(const conv_epi *e, int co, float *restrict y,
                                const float *restrict res, int64_t n) {
    if (e->k) {
        const float k = e->k[co], o = e->o[co];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = y[j] * k + o;
    }
    if (e->slope) {
        const float a = e->slope[co];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float v = y[j], av = a * v;
            y[j] = v > 0 ? v : av;
        }
    }
    if (res) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = y[j] + res[j];
    }
}

// ---- conv_winograd.c (called by conv2d_forward / conv2d_backward) ----
// y (or y += when accumulate) = 3x3 stride-1 convolution of x [B, Ci, H, W]
// with padding p, output [B, Co, Ho, Wo], tile m (2 or 4). w is [Co, Ci, 3, 3],
// or with flip [Ci, Co, 3, 3] used rotated by 180 degrees and transposed (the
// dx convolution). bias [Co] or NULL.
// pre_k/pre_o [Ci] (or NULL): the input is read as x * pre_k + pre_o (the
// padding stays 0); epi (or NULL) runs on each output row (not with accumulate).
void wino_conv(int m, int B, int Ci, int H, int W, int Co, int p, int Ho, int Wo,
               const float *w, bool flip, const float *bias, bool accumulate, const float *x,
               float *y, const float *pre_k, const float *pre_o, const conv_epi *epi);
// dw [Co, Ci, 3, 3] += the weight gradient of that convolution for output
// gradient dy [B, Co, Ho, Wo].
void wino_dw(int m, int B, int Ci, int H, int W, int Co, int p, int Ho, int Wo, const float *x,
             const float *dy, float *dw);
// The conv kernels' shared scratch (64-byte aligned, grown on demand, valid
// until the next call).
float *conv_scratch(size_t floats);

// ---- the im2col lowering shared by ops_conv.c and ops_conv1d.c ----
static inline size_t conv_pad16(size_t n) { return (n + 15) & ~(size_t)15; }
// x [C, H, W] -> col [C*KH*KW, Ho*Wo]; conv_col2im_add: x += col2im(col).
void conv_im2col(const float *x, int C, int H, int W, int KH, int KW, int stride, int pad,
                 int Ho, int Wo, float *col);
void conv_col2im_add(const float *col, int C, int H, int W, int KH, int KW, int stride,
                     int pad, int Ho, int Wo, float *x);
// Whether a batch of B samples is split over the threads (single-threaded
// sgemm per sample) rather than threading each sgemm.
bool conv_batch_parallel(int B);
// db [C] += sum over b and the HW positions of dy [B, C, HW].
void conv_bias_backward(const float *dy, int B, int C, int64_t HW, float *db);
// Runs conv2d of geometry g and records its backward; the output has shape
// out_shape (conv1d passes [B, Cout, Wo]).
struct tensor;
struct tensor *conv2d_run(const char *name, const conv2d_geom *g, struct tensor *x,
                          struct tensor *w, struct tensor *bias, int ndim, const int *out_shape);

// Conv kernels keep one scratch buffer between calls (grown on demand, split
// per thread inside a call), so the conv ops are not reentrant: call them from
// one thread at a time (each call parallelizes itself with OpenMP). This frees
// the buffer (end of program, tests checking for leaks).
void ops_conv_release_scratch(void);
