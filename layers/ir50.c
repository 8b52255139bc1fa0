// The image stream: the first three stages of IR-50 (spec: "Image stream").
// output_layer is declared (counted in the official 70.843M, present in
// ir50.pth) as PARAM_UNUSED and never computed.
#include <stdio.h>
#include <stdlib.h>

#include "layers/layers.h"

static void bottleneck_init(bottleneck_ir *m, layer_builder *b, const char *prefix, int cin,
                            int d, int stride) {
    char n[160];
    m->cin = cin;
    m->d = d;
    m->stride = stride;
    m->conv_shortcut = cin != d;
    // shortcut_layer first: the official state_dict order.
    if (m->conv_shortcut) {
        snprintf(n, sizeof n, "%s.shortcut_layer.0", prefix);
        nn_conv2d_init(&m->sc_conv, b, n, cin, d, 1, stride, 0, 1, false);
        snprintf(n, sizeof n, "%s.shortcut_layer.1", prefix);
        nn_batchnorm_init(&m->sc_bn, b, n, d);
    }
    snprintf(n, sizeof n, "%s.res_layer.0", prefix);
    nn_batchnorm_init(&m->bn0, b, n, cin);
    snprintf(n, sizeof n, "%s.res_layer.1", prefix);
    nn_conv2d_init(&m->conv1, b, n, cin, d, 3, 1, 1, 1, false);
    snprintf(n, sizeof n, "%s.res_layer.2", prefix);
    nn_prelu_init(&m->act, b, n, d);
    snprintf(n, sizeof n, "%s.res_layer.3", prefix);
    nn_conv2d_init(&m->conv3, b, n, d, d, 3, stride, 1, 1, false);
    snprintf(n, sizeof n, "%s.res_layer.4", prefix);
    nn_batchnorm_init(&m->bn4, b, n, d);
}

// res: BN -> Conv3x3 -> PReLU -> Conv3x3(stride) -> BN; shortcut: subsample
// (MaxPool2d(1, stride)) or Conv1x1(stride) -> BN.
static tensor *bottleneck_forward(const bottleneck_ir *m, param_store *s, tensor *x,
                                  bool training) {
    // Each intermediate is dropped once the next exists: it dies then unless a
    // backward needs it (no-grad: two feature maps are alive at a time).
    int mark = ag_scope_begin();
    if (nn_infer_fusion(training)) {
        // bn0 read by conv1, PReLU and bn4 + shortcut written by the convs.
        const float *a0 = nn_batchnorm_affine(&m->bn0, s), *a4 = nn_batchnorm_affine(&m->bn4, s);
        tensor *r = nn_conv2d_fused(&m->conv1, s, x,
                                    &(conv_fuse){.pre_k = a0, .pre_o = a0 + m->cin,
                                                 .slope = lb_t(s, m->act.w)->data});
        tensor *sc;
        if (m->conv_shortcut) {
            const float *as = nn_batchnorm_affine(&m->sc_bn, s);
            sc = nn_conv2d_fused(&m->sc_conv, s, x,
                                 &(conv_fuse){.post_k = as, .post_o = as + m->d});
        } else {
            sc = m->stride == 1 ? x : op_subsample(x, m->stride);
        }
        tensor *y = nn_conv2d_fused(&m->conv3, s, r,
                                    &(conv_fuse){.post_k = a4, .post_o = a4 + m->d, .res = sc});
        tensor_drop(r);
        if (sc != x) tensor_drop(sc);
        return ag_scope_keep(mark, y);
    }
    tensor *r = nn_batchnorm_forward(&m->bn0, s, x, training), *p;
    p = r, r = nn_conv2d_forward(&m->conv1, s, r), tensor_drop(p);
    p = r, r = nn_prelu_forward(&m->act, s, r), tensor_drop(p);
    p = r, r = nn_conv2d_forward(&m->conv3, s, r), tensor_drop(p);
    p = r, r = nn_batchnorm_forward(&m->bn4, s, r, training), tensor_drop(p);
    tensor *sc;
    if (m->conv_shortcut)
        sc = nn_batchnorm_forward(&m->sc_bn, s, nn_conv2d_forward(&m->sc_conv, s, x), training);
    else
        sc = m->stride == 1 ? x : op_subsample(x, m->stride);
    return ag_scope_keep(mark, op_add(r, sc));
}

