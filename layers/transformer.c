// The cross-fusion pyramid transformer (spec: "Cross-fusion pyramid
// transformer"): cross attention with unprojected queries, Block,
// PyramidBlock, and the pyramid over the embedding axis with its
// down/upsampling Conv1d / ConvTranspose1d.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/profile.h"
#include "layers/layers.h"

// ---------------------------------------------------------------------------
// Cross attention

static void cross_attn_init(cross_attn *m, layer_builder *b, const char *prefix, int dim,
                            bool kv_from_image) {
    char n[160];
    m->dim = dim;
    m->kv_from_image = kv_from_image;
    nn_linear_init(&m->kv, b, lb_name(n, sizeof n, prefix, "kv"), dim, 2 * dim, true);
    nn_linear_init(&m->proj, b, lb_name(n, sizeof n, prefix, "proj"), dim, dim, true);
}

// y: the normed tokens [B,100,dim]. Keys and values come from one half (kv
// output laid out [2, heads, c]: keys in columns [0, dim), values after); the
// queries are the other half's tokens split into heads with NO projection.
// op_attention reads the heads straight from y and kv and writes them merged.
// Output [B,50,dim].
tensor *cross_attn_forward(const cross_attn *m, param_store *s, tensor *y) {
    const int C = m->dim, H = PF_HEADS, c = C / H;
    const int Nq = y->shape[1] - PF_IMG;
    int mark = ag_scope_begin();   // what no backward needs is freed on return
    int prof = prof_enter("transformer.attention");
    tensor *src = m->kv_from_image ? op_slice(y, 1, 0, PF_IMG)              // [B,50,C]
                                   : op_slice(y, 1, PF_IMG, y->shape[1]);
    tensor *kv = nn_linear_forward(&m->kv, s, src);                          // [B,50,2C]
    int q0 = m->kv_from_image ? PF_IMG : 0;                                  // the other half
    tensor *o = op_attention(y, q0, Nq, kv, H, (float)(1.0 / sqrt((double)c)));   // [B,Nq,C]
    o = nn_linear_forward(&m->proj, s, o);                                   // [B,Nq,C]
    prof_leave(prof);
    return ag_scope_keep(mark, o);
}

// ---------------------------------------------------------------------------
// Block

void block_init(block *m, layer_builder *b, const char *prefix, int dim, bool token_mix) {
    char n[160];
    m->dim = dim;
    m->token_mix = token_mix;
    // Registration order = the TSV's key order (norms first).
    nn_layernorm_init(&m->norm1, b, lb_name(n, sizeof n, prefix, "norm1"), dim, 1e-6f);
    nn_layernorm_init(&m->norm2, b, lb_name(n, sizeof n, prefix, "norm2"), dim, 1e-6f);
    nn_layernorm_init(&m->norm3, b, lb_name(n, sizeof n, prefix, "norm3"), dim, 1e-6f);
    nn_layernorm_init(&m->norm4, b, lb_name(n, sizeof n, prefix, "norm4"), dim, 1e-6f);
    cross_attn_init(&m->attn_img, b, lb_name(n, sizeof n, prefix, "attn_img"), dim, true);
    cross_attn_init(&m->attn_lm, b, lb_name(n, sizeof n, prefix, "attn_lm"), dim, false);
    nn_mlp_init(&m->mlp1, b, lb_name(n, sizeof n, prefix, "mlp1"), dim, 2 * dim);
    nn_mlp_init(&m->mlp2, b, lb_name(n, sizeof n, prefix, "mlp2"), dim, 2 * dim);
    if (token_mix)
        nn_conv1d_init(&m->conv, b, lb_name(n, sizeof n, prefix, "conv"), PF_TOKENS, PF_TOKENS, 1,
                    1, false);
}

// The norm and MLP of a block in their own profiler sections (the time split
// of `poster bench`).
static tensor *layernorm_timed(const layernorm *m, param_store *s, tensor *x) {
    int p = prof_enter("transformer.norm");
    tensor *y = nn_layernorm_forward(m, s, x);
    prof_leave(p);
    return y;
}

