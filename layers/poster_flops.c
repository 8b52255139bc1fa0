// Multiply-accumulate count of the POSTER forward (layers/poster_flops.h). It
// follows the module shapes of layers/ir50.c, mobilefacenet.c, transformer.c
// and poster.c; tests/test_poster_flops.c checks it against the spec's figures.
#include "layers/poster_flops.h"

#include "layers/layers.h"

// A conv2d with padding (k-1)/2 on an h x h map: returns the output side.
static int conv_macs(double *acc, int h, int cin, int cout, int k, int stride, int groups) {
    int pad = (k - 1) / 2, ho = (h + 2 * pad - k) / stride + 1;
    *acc += (double)ho * ho * cout * (cin / groups) * k * k;
    return ho;
}

static double ir50_macs(const int units[3]) {
    static const int stage_in[3] = {64, 64, 128}, stage_d[3] = {64, 128, 256};
    double m = 0;
    int h = conv_macs(&m, 112, 3, 64, 3, 1, 1);                  // input layer
    for (int st = 0; st < 3; st++)
        for (int u = 0; u < units[st]; u++) {
            int cin = u ? stage_d[st] : stage_in[st], d = stage_d[st], stride = u ? 1 : 2;
            conv_macs(&m, h, cin, d, 3, 1, 1);                   // res_layer.1
            int ho = conv_macs(&m, h, d, d, 3, stride, 1);       // res_layer.3
            if (cin != d) conv_macs(&m, h, cin, d, 1, stride, 1);   // shortcut 1x1
            h = ho;
        }
    return m + 49.0 * 1024 * 512;                                // ir_layer
}

static int depthwise_macs(double *m, int h, int cin, int cout, int groups, int stride) {
    conv_macs(m, h, cin, groups, 1, 1, 1);
    h = conv_macs(m, h, groups, groups, 3, stride, groups);
    conv_macs(m, h, groups, cout, 1, 1, 1);
    return h;
}

static double mobilefacenet_macs(void) {
    double m = 0;
    int h = conv_macs(&m, 112, 3, 64, 3, 2, 1);                  // conv1 -> 56
    conv_macs(&m, h, 64, 64, 3, 1, 64);                          // conv2_dw
    h = depthwise_macs(&m, h, 64, 64, 128, 2);                   // conv_23 -> 28
    for (int i = 0; i < 4; i++) depthwise_macs(&m, h, 64, 64, 128, 1);
    h = depthwise_macs(&m, h, 64, 128, 256, 2);                  // conv_34 -> 14
    for (int i = 0; i < 6; i++) depthwise_macs(&m, h, 128, 128, 256, 1);
    h = depthwise_macs(&m, h, 128, 128, 512, 2);                 // conv_45 -> 7
    for (int i = 0; i < 2; i++) depthwise_macs(&m, h, 128, 128, 256, 1);
    conv_macs(&m, h, 128, 512, 1, 1, 1);                         // conv_6_sep
    return m;
}

// One Block of width D: two cross attentions (kv, scores, weighted values,
// proj over 50 query tokens) and two MLPs (D -> 2D -> D) over 50 tokens each,
// and the token-mixing Conv1d(100, 100, 1) over D positions.
static double block_macs(double D, bool token_mix) {
    const double n = PF_IMG, kv = n * D * 2 * D, proj = n * D * D;
    const double att = 2 * n * n * D;                            // q k^T and att v, all heads
    const double mlp = 2 * n * D * 2 * D;
    return 2 * (kv + att + proj + mlp) + (token_mix ? (double)PF_TOKENS * PF_TOKENS * D : 0);
}

static double transformer_macs(const poster_opts *o) {
    const double T2 = (double)PF_TOKENS * PF_TOKENS;
    double m = 0;
    if (o->pyramid_levels >= 2) m += T2 * 2 * 256;               // downsample_m, k2 s2
    if (o->pyramid_levels >= 3) m += T2 * 4 * 128;               // downsample_s, k4 s4
    double blk = block_macs(512, o->token_mix);
    if (o->pyramid_levels >= 2) blk += block_macs(256, o->token_mix) + T2 * 2 * 256;  // upsample_m
    if (o->pyramid_levels >= 3) blk += block_macs(128, o->token_mix) + T2 * 2 * 128;  // upsample_s
    return m + o->depth * blk;
}

void poster_count_macs(const poster_opts *o, poster_macs *out) {
    out->ir50 = ir50_macs(o->ir_units);
    out->mobilefacenet = o->streams == STREAMS_BOTH ? mobilefacenet_macs() : 0;
    out->transformer = transformer_macs(o);
    // SE block: linear1, linear2 512 -> 512 (layers/poster.c); head 512 -> K
    out->head = 2 * 512.0 * 512 + 512.0 * o->num_classes;
    out->total = out->ir50 + out->mobilefacenet + out->transformer + out->head;
}

double poster_train_pass_flops(const poster_macs *m) {
    return 2.0 * (3.0 * (m->ir50 + m->transformer + m->head) + m->mobilefacenet);
}
