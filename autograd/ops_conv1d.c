// The 1-D convolutions of the transformer's patch embedding and landmark
// stream: conv1d is conv2d with H = 1 (ops_conv.c, same kernels and backward);
// conv-transpose1d is sgemm followed by col2im. NCL layout: [B, C, L].
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "ops_ref.h"

tensor *op_conv1d(tensor *x, tensor *w, tensor *bias, int stride) {
    char sx[64], sw[64];
    AG_ASSERT(x->ndim == 3 && w->ndim == 3 && w->shape[1] == x->shape[1] &&
                  w->shape[2] <= x->shape[2],
              "conv1d of %s with weight %s", tensor_shape_str(x, sx, sizeof sx),
              tensor_shape_str(w, sw, sizeof sw));
    AG_ASSERT(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]),
              "conv1d bias %s for weight %s", tensor_shape_str(bias, sx, sizeof sx),
              tensor_shape_str(w, sw, sizeof sw));
    // [B, Cin, L] as [B, Cin, 1, L]: a 1 x k kernel, no padding, so Ho = 1.
    conv2d_geom g = conv2d_make_geom(x->shape[0], x->shape[1], 1, x->shape[2], w->shape[0], 1,
                                     w->shape[2], stride, 0, 1);
    return conv2d_run("conv1d", &g, x, w, bias, T_SHAPE(g.B, g.Cout, g.Wo));
}

// ---------------------------------------------------------------------------
// conv-transpose1d: y_b = col2im(W^T x_b), W viewed as [Cin, Cout*k].

static void convt1d_forward_sample(int Cin, int L, int Cout, int k, int stride,
                                   const float *xb, const float *w, const float *bias, float *yb,
                                   float *col) {
    int Lout = (L - 1) * stride + k;
    for (int co = 0; co < Cout; co++)
        for (int t = 0; t < Lout; t++) yb[(int64_t)co * Lout + t] = bias ? bias[co] : 0.0f;
    // col [Cout*k, L] = W^T [Cout*k, Cin] x_b [Cin, L]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout * k, L, Cin, 1.0f, w, Cout * k, xb,
                L, 0.0f, col, L);
    conv_col2im_add(col, Cout, 1, Lout, 1, k, stride, 0, 1, L, yb);
}

void conv_transpose1d_forward(int B, int Cin, int L, int Cout, int k, int stride,
                              const float *x, const float *w, const float *bias, float *y) {
    int Lout = (L - 1) * stride + k;
    size_t per = conv_pad16((size_t)Cout * k * L);
    int64_t sx = (int64_t)Cin * L, sy = (int64_t)Cout * Lout;
    if (conv_batch_parallel(B)) {
        int nt = ops_threads();
        float *scr = conv_scratch(per * nt);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            convt1d_forward_sample(Cin, L, Cout, k, stride, x + b * sx, w, bias, y + b * sy,
                                   scr + per * omp_get_thread_num());
    } else {
        float *scr = conv_scratch(per);
        for (int b = 0; b < B; b++)
            convt1d_forward_sample(Cin, L, Cout, k, stride, x + b * sx, w, bias, y + b * sy, scr);
    }
}

static void convt1d_backward_sample(int Cin, int L, int Cout, int k, int stride,
                                    const float *xb, const float *w, const float *dyb,
                                    float *dxb, float *dw_acc, float *dcol) {
    int Lout = (L - 1) * stride + k;
    conv_im2col(dyb, Cout, 1, Lout, 1, k, stride, 0, 1, L, dcol);   // [Cout*k, L]
    if (dxb)   // dx_b [Cin, L] += W [Cin, Cout*k] dcol [Cout*k, L]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cin, L, Cout * k, 1.0f, w,
                    Cout * k, dcol, L, 1.0f, dxb, L);
    if (dw_acc)   // dW [Cin, Cout*k] += x_b [Cin, L] dcol^T [L, Cout*k]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cin, Cout * k, L, 1.0f, xb, L,
                    dcol, L, 1.0f, dw_acc, Cout * k);
}

