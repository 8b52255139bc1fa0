// Every differentiable op POSTER needs. Each op allocates its output in the
// buffer pool, and when ag_needs_grad() records a tape entry whose backward
// accumulates (+=) into the inputs that require grad; the entry names the
// tensors its backward reads (ag_record_need), so the rest can be freed early.
// Math lives in named <op>_forward / <op>_backward pairs next to the op.
//
// Files: ops_basic.c (elementwise, broadcasting, activations, shape ops),
//        ops_norm.c (softmax, layer norm, batch norm, losses, drop path),
//        ops_matmul.c (matmul, linear), ops_conv.c (conv2d, conv1d, conv-transpose1d).
#pragma once
#include "tensor.h"

// ---- threads ----
// Sets OpenMP and OpenBLAS thread counts together (0: all cores). OpenBLAS is the
// OpenMP build, so sgemm called inside an OpenMP region runs single-threaded.
void ops_set_threads(int n);
int ops_threads(void);

// ---- elementwise with broadcasting (numpy rules, right-aligned) ----
// Covers per-channel [1,C,1,1], per-row, per-sample [B,1,...], scalar [1] / ndim 0.
tensor *op_add(tensor *a, tensor *b);
tensor *op_sub(tensor *a, tensor *b);
tensor *op_mul(tensor *a, tensor *b);
tensor *op_scale(tensor *a, float s);          // a * s
tensor *op_relu(tensor *x);
tensor *op_sigmoid(tensor *x);
tensor *op_gelu(tensor *x);                    // exact: 0.5 x (1 + erf(x / sqrt 2))
tensor *op_prelu(tensor *x, tensor *w);        // per channel (axis 1), w [C]

// ---- shape ops ----
tensor *op_reshape(tensor *x, int ndim, const int *shape);   // a view, no copy
tensor *op_permute(tensor *x, const int *perm);              // copy; out.shape[i] = x.shape[perm[i]]
tensor *op_transpose(tensor *x, int d0, int d1);
tensor *op_concat(tensor *const *xs, int n, int axis);
tensor *op_slice(tensor *x, int axis, int start, int end);    // [start, end)
tensor *op_mean(tensor *x, int axis, bool keepdim);
tensor *op_subsample(tensor *x, int stride);   // x[:, :, ::s, ::s] on [B,C,H,W]

// ---- matmul ----
// a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N] (or [..., N, K] with
// trans_b). Leading (batch) dims of a and b must be equal, or b is 2-D and shared.
tensor *op_matmul(tensor *a, tensor *b, bool trans_a, bool trans_b);
// x [..., in], w [out, in], bias [out] or NULL -> [..., out]
tensor *op_linear(tensor *x, tensor *w, tensor *bias);
// Multi-head attention with given queries (ops_matmul.c), fused: per sample and
// head, o = softmax(scale q k^T) v. q [B, T, C]: the queries are its tokens
// [q0, q0 + nq); kv [B, N, 2C]: keys in columns [0, C), values in [C, 2C); head
// h is the column block h*C/heads.. of each. Returns [B, nq, C], heads merged.
tensor *op_attention(tensor *q, int q0, int nq, tensor *kv, int heads, float scale);

// ---- convolutions (NCHW / [B, C, L]) ----
// w [Cout, Cin/groups, KH, KW], bias [Cout] or NULL.
tensor *op_conv2d(tensor *x, tensor *w, tensor *bias, int stride, int pad, int groups);
// Inference only (nothing may need a gradient: asserted): op_conv2d with what
// an eval-mode BatchNorm before it and a BatchNorm, PReLU and residual add
// after it compute, in the convolution's own passes over the data instead of
// one pass each. Every field may be NULL. The floats are those of the ops one
// after another (same expressions; tests/test_ops_conv.c compares them).
typedef struct conv_fuse {
    const float *pre_k, *pre_o;     // [Cin]: the conv reads x * pre_k + pre_o, padding 0
    const float *post_k, *post_o;   // [Cout]: then y = y * post_k + post_o
    const float *slope;             // [Cout]: then PReLU, y > 0 ? y : slope * y
    const tensor *res;              // the output's shape: then y = y + res
} conv_fuse;
tensor *op_conv2d_fused(tensor *x, tensor *w, tensor *bias, int stride, int pad, int groups,
                        const conv_fuse *f);
// x [B, Cin, L], w [Cout, Cin, k], no padding: Lout = (L - k) / stride + 1.
tensor *op_conv1d(tensor *x, tensor *w, tensor *bias, int stride);
// x [B, Cin, L], w [Cin, Cout, k] (PyTorch layout), Lout = (L - 1) * stride + k.
tensor *op_conv_transpose1d(tensor *x, tensor *w, tensor *bias, int stride);

// ---- normalization ----
// x [B, C] or [B, C, ...]; statistics per channel (axis 1). In training mode uses
// batch statistics and, when running_mean is non-NULL, updates the running
// statistics in place (momentum, unbiased variance) and ++*num_batches_tracked.
// In eval mode normalizes with the running statistics.
typedef struct bn_args {
    tensor *weight, *bias;              // [C] (either may be NULL: affine off)
    tensor *running_mean, *running_var; // [C] or NULL
    int64_t *num_batches_tracked;       // or NULL
    bool training;
    float momentum;                     // 0.1
    float eps;                          // 1e-5
    double *batch_stats;                // or NULL; training: gets mean[C], then biased var[C]
} bn_args;
tensor *op_batchnorm(tensor *x, const bn_args *a);
// What a training op_batchnorm with these batch statistics (mean, biased var,
// n values per channel) does to the running statistics and the counter:
// replays it exactly (the landmark stream's second SAM pass, layers/poster.c).
void op_batchnorm_update_running(const bn_args *a, int C, const double *mean, const double *var,
                                 int64_t n);
// Eval mode only (running statistics): the batchnorm as y = x * k[c] + o[c],
// k and o computed exactly as op_batchnorm computes them (for op_conv2d_fused).
void op_batchnorm_affine(const bn_args *a, int C, float *k, float *o);
// over the last axis; weight/bias [D] (may be NULL)
tensor *op_layernorm(tensor *x, tensor *weight, tensor *bias, float eps);
tensor *op_softmax(tensor *x);       // last axis
tensor *op_log_softmax(tensor *x);   // last axis

// ---- regularization ----
// Per-sample (axis 0) Bernoulli(1 - rate) mask, kept samples scaled by 1/(1-rate).
// Identity (returns x) when !training or rate == 0.
tensor *op_drop_path(tensor *x, float rate, bool training, rng *r);

// ---- losses (scalar outputs, mean over the batch) ----
// logits [B, K], target [B] class indices. Fused with log-softmax.
// smoothing s: (1-s) * (-log p_y) + s * mean_k(-log p_k); s = 0 is plain CE.
tensor *op_cross_entropy(tensor *logits, const int64_t *target, float smoothing);
