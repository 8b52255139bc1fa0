// Building blocks of POSTER: modules that declare their tensors in a
// param_store under dotted names (exactly PyTorch's state_dict keys) and run
// forward through the ops of autograd/ops.h.
//
// Modules hold store indices, not tensor pointers: store_add may move the
// parameter table until store_finalize, so a module resolves its tensors at
// forward time (lb_t). Registration also records how each tensor is
// initialized (PyTorch's defaults) and its role for the deterministic test
// weights; both are applied after store_finalize.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "autograd/tensor.h"

// ---- registration context ----
enum init_rule {
    INIT_UNIFORM,       // U(-a, a)
    INIT_NORMAL,        // N(0, a^2)
    INIT_CONST,         // a
};

// Role of a tensor for poster_fill_deterministic (the contract with the
// PyTorch reference): decided by the module that declares it.
enum param_role {
    ROLE_WEIGHT,        // conv / linear, ndim >= 2
    ROLE_BIAS,
    ROLE_NORM_WEIGHT,   // BatchNorm / LayerNorm weight
    ROLE_PRELU_WEIGHT,
    ROLE_RUNNING_MEAN,
    ROLE_RUNNING_VAR,
    ROLE_COUNT,         // num_batches_tracked
    ROLE_EMBED,         // pos_embed, cls_token
};

typedef struct param_init {
    uint8_t rule;       // enum init_rule
    uint8_t role;       // enum param_role
    float a;            // bound, std or constant
} param_init;

typedef struct layer_builder {
    param_store *s;
    enum param_kind kind;   // kind given to weights/biases declared now
    bool kaiming_fan_out;   // conv/linear weights: kaiming normal, fan_out, gain sqrt 2
    param_init *init;       // indexed like s->params
    int cap;
} layer_builder;

void lb_init(layer_builder *b, param_store *s);
void lb_free(layer_builder *b);
// Declares prefix.leaf (prefix may be ""); returns the store index.
int lb_add(layer_builder *b, const char *prefix, const char *leaf, enum param_kind kind,
           int ndim, const int *shape, enum init_rule rule, float a, enum param_role role);
// After store_finalize: draws every tensor's initial value in declaration order.
void lb_apply_init(const layer_builder *b, rng *r);

static inline tensor *lb_t(param_store *s, int idx) {
    return idx < 0 ? NULL : &s->params[idx].t;
}
// "a.b" + "c" -> "a.b.c" into buf (truncation is a programmer error).
const char *lb_name(char *buf, size_t n, const char *prefix, const char *leaf);

// ---- modules ----
typedef struct linear {
    int w, b;               // [out, in], [out] (b -1: no bias)
    int in, out;
} linear;
void nn_linear_init(linear *m, layer_builder *b, const char *prefix, int in, int out, bool bias);
tensor *nn_linear_forward(const linear *m, param_store *s, tensor *x);   // [..., in] -> [..., out]

typedef struct conv2d {
    int w, b;               // [cout, cin/groups, k, k], [cout] or -1
    int cin, cout, k, stride, pad, groups;
} conv2d;
void nn_conv2d_init(conv2d *m, layer_builder *b, const char *prefix, int cin, int cout, int k,
                 int stride, int pad, int groups, bool bias);
tensor *nn_conv2d_forward(const conv2d *m, param_store *s, tensor *x);

// Conv1d over [B, C, L] with no padding, and ConvTranspose1d (weight [cin, cout, k]).
typedef struct conv1d {
    int w, b;
    int cin, cout, k, stride;
    bool transposed;
} conv1d;
void nn_conv1d_init(conv1d *m, layer_builder *b, const char *prefix, int cin, int cout, int k,
                 int stride, bool transposed);
tensor *nn_conv1d_forward(const conv1d *m, param_store *s, tensor *x);

// BatchNorm (1d or 2d: statistics over every axis but 1). Running statistics
// are PARAM_BUFFER, num_batches_tracked a PARAM_COUNTER, whatever the kind of
// weight and bias.
typedef struct batchnorm {
    int w, b, rm, rv, nbt;
    int c;
} batchnorm;
void nn_batchnorm_init(batchnorm *m, layer_builder *b, const char *prefix, int c);
tensor *nn_batchnorm_forward(const batchnorm *m, param_store *s, tensor *x, bool training);

// The batch statistics of a stream's training BatchNorms, in forward order:
// recorded by one forward (nn_batchnorm_forward_traced), then applied once
// more to the running statistics and counters (bn_trace_replay), as a second
// training forward on the same input would (SAM's second pass, layers/poster.c).
typedef struct bn_trace {
    int n, cap;
    const batchnorm **bn;   // [n]
    int64_t *count;         // [n] values per channel
    double **stats;         // [n]: mean[C], then biased var[C]
} bn_trace;
tensor *nn_batchnorm_forward_traced(const batchnorm *m, param_store *s, tensor *x,
                                    bool training, bn_trace *t);
void bn_trace_replay(const bn_trace *t, param_store *s);
void bn_trace_clear(bn_trace *t);   // frees the statistics; the trace is empty again

typedef struct prelu {
    int w;                  // [c], 0.25
    int c;
} prelu;
void nn_prelu_init(prelu *m, layer_builder *b, const char *prefix, int c);
tensor *nn_prelu_forward(const prelu *m, param_store *s, tensor *x);