void ir50_init(ir50 *m, layer_builder *b, const char *prefix, const int units[3]) {
    char n[160];
    snprintf(n, sizeof n, "%s.input_layer.0", prefix);
    nn_conv2d_init(&m->in_conv, b, n, 3, 64, 3, 1, 1, 1, false);
    snprintf(n, sizeof n, "%s.input_layer.1", prefix);
    nn_batchnorm_init(&m->in_bn, b, n, 64);
    snprintf(n, sizeof n, "%s.input_layer.2", prefix);
    nn_prelu_init(&m->in_act, b, n, 64);

    static const int stage_in[3] = {64, 64, 128}, stage_d[3] = {64, 128, 256};
    m->n_units = units[0] + units[1] + units[2];
    m->body = calloc((size_t)m->n_units, sizeof(bottleneck_ir));
    AG_ASSERT(m->body != NULL, "out of memory");
    int k = 0;
    for (int st = 0; st < 3; st++)
        for (int u = 0; u < units[st]; u++, k++) {
            snprintf(n, sizeof n, "%s.body.%d", prefix, k);
            if (u == 0)
                bottleneck_init(&m->body[k], b, n, stage_in[st], stage_d[st], 2);
            else
                bottleneck_init(&m->body[k], b, n, stage_d[st], stage_d[st], 1);
        }

    // output_layer: BN2d(512)[.0], Dropout[.1], Flatten[.2], Linear(25088, 512)[.3],
    // BN1d(512)[.4]. Counted as trainable, never computed.
    enum param_kind keep = b->kind;
    b->kind = PARAM_UNUSED;
    snprintf(n, sizeof n, "%s.output_layer.0", prefix);
    nn_batchnorm_init(&m->out_bn0, b, n, 512);
    snprintf(n, sizeof n, "%s.output_layer.3", prefix);
    nn_linear_init(&m->out_linear, b, n, 512 * 7 * 7, 512, true);
    snprintf(n, sizeof n, "%s.output_layer.4", prefix);
    nn_batchnorm_init(&m->out_bn4, b, n, 512);
    b->kind = keep;
}

void ir50_free(ir50 *m) {
    free(m->body);
    m->body = NULL;
}

tensor *ir50_forward(const ir50 *m, param_store *s, tensor *x, bool training) {
    AG_ASSERT(x->ndim == 4 && x->shape[1] == 3 && x->shape[2] == 112 && x->shape[3] == 112,
              "ir50: expected [B,3,112,112]");
    int mark = ag_scope_begin();
    tensor *y;
    if (nn_infer_fusion(training)) {
        const float *a = nn_batchnorm_affine(&m->in_bn, s);
        y = ag_scope_keep(mark, nn_conv2d_fused(&m->in_conv, s, x,
                                                &(conv_fuse){.post_k = a, .post_o = a + 64,
                                                             .slope = lb_t(s, m->in_act.w)->data}));
    } else {
        y = nn_conv2d_forward(&m->in_conv, s, x);                     // [B,64,112,112]
        y = nn_batchnorm_forward(&m->in_bn, s, y, training);
        y = ag_scope_keep(mark, nn_prelu_forward(&m->in_act, s, y));
    }
    for (int i = 0; i < m->n_units; i++) {
        tensor *in = y;
        y = bottleneck_forward(&m->body[i], s, in, training);
        tensor_drop(in);   // freed now unless a backward still needs it
    }
    return y;                                                      // [B,256,14,14]
}
