// The landmark stream: MobileFaceNet up to conv_6_sep (spec: "Landmark stream").
// Its GDC head (output_layer) is declared, because every checkpoint holds it,
// and never computed: POSTER discards its output.
#include <stdio.h>

#include "layers/layers.h"

static void conv_block_init(conv_block *m, layer_builder *b, const char *prefix, int cin,
                            int cout, int k, int stride, int pad, int groups, bool act) {
    char n[160];
    nn_conv2d_init(&m->conv, b, lb_name(n, sizeof n, prefix, "conv"), cin, cout, k, stride, pad,
                groups, false);
    nn_batchnorm_init(&m->bn, b, lb_name(n, sizeof n, prefix, "bn"), cout);
    m->has_act = act;
    if (act) nn_prelu_init(&m->act, b, lb_name(n, sizeof n, prefix, "prelu"), cout);
}

// res (or NULL): a residual added after the block (fused inference only).
static tensor *conv_block_fused(const conv_block *m, param_store *s, tensor *x, tensor *res) {
    const float *a = nn_batchnorm_affine(&m->bn, s);
    return nn_conv2d_fused(&m->conv, s, x,
                           &(conv_fuse){.post_k = a, .post_o = a + m->conv.cout,
                                        .slope = m->has_act ? lb_t(s, m->act.w)->data : NULL,
                                        .res = res});
}

static tensor *conv_block_forward(const conv_block *m, param_store *s, tensor *x, bool bn_train,
                                  bn_trace *t) {
    if (nn_infer_fusion(bn_train)) return conv_block_fused(m, s, x, NULL);
    int mark = ag_scope_begin();
    tensor *y = nn_batchnorm_forward_traced(&m->bn, s, nn_conv2d_forward(&m->conv, s, x),
                                            bn_train, t);
    return ag_scope_keep(mark, m->has_act ? nn_prelu_forward(&m->act, s, y) : y);
}

static void depthwise_init(depthwise *m, layer_builder *b, const char *prefix, int cin, int cout,
                           int groups, int stride, bool residual) {
    char n[160];
    conv_block_init(&m->conv, b, lb_name(n, sizeof n, prefix, "conv"), cin, groups, 1, 1, 0, 1,
                    true);
    conv_block_init(&m->conv_dw, b, lb_name(n, sizeof n, prefix, "conv_dw"), groups, groups, 3,
                    stride, 1, groups, true);
    conv_block_init(&m->project, b, lb_name(n, sizeof n, prefix, "project"), groups, cout, 1, 1,
                    0, 1, false);
    m->residual = residual;
}

static tensor *depthwise_forward(const depthwise *m, param_store *s, tensor *x, bool bn_train,
                                 bn_trace *t) {
    int mark = ag_scope_begin();
    if (nn_infer_fusion(bn_train)) {
        tensor *y = conv_block_fused(&m->conv, s, x, NULL), *p = y;
        y = conv_block_fused(&m->conv_dw, s, y, NULL);
        tensor_drop(p);
        p = y;
        y = conv_block_fused(&m->project, s, y, m->residual ? x : NULL);   // x + y: commutes
        tensor_drop(p);
        return ag_scope_keep(mark, y);
    }
    tensor *y = conv_block_forward(&m->conv, s, x, bn_train, t);
    y = conv_block_forward(&m->conv_dw, s, y, bn_train, t);
    y = conv_block_forward(&m->project, s, y, bn_train, t);
    return ag_scope_keep(mark, m->residual ? op_add(x, y) : y);
}

// A residual stage: units named prefix.0 .. prefix.(n-1) (no `.model` level,
// see tests/reference/poster_ref.py).
static void stage_init(depthwise *units, int n_units, layer_builder *b, const char *prefix,
                       int c, int groups) {
    for (int i = 0; i < n_units; i++) {
        char n[160];
        snprintf(n, sizeof n, "%s.%d", prefix, i);
        depthwise_init(&units[i], b, n, c, c, groups, 1, true);
    }
}

void mobilefacenet_init(mobilefacenet *m, layer_builder *b, const char *prefix) {
    char n[160];
#define NM(leaf) lb_name(n, sizeof n, prefix, leaf)
    conv_block_init(&m->conv1, b, NM("conv1"), 3, 64, 3, 2, 1, 1, true);
    conv_block_init(&m->conv2_dw, b, NM("conv2_dw"), 64, 64, 3, 1, 1, 64, true);
    depthwise_init(&m->conv_23, b, NM("conv_23"), 64, 64, 128, 2, false);
    stage_init(m->conv_3, 4, b, NM("conv_3"), 64, 128);
    depthwise_init(&m->conv_34, b, NM("conv_34"), 64, 128, 256, 2, false);
    stage_init(m->conv_4, 6, b, NM("conv_4"), 128, 256);
    depthwise_init(&m->conv_45, b, NM("conv_45"), 128, 128, 512, 2, false);
    stage_init(m->conv_5, 2, b, NM("conv_5"), 128, 256);
    conv_block_init(&m->conv_6_sep, b, NM("conv_6_sep"), 128, 512, 1, 1, 0, 1, true);
    // GDC: 7x7 depthwise LinearBlock, Linear 512 -> 136 (no bias), BatchNorm1d(136).
    conv_block_init(&m->gdc_dw, b, NM("output_layer.conv_6_dw"), 512, 512, 7, 1, 0, 512, false);
    nn_linear_init(&m->gdc_linear, b, NM("output_layer.linear"), 512, 136, false);
    nn_batchnorm_init(&m->gdc_bn, b, NM("output_layer.bn"), 136);
#undef NM
}

tensor *mobilefacenet_forward(const mobilefacenet *m, param_store *s, tensor *x,
                              bool bn_training, bn_trace *t) {
    AG_ASSERT(x->ndim == 4 && x->shape[1] == 3 && x->shape[2] == 112 && x->shape[3] == 112,
              "mobilefacenet: expected [B,3,112,112]");
    // Each stage's input is dropped once the next exists: in no-grad mode (how
    // POSTER runs this frozen stream) two feature maps are alive at a time.
    int mark = ag_scope_begin();
#define NEXT(expr) do { tensor *in_ = y; y = (expr); tensor_drop(in_); } while (0)
    tensor *y = conv_block_forward(&m->conv1, s, x, bn_training, t);          // [B,64,56,56]
    NEXT(conv_block_forward(&m->conv2_dw, s, y, bn_training, t));
    NEXT(depthwise_forward(&m->conv_23, s, y, bn_training, t));               // [B,64,28,28]
    for (int i = 0; i < 4; i++) NEXT(depthwise_forward(&m->conv_3[i], s, y, bn_training, t));
    NEXT(depthwise_forward(&m->conv_34, s, y, bn_training, t));               // [B,128,14,14]
    for (int i = 0; i < 6; i++) NEXT(depthwise_forward(&m->conv_4[i], s, y, bn_training, t));
    NEXT(depthwise_forward(&m->conv_45, s, y, bn_training, t));               // [B,128,7,7]
    for (int i = 0; i < 2; i++) NEXT(depthwise_forward(&m->conv_5[i], s, y, bn_training, t));
    NEXT(conv_block_forward(&m->conv_6_sep, s, y, bn_training, t));           // [B,512,7,7]
#undef NEXT
    return ag_scope_keep(mark, y);
}