static tensor *mlp_timed(const mlp *m, param_store *s, tensor *x) {
    int p = prof_enter("transformer.mlp");
    tensor *y = nn_mlp_forward(m, s, x);
    prof_leave(p);
    return y;
}

// x [B,100,dim] -> [B,100,dim]. Each of the four residual branches draws its
// own drop path mask (one DropPath module called four times).
tensor *block_forward(const block *m, param_store *s, tensor *x, float drop_rate, bool training,
                      rng *r) {
    int mark = ag_scope_begin();
    tensor *img = op_slice(x, 1, 0, PF_IMG);
    tensor *lm = op_slice(x, 1, PF_IMG, x->shape[1]);
    tensor *t = cross_attn_forward(&m->attn_img, s, layernorm_timed(&m->norm1, s, x));
    img = op_add(img, op_drop_path(t, drop_rate, training, r));
    t = mlp_timed(&m->mlp1, s, layernorm_timed(&m->norm2, s, img));
    img = op_add(img, op_drop_path(t, drop_rate, training, r));
    t = cross_attn_forward(&m->attn_lm, s, layernorm_timed(&m->norm3, s, x));
    lm = op_add(lm, op_drop_path(t, drop_rate, training, r));
    t = mlp_timed(&m->mlp2, s, layernorm_timed(&m->norm4, s, lm));
    lm = op_add(lm, op_drop_path(t, drop_rate, training, r));
    tensor *parts[2] = {img, lm};
    tensor *y = op_concat(parts, 2, 1);                           // [B,100,dim]
    return ag_scope_keep(mark, m->token_mix ? nn_conv1d_forward(&m->conv, s, y) : y);
}

// ---------------------------------------------------------------------------
// Pyramid

static void pyramid_block_init(pyramid_block *m, layer_builder *b, const char *prefix,
                               int levels, bool token_mix) {
    char n[160];
    m->levels = levels;
    block_init(&m->l, b, lb_name(n, sizeof n, prefix, "block_l"), 512, token_mix);
    if (levels >= 2) block_init(&m->m, b, lb_name(n, sizeof n, prefix, "block_m"), 256, token_mix);
    if (levels >= 3) block_init(&m->sm, b, lb_name(n, sizeof n, prefix, "block_s"), 128, token_mix);
    if (levels >= 2)
        nn_conv1d_init(&m->upsample_m, b, lb_name(n, sizeof n, prefix, "upsample_m"), PF_TOKENS,
                    PF_TOKENS, 2, 2, true);
    if (levels >= 3)
        nn_conv1d_init(&m->upsample_s, b, lb_name(n, sizeof n, prefix, "upsample_s"), PF_TOKENS,
                    PF_TOKENS, 2, 2, true);
}

// xs: l [B,100,512], m [B,100,256], s [B,100,128] (as many as levels), updated in place.
static void pyramid_block_forward(const pyramid_block *m, param_store *s, tensor **xs,
                                  float drop_rate, bool training, rng *r) {
    int mark = ag_scope_begin();
    tensor *l = block_forward(&m->l, s, xs[0], drop_rate, training, r);
    if (m->levels == 1) {
        xs[0] = l;
        ag_scope_end(mark, 3, xs);
        return;
    }
    tensor *md = block_forward(&m->m, s, xs[1], drop_rate, training, r);
    if (m->levels == 3) {
        tensor *sm = block_forward(&m->sm, s, xs[2], drop_rate, training, r);
        // upsample_s acts on s, upsample_m on m (the official names)
        md = op_add(nn_conv1d_forward(&m->upsample_s, s, sm), md);
        xs[2] = sm;
    }
    l = op_add(l, nn_conv1d_forward(&m->upsample_m, s, md));
    xs[0] = l;
    xs[1] = md;
    ag_scope_end(mark, 3, xs);
}