void conv_transpose1d_backward(int B, int Cin, int L, int Cout, int k, int stride,
                               const float *x, const float *w, const float *dy, float *dx,
                               float *dw, float *db) {
    int Lout = (L - 1) * stride + k;
    int64_t sx = (int64_t)Cin * L, sy = (int64_t)Cout * Lout;
    if (db) conv_bias_backward(dy, B, Cout, Lout, db);
    if (!dx && !dw) return;
    size_t per = conv_pad16((size_t)Cout * k * L);
    size_t nw = conv_pad16((size_t)Cin * Cout * k);
    if (conv_batch_parallel(B)) {
        int nt = ops_threads();
        size_t slice = per + (dw ? nw : 0);
        float *scr = conv_scratch(slice * nt);
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num();
            float *dcol = scr + slice * t;
            float *dwt = dw ? dcol + per : NULL;
            if (dwt) memset(dwt, 0, nw * sizeof(float));
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++)
                convt1d_backward_sample(Cin, L, Cout, k, stride, x + b * sx, w, dy + b * sy,
                                        dx ? dx + b * sx : NULL, dwt, dcol);
            if (dw) {
#pragma omp barrier
#pragma omp for schedule(static)
                for (size_t i = 0; i < (size_t)Cin * Cout * k; i++) {
                    float s = 0;
                    for (int q = 0; q < nt; q++) s += scr[slice * q + per + i];
                    dw[i] += s;
                }
            }
        }
    } else {
        float *scr = conv_scratch(per);
        for (int b = 0; b < B; b++)
            convt1d_backward_sample(Cin, L, Cout, k, stride, x + b * sx, w, dy + b * sy,
                                    dx ? dx + b * sx : NULL, dw, scr);
    }
}

typedef struct convt1d_saved {
    int B, Cin, L, Cout, k, stride;
} convt1d_saved;

static void convt1d_tape_backward(tape_entry *e) {
    const convt1d_saved *s = e->saved;
    tensor *x = e->in[0], *w = e->in[1], *b = e->n_in > 2 ? e->in[2] : NULL;
    conv_transpose1d_backward(s->B, s->Cin, s->L, s->Cout, s->k, s->stride, x->data, w->data,
                              e->out->grad, x->requires_grad ? tensor_grad(x) : NULL,
                              w->requires_grad ? tensor_grad(w) : NULL,
                              b && b->requires_grad ? tensor_grad(b) : NULL);
}

tensor *op_conv_transpose1d(tensor *x, tensor *w, tensor *bias, int stride) {
    char sx[64], sw[64];
    AG_ASSERT(x->ndim == 3 && w->ndim == 3 && w->shape[0] == x->shape[1] && stride >= 1,
              "conv_transpose1d of %s with weight %s, stride %d",
              tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(w, sw, sizeof sw), stride);
    AG_ASSERT(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[1]),
              "conv_transpose1d bias %s for weight %s", tensor_shape_str(bias, sx, sizeof sx),
              tensor_shape_str(w, sw, sizeof sw));
    convt1d_saved s = {x->shape[0], x->shape[1], x->shape[2], w->shape[1], w->shape[2], stride};
    int Lout = (s.L - 1) * stride + s.k;
    tensor *y = tensor_new(T_SHAPE(s.B, s.Cout, Lout));
    if (s.L > 0)
        conv_transpose1d_forward(s.B, s.Cin, s.L, s.Cout, s.k, stride, x->data, w->data,
                                 bias ? bias->data : NULL, y->data);
    tensor *in[3] = {x, w, bias};
    int n = bias ? 3 : 2;
    if (ag_needs_grad(n, in)) {
        convt1d_saved *sv = arena_alloc(sizeof *sv);
        *sv = s;
        ag_record_need("conv_transpose1d", convt1d_tape_backward, y, n, in, sv,
                       AG_NEED_IN(0) | AG_NEED_IN(1));
    }
    return y;
}