// Inference fusion (op_conv2d_fused): when no gradient is recorded and the
// BatchNorms run on their running statistics, IR-50 and MobileFaceNet run a
// conv with its BatchNorm, PReLU and residual add in one op. The floats are
// the unfused ones; nn_set_infer_fusion(false) (tests, benchmarks) turns it off.
void nn_set_infer_fusion(bool on);
bool nn_infer_fusion(bool bn_training);   // on, !bn_training and no grad recorded
// Eval-mode BatchNorm as y = x * k + o: [2C] in the step arena, k then o.
const float *nn_batchnorm_affine(const batchnorm *m, param_store *s);
tensor *nn_conv2d_fused(const conv2d *m, param_store *s, tensor *x, const conv_fuse *f);

typedef struct layernorm {
    int w, b;
    int d;
    float eps;
} layernorm;
void nn_layernorm_init(layernorm *m, layer_builder *b, const char *prefix, int d, float eps);
tensor *nn_layernorm_forward(const layernorm *m, param_store *s, tensor *x);

// fc1 Linear(dim, hidden) -> GELU (exact) -> fc2 Linear(hidden, dim)
typedef struct mlp {
    linear fc1, fc2;
} mlp;
void nn_mlp_init(mlp *m, layer_builder *b, const char *prefix, int dim, int hidden);
tensor *nn_mlp_forward(const mlp *m, param_store *s, tensor *x);

// ---- MobileFaceNet (layers/mobilefacenet.c) ----
// Conv2d (no bias) -> BatchNorm2d [-> PReLU]; keys conv / bn / prelu.
typedef struct conv_block {
    conv2d conv;
    batchnorm bn;
    prelu act;
    bool has_act;
} conv_block;

typedef struct depthwise {
    conv_block conv, conv_dw, project;
    bool residual;
} depthwise;

typedef struct mobilefacenet {
    conv_block conv1, conv2_dw, conv_6_sep;
    depthwise conv_23, conv_3[4], conv_34, conv_4[6], conv_45, conv_5[2];
    // GDC head: declared (it is in every checkpoint), never computed.
    conv_block gdc_dw;
    linear gdc_linear;
    batchnorm gdc_bn;
} mobilefacenet;
// Declares face_landback.* with b->kind (the caller passes PARAM_FROZEN).
void mobilefacenet_init(mobilefacenet *m, layer_builder *b, const char *prefix);
// [B,3,112,112] -> [B,512,7,7]; bn_training: batch statistics (and running updates).
// trace (or NULL): with bn_training, records the BatchNorms' batch statistics.
tensor *mobilefacenet_forward(const mobilefacenet *m, param_store *s, tensor *x,
                              bool bn_training, bn_trace *trace);

// ---- IR-50 trunk, first three stages (layers/ir50.c) ----
typedef struct bottleneck_ir {
    int cin, d, stride;
    batchnorm bn0, bn4;
    conv2d conv1, conv3;
    prelu act;
    bool conv_shortcut;
    conv2d sc_conv;
    batchnorm sc_bn;
} bottleneck_ir;

typedef struct ir50 {
    conv2d in_conv;
    batchnorm in_bn;
    prelu in_act;
    int n_units;
    bottleneck_ir *body;
    // output_layer: declared PARAM_UNUSED, never computed.
    batchnorm out_bn0, out_bn4;
    linear out_linear;
} ir50;
void ir50_init(ir50 *m, layer_builder *b, const char *prefix, const int units[3]);
void ir50_free(ir50 *m);
// [B,3,112,112] -> [B,256,14,14]
tensor *ir50_forward(const ir50 *m, param_store *s, tensor *x, bool training);

// ---- cross-fusion pyramid transformer (layers/transformer.c) ----
#define PF_TOKENS 100      // image (50) + landmark (50)
#define PF_IMG 50
#define PF_HEADS 8

typedef struct cross_attn {
    linear kv, proj;
    int dim;
    bool kv_from_image;    // attn_img: keys/values from the image half, queries landmarks
} cross_attn;

typedef struct block {
    int dim;
    layernorm norm1, norm2, norm3, norm4;
    cross_attn attn_img, attn_lm;
    mlp mlp1, mlp2;
    bool token_mix;
    conv1d conv;           // Conv1d(100, 100, 1)
} block;

typedef struct pyramid_block {
    int levels;
    block l, m, sm;        // sm: block_s
    conv1d upsample_m, upsample_s;
} pyramid_block;

typedef struct pyramid_fuse {
    int levels, depth;
    int cls_token, pos_embed;
    conv1d downsample_m, downsample_s;
    pyramid_block *blocks;
    layernorm norm;
    float *drop_rate;      // [depth]: linspace(0, rate, depth)
} pyramid_fuse;

void block_init(block *m, layer_builder *b, const char *prefix, int dim, bool token_mix);
tensor *block_forward(const block *m, param_store *s, tensor *x, float drop_rate,
                      bool training, rng *r);
tensor *cross_attn_forward(const cross_attn *m, param_store *s, tensor *y);
void pyramid_fuse_init(pyramid_fuse *m, layer_builder *b, const char *prefix, int depth,
                       int levels, bool token_mix);
void pyramid_fuse_free(pyramid_fuse *m);
void pyramid_fuse_set_drop_path(pyramid_fuse *m, float rate);
// img, lm: [B,49,512] -> the image class token after the final LayerNorm, [B,512]
tensor *pyramid_fuse_forward(const pyramid_fuse *m, param_store *s, tensor *img, tensor *lm,
                             bool training, rng *r);