void pyramid_fuse_init(pyramid_fuse *m, layer_builder *b, const char *prefix, int depth,
                       int levels, bool token_mix) {
    char n[160];
    AG_ASSERT(depth >= 1 && levels >= 1 && levels <= 3, "pyramid_fuse: depth %d levels %d",
              depth, levels);
    m->depth = depth;
    m->levels = levels;
    // cls_token: declared and counted, never used (PARAM_UNUSED); both start at 0.
    m->cls_token = lb_add(b, prefix, "cls_token", PARAM_UNUSED, 3, (int[]){1, 1, 512},
                          INIT_CONST, 0.0f, ROLE_EMBED);
    m->pos_embed = lb_add(b, prefix, "pos_embed", b->kind, 3, (int[]){1, PF_IMG, 512},
                          INIT_CONST, 0.0f, ROLE_EMBED);
    if (levels >= 2)
        nn_conv1d_init(&m->downsample_m, b, lb_name(n, sizeof n, prefix, "downsample_m"), PF_TOKENS,
                    PF_TOKENS, 2, 2, false);
    if (levels >= 3)
        nn_conv1d_init(&m->downsample_s, b, lb_name(n, sizeof n, prefix, "downsample_s"), PF_TOKENS,
                    PF_TOKENS, 4, 4, false);
    m->blocks = calloc((size_t)depth, sizeof(pyramid_block));
    m->drop_rate = calloc((size_t)depth, sizeof(float));
    AG_ASSERT(m->blocks && m->drop_rate, "out of memory");
    for (int i = 0; i < depth; i++) {
        snprintf(n, sizeof n, "%s.blocks.%d", prefix, i);
        pyramid_block_init(&m->blocks[i], b, n, levels, token_mix);
    }
    nn_layernorm_init(&m->norm, b, lb_name(n, sizeof n, prefix, "norm"), 512, 1e-6f);
}

void pyramid_fuse_free(pyramid_fuse *m) {
    free(m->blocks);
    free(m->drop_rate);
    m->blocks = NULL;
    m->drop_rate = NULL;
}

// Block i gets linspace(0, rate, depth)[i] (the same in its l, m and s blocks).
void pyramid_fuse_set_drop_path(pyramid_fuse *m, float rate) {
    for (int i = 0; i < m->depth; i++)
        m->drop_rate[i] =
            m->depth == 1 ? 0.0f : (float)((double)rate * i / (double)(m->depth - 1));
}

static tensor *prepend_mean(tensor *x) {   // [B,49,D] -> [B,50,D], token 0 = mean
    tensor *parts[2] = {op_mean(x, 1, true), x};
    return op_concat(parts, 2, 1);
}

tensor *pyramid_fuse_forward(const pyramid_fuse *m, param_store *s, tensor *img, tensor *lm,
                             bool training, rng *r) {
    const int B = img->shape[0];
    int prof = prof_enter("transformer");   // time split (autograd/profile.h)
    tensor *ti = op_add(prepend_mean(img), lb_t(s, m->pos_embed));   // [B,50,512]
    tensor *tl = prepend_mean(lm);                                   // no position embedding
    tensor *parts[2] = {ti, tl};
    tensor *xs[3] = {NULL, NULL, NULL};
    xs[0] = op_concat(parts, 2, 1);                                  // [B,100,512]
    if (m->levels >= 2) xs[1] = nn_conv1d_forward(&m->downsample_m, s, xs[0]);   // [B,100,256]
    if (m->levels >= 3) xs[2] = nn_conv1d_forward(&m->downsample_s, s, xs[0]);   // [B,100,128]
    for (int i = 0; i < m->depth; i++) {
        tensor *old[3] = {xs[0], xs[1], xs[2]};
        pyramid_block_forward(&m->blocks[i], s, xs, m->drop_rate[i], training, r);
        for (int k = 0; k < 3; k++)
            if (old[k]) tensor_drop(old[k]);   // freed unless a backward needs it
    }
    // LayerNorm is per token: normalizing token 0 alone equals norm(l)[:, 0].
    tensor *cls = op_reshape(op_slice(xs[0], 1, 0, 1), 2, (int[]){B, 512});
    tensor *y = nn_layernorm_forward(&m->norm, s, cls);                 // [B,512]
    prof_leave(prof);
    return y;
}
