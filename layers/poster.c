// The POSTER model: options and config keys, construction of the parameter
// store (official names, shapes and order), initialization, forward, summary,
// and the deterministic test weights shared with tests/reference/poster_ref.py.
#include "layers/poster.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "layers/layers.h"
#include "layers/pretrained.h"

// One landmark-stream forward of a SAM first pass (poster_landmark_reuse).
typedef struct lm_entry {
    int B, threads;
    int64_t nx;      // input floats
    float *x;        // the stream's input [B,3,112,112]
    float *out;      // its output, the tokens [B,49,512]
    bn_trace trace;  // its BatchNorms' batch statistics
} lm_entry;

typedef struct lm_reuse {
    int mode;        // POSTER_LM_*
    int n, cap, next;
    int hits;        // forwards served from the recording since the last RECORD
    lm_entry *e;
    float *w;        // the stream's weights when recorded (every face_landback.*
    int64_t nw;      // tensor but running statistics and counters)
} lm_reuse;

struct poster_model {
    poster_opts o;
    param_store s;
    layer_builder lb;        // per-tensor init rule and role
    mobilefacenet mf;        // face_landback
    ir50 ir;                 // ir_back
    linear ir_layer;
    pyramid_fuse pf;         // pyramid_fuse
    linear se1, se2;         // se_block.linear1/2
    linear head;             // head.linear
    float drop_path_rate;
    lm_reuse lm;             // the landmark stream across SAM's two passes
};

// ---------------------------------------------------------------------------
// Options

static const config_key k_model[] = {
    {"model.depth", CK_INT, "8", 1, 64, NULL, "pyramid blocks: small 4, base 6, large 8"},
    {"model.pyramid_levels", CK_INT, "3", 1, 3, NULL,
     "pyramid levels: 3 (l,m,s, official), 2 (l,m), 1 (l only)"},
    {"model.token_mix", CK_BOOL, "on", 0, 0, NULL,
     "Conv1d(100,100,1) token mixing after each Block (off: the AffectNet variant)"},
    {"model.landmark_bn", CK_ENUM, "batch", 0, 0, "batch|frozen",
     "MobileFaceNet BatchNorms in training: batch statistics + running updates (official "
     "quirk) or frozen running statistics"},
    {"model.streams", CK_ENUM, "both", 0, 0, "both|image_only",
     "image+landmark streams, or image only (landmark tokens = image tokens)"},
    {"model.num_classes", CK_INT, "7", 2, 100000, NULL, "classes of the head"},
    {"model.drop_path_rate", CK_FLOAT, "0.1", 0, 0.99, NULL,
     "stochastic depth: pyramid block i gets linspace(0, rate, depth)[i]"},
    {"model.ir_units", CK_INTLIST, "3,4,14", 1, 64, NULL,
     "IR-50 units per stage (3 stages; body.0 .. body.N-1)"},
    {"model.freeze", CK_STR, "", 0, 0, NULL,
     "comma-separated tensor name prefixes made frozen (e.g. ir_back.)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void poster_config_register(config *c) {
    config_register(c, k_model);
    pretrained_config_register(c);   // model.pretrained_* (layers/pretrained.c)
}

void poster_opts_default(poster_opts *o) {
    memset(o, 0, sizeof(*o));
    o->depth = 8;
    o->pyramid_levels = 3;
    o->token_mix = true;
    o->landmark_bn = LANDMARK_BN_BATCH;
    o->streams = STREAMS_BOTH;
    o->num_classes = 7;
    o->drop_path_rate = 0.1f;
    o->ir_units[0] = 3;
    o->ir_units[1] = 4;
    o->ir_units[2] = 14;
}

static int opts_check(const poster_opts *o, char *err, size_t errlen) {
    if (o->depth < 1 || o->depth > 64)
        return snprintf(err, errlen, "model.depth = %d: expected 1..64", o->depth), -1;
    if (o->pyramid_levels < 1 || o->pyramid_levels > 3)
        return snprintf(err, errlen, "model.pyramid_levels = %d: expected 1, 2 or 3",
                        o->pyramid_levels), -1;
    if (o->num_classes < 2)
        return snprintf(err, errlen, "model.num_classes = %d: expected >= 2", o->num_classes),
               -1;
    if (!(o->drop_path_rate >= 0.0f && o->drop_path_rate < 1.0f))
        return snprintf(err, errlen, "model.drop_path_rate = %g: expected [0, 1)",
                        (double)o->drop_path_rate), -1;
    for (int i = 0; i < 3; i++)
        if (o->ir_units[i] < 1 || o->ir_units[i] > 64)
            return snprintf(err, errlen, "model.ir_units: stage %d has %d units (1..64)", i + 1,
                            o->ir_units[i]), -1;
    if (o->landmark_bn != LANDMARK_BN_BATCH && o->landmark_bn != LANDMARK_BN_FROZEN)
        return snprintf(err, errlen, "model.landmark_bn: bad value %d", o->landmark_bn), -1;
    if (o->streams != STREAMS_BOTH && o->streams != STREAMS_IMAGE_ONLY)
        return snprintf(err, errlen, "model.streams: bad value %d", o->streams), -1;
    return 0;
}

int poster_opts_from_config(const config *c, poster_opts *o, char *err, size_t errlen) {
    poster_opts_default(o);
    o->depth = (int)config_int(c, "model.depth");
    o->pyramid_levels = (int)config_int(c, "model.pyramid_levels");
    o->token_mix = config_bool(c, "model.token_mix");
    o->landmark_bn = strcmp(config_str(c, "model.landmark_bn"), "frozen") ? LANDMARK_BN_BATCH
                                                                          : LANDMARK_BN_FROZEN;
    o->streams = strcmp(config_str(c, "model.streams"), "image_only") ? STREAMS_BOTH
                                                                      : STREAMS_IMAGE_ONLY;
    o->num_classes = (int)config_int(c, "model.num_classes");
    o->drop_path_rate = (float)config_float(c, "model.drop_path_rate");
    int units[8];
    int n = config_intlist(c, "model.ir_units", units, 8);
    if (n != 3) {
        snprintf(err, errlen, "model.ir_units = '%s': expected 3 comma-separated counts (one "
                 "per IR-50 stage), got %d", config_str(c, "model.ir_units"), n);
        return -1;
    }
    memcpy(o->ir_units, units, sizeof o->ir_units);
    const char *fr = config_str(c, "model.freeze");
    if (strlen(fr) >= sizeof o->freeze) {
        snprintf(err, errlen, "model.freeze is too long (%zu characters, at most %zu)",
                 strlen(fr), sizeof o->freeze - 1);
        return -1;
    }
    snprintf(o->freeze, sizeof o->freeze, "%s", fr);
    return opts_check(o, err, errlen);
}

void poster_opts_text(const poster_opts *o, char *buf, size_t n) {
    int k = snprintf(buf, n,
                     "depth=%d pyramid_levels=%d token_mix=%s landmark_bn=%s streams=%s "
                     "num_classes=%d ir_units=%d,%d,%d drop_path_rate=%g",
                     o->depth, o->pyramid_levels, o->token_mix ? "on" : "off",
                     o->landmark_bn == LANDMARK_BN_FROZEN ? "frozen" : "batch",
                     o->streams == STREAMS_IMAGE_ONLY ? "image" : "both", o->num_classes,
                     o->ir_units[0], o->ir_units[1], o->ir_units[2], (double)o->drop_path_rate);
    if (o->freeze[0] && k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, " freeze=%s", o->freeze);
}

int poster_opts_from_text(const char *text, poster_opts *o, char *err, size_t errlen) {
    poster_opts_default(o);
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t' && *e != '\n') e++;
        char item[600];
        size_t len = (size_t)(e - p);
        if (len >= sizeof item) return snprintf(err, errlen, "model options: item too long"), -1;
        memcpy(item, p, len);
        item[len] = 0;
        p = e;
        char *eq = strchr(item, '=');
        if (!eq) return snprintf(err, errlen, "model options: '%s' is not key=value", item), -1;
        *eq = 0;
        const char *k = item, *v = eq + 1;
        char *end = NULL;
        bool ok = true;
        if (!strcmp(k, "depth")) o->depth = (int)strtol(v, &end, 10), ok = *end == 0;
        else if (!strcmp(k, "pyramid_levels")) o->pyramid_levels = (int)strtol(v, &end, 10), ok = *end == 0;
        else if (!strcmp(k, "num_classes")) o->num_classes = (int)strtol(v, &end, 10), ok = *end == 0;
        else if (!strcmp(k, "drop_path_rate")) o->drop_path_rate = strtof(v, &end), ok = *end == 0;
        else if (!strcmp(k, "token_mix")) {
            ok = !strcmp(v, "on") || !strcmp(v, "off");
            o->token_mix = !strcmp(v, "on");
        } else if (!strcmp(k, "landmark_bn")) {
            ok = !strcmp(v, "batch") || !strcmp(v, "frozen");
            o->landmark_bn = !strcmp(v, "frozen") ? LANDMARK_BN_FROZEN : LANDMARK_BN_BATCH;
        } else if (!strcmp(k, "streams")) {
            ok = !strcmp(v, "both") || !strcmp(v, "image") || !strcmp(v, "image_only");
            o->streams = strcmp(v, "both") ? STREAMS_IMAGE_ONLY : STREAMS_BOTH;
        } else if (!strcmp(k, "ir_units")) {
            int a, b, c, used = 0;
            ok = sscanf(v, "%d,%d,%d%n", &a, &b, &c, &used) == 3 && v[used] == 0;
            if (ok) o->ir_units[0] = a, o->ir_units[1] = b, o->ir_units[2] = c;
        } else if (!strcmp(k, "freeze")) {
            ok = strlen(v) < sizeof o->freeze;
            if (ok) snprintf(o->freeze, sizeof o->freeze, "%s", v);
        } else {
            return snprintf(err, errlen, "model options: unknown key '%s'", k), -1;
        }
        if (!ok) return snprintf(err, errlen, "model options: bad value '%s' for %s", v, k), -1;
    }
    return opts_check(o, err, errlen);
}

// ---------------------------------------------------------------------------
// Construction

static bool has_prefix(const char *s, const char *p, size_t n) { return strncmp(s, p, n) == 0; }

// model.freeze: every listed prefix must name at least one tensor.
static int apply_freeze(param_store *s, const char *list, char *err, size_t errlen) {
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',') e++;
        size_t n = (size_t)(e - p);
        while (n > 0 && p[n - 1] == ' ') n--;
        int hits = 0;
        for (int i = 0; i < s->n; i++) {
            param *q = &s->params[i];
            if (!has_prefix(q->name, p, n)) continue;
            hits++;
            if (q->kind == PARAM_TRAINABLE || q->kind == PARAM_UNUSED) q->kind = PARAM_FROZEN;
        }
        if (!hits) {
            snprintf(err, errlen, "model.freeze: prefix '%.*s' matches no tensor of the model "
                     "(e.g. 'ir_back.', 'pyramid_fuse.blocks.0.')", (int)n, p);
            return -1;
        }
        p = e;
    }
    return 0;
}

poster_model *poster_create(const poster_opts *o, uint64_t seed, char *err, size_t errlen) {
    if (opts_check(o, err, errlen)) return NULL;
    poster_model *m = calloc(1, sizeof(*m));
    AG_ASSERT(m != NULL, "out of memory");
    m->o = *o;
    store_init(&m->s);
    layer_builder *b = &m->lb;
    lb_init(b, &m->s);

    // Landmark stream: frozen; MobileFaceNet's own init (kaiming normal, fan_out).
    b->kind = PARAM_FROZEN;
    b->kaiming_fan_out = true;
    mobilefacenet_init(&m->mf, b, "face_landback");
    b->kind = PARAM_TRAINABLE;
    b->kaiming_fan_out = false;
    ir50_init(&m->ir, b, "ir_back", o->ir_units);
    nn_linear_init(&m->ir_layer, b, "ir_layer", 1024, 512, true);
    pyramid_fuse_init(&m->pf, b, "pyramid_fuse", o->depth, o->pyramid_levels, o->token_mix);
    nn_linear_init(&m->se1, b, "se_block.linear1", 512, 512, true);
    nn_linear_init(&m->se2, b, "se_block.linear2", 512, 512, true);
    nn_linear_init(&m->head, b, "head.linear", 512, o->num_classes, true);

    if (apply_freeze(&m->s, o->freeze, err, errlen)) {
        poster_free(m);
        return NULL;
    }
    store_finalize(&m->s);
    rng r;
    rng_seed(&r, seed);
    lb_apply_init(b, &r);
    poster_set_drop_path(m, o->drop_path_rate);
    return m;
}

// ---------------------------------------------------------------------------
// The landmark stream across SAM's two passes

static bool lm_weight(const param *p) {
    return !strncmp(p->name, "face_landback.", 14) && p->kind != PARAM_BUFFER &&
           p->kind != PARAM_COUNTER;
}

// Copies the stream's weights into dst (NULL: counts them).
static int64_t lm_weights(const param_store *s, float *dst) {
    int64_t n = 0;
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (!lm_weight(p)) continue;
        if (dst) memcpy(dst + n, p->t.data, (size_t)p->numel * sizeof(float));
        n += p->numel;
    }
    return n;
}

static bool lm_weights_same(const param_store *s, const float *w) {
    int64_t n = 0;
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (!lm_weight(p)) continue;
        if (memcmp(w + n, p->t.data, (size_t)p->numel * sizeof(float))) return false;
        n += p->numel;
    }
    return true;
}

// Forgets the recorded entries; their input and output buffers stay for the
// next recording (a warm training step allocates nothing big), freed with free_all.
static void lm_clear(lm_reuse *l, bool free_all) {
    for (int i = 0; i < (free_all ? l->cap : l->n); i++) {
        bn_trace_clear(&l->e[i].trace);
        if (free_all) {
            free(l->e[i].x);
            free(l->e[i].out);
        }
    }
    l->n = 0;
    l->next = 0;
    if (free_all) {
        free(l->e);
        free(l->w);
        l->e = NULL;
        l->w = NULL;
        l->cap = 0;
    }
}

void poster_landmark_reuse(poster_model *m, int mode) {
    AG_ASSERT(mode == POSTER_LM_OFF || mode == POSTER_LM_RECORD || mode == POSTER_LM_REPLAY,
              "poster_landmark_reuse: mode %d", mode);
    lm_reuse *l = &m->lm;
    if (mode == POSTER_LM_RECORD) {
        lm_clear(l, false);
        if (!l->w) {
            l->nw = lm_weights(&m->s, NULL);
            l->w = malloc((size_t)(l->nw ? l->nw : 1) * sizeof(float));
            AG_ASSERT(l->w != NULL, "out of memory");
        }
        lm_weights(&m->s, l->w);
        l->hits = 0;
    }
    l->next = 0;
    l->mode = mode;
}

int poster_landmark_reuse_hits(const poster_model *m) { return m->lm.hits; }

// The landmark tokens [B,49,512] of x [B,3,112,112]: the stream run (and, in
// RECORD mode, kept), or in REPLAY mode the next recorded entry's when it is
// for the same input, batch, threads and weights (its BatchNorm updates
// applied once more), else the stream run again.
static tensor *landmark_tokens(poster_model *m, tensor *x, bool bn_train) {
    lm_reuse *l = &m->lm;
    const int B = x->shape[0];
    if (l->mode == POSTER_LM_REPLAY && bn_train && l->next < l->n) {
        lm_entry *e = &l->e[l->next++];
        if (e->B == B && e->threads == ops_threads() && e->nx == x->numel &&
            !memcmp(e->x, x->data, (size_t)x->numel * sizeof(float)) &&
            lm_weights_same(&m->s, l->w)) {
            bn_trace_replay(&e->trace, &m->s);
            l->hits++;
            return tensor_from(3, (int[]){B, 49, 512}, e->out);
        }
    }
    bool rec = l->mode == POSTER_LM_RECORD && bn_train;
    lm_entry *e = NULL;
    if (rec) {
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 8;
            l->e = realloc(l->e, (size_t)cap * sizeof *l->e);
            AG_ASSERT(l->e != NULL, "out of memory");
            memset(l->e + l->cap, 0, (size_t)(cap - l->cap) * sizeof *l->e);
            l->cap = cap;
        }
        e = &l->e[l->n++];
    }
    tensor *f = mobilefacenet_forward(&m->mf, &m->s, x, bn_train, e ? &e->trace : NULL);
    tensor *lm = op_transpose(op_reshape(f, 3, (int[]){B, 512, 49}), 1, 2);   // [B,49,512]
    tensor_drop(f);
    if (e) {
        if (e->nx != x->numel || e->B != B) {   // (re)sized buffers: x and out grow together
            free(e->x);
            free(e->out);
            e->x = malloc((size_t)x->numel * sizeof(float));
            e->out = malloc((size_t)lm->numel * sizeof(float));
            AG_ASSERT(e->x && e->out, "out of memory");
        }
        e->B = B;
        e->threads = ops_threads();
        e->nx = x->numel;
        memcpy(e->x, x->data, (size_t)x->numel * sizeof(float));
        memcpy(e->out, lm->data, (size_t)lm->numel * sizeof(float));
    }
    return lm;
}

void poster_free(poster_model *m) {
    if (!m) return;
    lm_clear(&m->lm, true);
    ir50_free(&m->ir);
    pyramid_fuse_free(&m->pf);
    lb_free(&m->lb);
    store_free(&m->s);
    free(m);
}

param_store *poster_store(poster_model *m) { return &m->s; }
const poster_opts *poster_options(const poster_model *m) { return &m->o; }

void poster_set_drop_path(poster_model *m, float rate) {
    AG_ASSERT(rate >= 0.0f && rate < 1.0f, "drop path rate %g", (double)rate);
    m->drop_path_rate = rate;
    pyramid_fuse_set_drop_path(&m->pf, rate);
}

int poster_param_role(const poster_model *m, int idx) {
    AG_ASSERT(idx >= 0 && idx < m->s.n, "param index %d", idx);
    return m->lb.init[idx].role;
}

// ---------------------------------------------------------------------------
// Forward

tensor *poster_forward(poster_model *m, tensor *x, bool training, rng *r) {
    param_store *s = &m->s;
    AG_ASSERT(x->ndim == 4 && x->shape[1] == 3 &&
                  ((x->shape[2] == 224 && x->shape[3] == 224) ||
                   (x->shape[2] == 112 && x->shape[3] == 112)),
              "poster_forward: input must be [B,3,224,224] or [B,3,112,112]");
    const int B = x->shape[0];
    // Everything made here but the logits is dropped at the end: it is freed
    // then, or as soon as the last backward reading it has run.
    int mark = ag_scope_begin();
    tensor *const x_in = x;   // the caller's: read again after this call (TTA, tests)
    if (x->shape[2] == 224) x = op_subsample(x, 2);   // F.interpolate nearest: pixel (2i, 2j)

    int prof = prof_enter("ir50");   // time split (autograd/profile.h); free when off
    tensor *t = ir50_forward(&m->ir, s, x, training);                 // [B,256,14,14]
    t = op_reshape(t, 3, (int[]){B, 49, 1024});                       // raw memory order
    tensor *img = nn_linear_forward(&m->ir_layer, s, t);                 // [B,49,512]
    prof_leave(prof);
    tensor_drop(t);

    tensor *lm = img;
    if (m->o.streams == STREAMS_BOTH) {
        // Frozen stream: no tape (its output needs no gradient), but in training
        // its BatchNorms may still use batch statistics (landmark_bn = batch).
        bool prev = ag_no_grad_begin();
        prof = prof_enter("mobilefacenet");
        lm = landmark_tokens(m, x, training && m->o.landmark_bn == LANDMARK_BN_BATCH);
        prof_leave(prof);
        ag_no_grad_end(prev);
    }
    if (x != x_in) tensor_drop(x);   // only our subsampled copy; never the caller's input
    int pmark = ag_scope_begin();
    tensor *y = pyramid_fuse_forward(&m->pf, s, img, lm, training, r);  // [B,512]
    ag_scope_keep(pmark, y);
    prof = prof_enter("head");
    tensor *g = nn_linear_forward(&m->se2, s, op_relu(nn_linear_forward(&m->se1, s, y)));
    y = op_mul(y, op_sigmoid(g));
    y = ag_scope_keep(mark, nn_linear_forward(&m->head, s, y));          // [B,K]
    prof_leave(prof);
    return y;
}

// ---------------------------------------------------------------------------
// Summary

const char *poster_fmt_count(int64_t v, char *buf, size_t n) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v));
    size_t len = strlen(tmp), o = 0;
    char out[48];
    if (v < 0) out[o++] = '-';
    for (size_t i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0) out[o++] = ',';
        out[o++] = tmp[i];
    }
    out[o] = 0;
    snprintf(buf, n, "%s", out);
    return buf;
}

// Floats of parameters (not buffers) whose name starts with prefix.
static int64_t count_prefix(const param_store *s, const char *prefix, int kind) {
    int64_t n = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < s->n; i++) {
        const param *p = &s->params[i];
        if (p->kind == PARAM_BUFFER || p->kind == PARAM_COUNTER) continue;
        if (kind >= 0 && (int)p->kind != kind) continue;
        if (!strncmp(p->name, prefix, pl)) n += p->numel;
    }
    return n;
}

void poster_print_summary(poster_model *m, FILE *f) {
    const poster_opts *o = &m->o;
    const param_store *s = &m->s;
    char opt[700], a[32], b2[32], c[32], d[32];
    poster_opts_text(o, opt, sizeof opt);
#define FC(v, buf) poster_fmt_count(v, buf, sizeof buf)
    fprintf(f, "POSTER (%s)\n", opt);
    fprintf(f, "  input [B,3,224,224] -> nearest -> [B,3,112,112]\n");
    fprintf(f, "  %-26s %14s  %s\n", "module", "parameters", "");
    fprintf(f, "  %-26s %14s  MobileFaceNet -> [B,512,7,7] -> tokens [B,49,512]; %s; BN %s\n",
            "face_landback", FC(count_prefix(s, "face_landback.", -1), a),
            o->streams == STREAMS_BOTH ? "frozen, no gradient" : "NOT RUN (streams=image_only)",
            o->landmark_bn == LANDMARK_BN_BATCH ? "batch statistics in training" : "frozen");
    fprintf(f, "  %-26s %14s  GDC head, loaded, never computed\n", "  .output_layer",
            FC(count_prefix(s, "face_landback.output_layer.", -1), a));
    fprintf(f, "  %-26s %14s  IR-50 stages %d,%d,%d (body.0..body.%d) -> [B,256,14,14] -> "
            "[B,49,1024]\n", "ir_back", FC(count_prefix(s, "ir_back.", -1), a), o->ir_units[0],
            o->ir_units[1], o->ir_units[2], m->ir.n_units - 1);
    fprintf(f, "  %-26s %14s  declared, never computed\n", "  .output_layer",
            FC(count_prefix(s, "ir_back.output_layer.", -1), a));
    fprintf(f, "  %-26s %14s  Linear(1024, 512) -> image tokens [B,49,512]\n", "ir_layer",
            FC(count_prefix(s, "ir_layer.", -1), a));
    fprintf(f, "  %-26s %14s  depth %d, levels %s, token_mix %s, drop path linspace(0, %g)\n",
            "pyramid_fuse", FC(count_prefix(s, "pyramid_fuse.", -1), a), o->depth,
            o->pyramid_levels == 3 ? "l,m,s" : o->pyramid_levels == 2 ? "l,m" : "l",
            o->token_mix ? "on" : "off", (double)m->drop_path_rate);
    fprintf(f, "  %-26s %14s  [1,50,512] + cls_token [1,1,512] (unused)\n", "  .pos_embed",
            FC(count_prefix(s, "pyramid_fuse.pos_embed", -1) +
                   count_prefix(s, "pyramid_fuse.cls_token", -1), a));
    if (o->pyramid_levels >= 2)
        fprintf(f, "  %-26s %14s  Conv1d over the embedding axis: 512 -> 256%s\n",
                "  .downsample_m/_s",
                FC(count_prefix(s, "pyramid_fuse.downsample_", -1), a),
                o->pyramid_levels == 3 ? ", 128" : "");
    char pre[64];
    snprintf(pre, sizeof pre, "pyramid_fuse.blocks.0.");
    fprintf(f, "  %-26s %14s  each: block_l (512)", "  .blocks.0..", FC(count_prefix(s, pre, -1), a));
    snprintf(pre, sizeof pre, "pyramid_fuse.blocks.0.block_l.");
    fprintf(f, " %s", FC(count_prefix(s, pre, -1), a));
    if (o->pyramid_levels >= 2) {
        snprintf(pre, sizeof pre, "pyramid_fuse.blocks.0.block_m.");
        fprintf(f, ", block_m (256) %s", FC(count_prefix(s, pre, -1), a));
    }
    if (o->pyramid_levels >= 3) {
        snprintf(pre, sizeof pre, "pyramid_fuse.blocks.0.block_s.");
        fprintf(f, ", block_s (128) %s", FC(count_prefix(s, pre, -1), a));
    }
    if (o->pyramid_levels >= 2)
        fprintf(f, ", upsample %s", FC(count_prefix(s, "pyramid_fuse.blocks.0.upsample_", -1), a));
    fprintf(f, "\n");
    fprintf(f, "  %-26s %14s  y * sigmoid(linear2(relu(linear1(y))))\n", "se_block",
            FC(count_prefix(s, "se_block.", -1), a));
    fprintf(f, "  %-26s %14s  Linear(512, %d) -> logits\n", "head",
            FC(count_prefix(s, "head.", -1), a), o->num_classes);
    int64_t tr = store_count(s, PARAM_TRAINABLE), un = store_count(s, PARAM_UNUSED);
    int64_t fr = store_count(s, PARAM_FROZEN);
    int64_t bufs = store_count(s, PARAM_BUFFER);
    int ncount = 0;
    for (int i = 0; i < s->n; i++) ncount += s->params[i].kind == PARAM_COUNTER;
    fprintf(f, "trainable parameters: %s (with gradient %s, declared but unused %s)\n",
            FC(tr + un, a), FC(tr, b2), FC(un, c));
    fprintf(f, "frozen parameters:    %s\n", FC(fr, a));
    fprintf(f, "total parameters:     %s\n", FC(tr + un + fr, a));
    fprintf(f, "buffers:              %s BatchNorm running statistics, %d counters; %d tensors "
            "in the state (%s floats)\n", FC(bufs, a), ncount, s->n, FC(s->n_float, d));
#undef FC
}

// ---------------------------------------------------------------------------
// Deterministic weights (the contract with tests/reference/poster_ref.py)


// u_i in [-1, 1): ((splitmix64(h + i) >> 40) / 2^24) * 2 - 1, exact in double.
double poster_contract_u(const char *name, int64_t i) {
    uint64_t h = hash_fnv1a64(name);
    return (double)(splitmix64(h + (uint64_t)i) >> 40) / 16777216.0 * 2.0 - 1.0;
}

void poster_contract_fill(const char *name, int role, float scale_in, float *out, int64_t n,
                          double fan_in) {
    uint64_t h = hash_fnv1a64(name);
    double inv_fan = fan_in > 0 ? 1.0 / sqrt(fan_in) : 1.0;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(h + (uint64_t)i) >> 40) / 16777216.0 * 2.0 - 1.0;
        double v;
        switch (role) {
        case ROLE_RUNNING_VAR: v = 1.0 + 0.25 * (u + 1.0); break;
        case ROLE_RUNNING_MEAN: v = 0.1 * u; break;
        case ROLE_NORM_WEIGHT: v = 1.0 + 0.1 * u; break;
        case ROLE_PRELU_WEIGHT: v = 0.25 + 0.05 * u; break;
        case ROLE_BIAS: v = 0.1 * u; break;
        case ROLE_EMBED: v = 0.02 * u; break;
        case ROLE_WEIGHT: v = u * inv_fan; break;
        default: v = (double)scale_in * u;   // inputs: scale * u
        }
        out[i] = (float)v;
    }
}

// Role by name (docs/POSTER.md, "Deterministic test weights", the role table; the same
// rules as poster_ref.tensor_roles, which decides by module type). Resolved:
// every `.bias` is 0.1*u, BatchNorm/LayerNorm biases included; the PReLU
// weights are *.prelu.weight, ir_back.input_layer.2.weight and
// ir_back.body.N.res_layer.2.weight; every other ndim-1 weight is a norm weight.
int poster_contract_role(const char *name, int ndim) {
    const char *dot = strrchr(name, '.');
    const char *leaf = dot ? dot + 1 : name;
    if (!strcmp(leaf, "num_batches_tracked")) return ROLE_COUNT;
    if (!strcmp(leaf, "running_var")) return ROLE_RUNNING_VAR;
    if (!strcmp(leaf, "running_mean")) return ROLE_RUNNING_MEAN;
    if (!strcmp(leaf, "pos_embed") || !strcmp(leaf, "cls_token")) return ROLE_EMBED;
    if (!strcmp(leaf, "bias")) return ROLE_BIAS;
    if (ndim >= 2) return ROLE_WEIGHT;
    size_t n = strlen(name);
    const char *suffix = ".prelu.weight";
    if (n >= strlen(suffix) && !strcmp(name + n - strlen(suffix), suffix)) return ROLE_PRELU_WEIGHT;
    if (!strcmp(name, "ir_back.input_layer.2.weight")) return ROLE_PRELU_WEIGHT;
    int unit, used = 0;
    if (sscanf(name, "ir_back.body.%d.res_layer.2.weight%n", &unit, &used) == 1 && used == (int)n)
        return ROLE_PRELU_WEIGHT;
    return ROLE_NORM_WEIGHT;
}

void poster_fill_deterministic(param_store *s) {
    AG_ASSERT(s->finalized, "poster_fill_deterministic before store_finalize");
    for (int i = 0; i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind == PARAM_COUNTER) {
            *p->counter = 0;
            continue;
        }
        int role = poster_contract_role(p->name, p->ndim);
        // fan_in = prod(shape[1:]); for ConvTranspose1d [Cin, Cout, k] that is Cout * k.
        double fan = 1.0;
        for (int d = 1; d < p->ndim; d++) fan *= p->shape[d];
        poster_contract_fill(p->name, role, 1.0f, p->t.data, p->numel, fan);
    }
}

void poster_contract_input(float *out, int64_t n, const char *name, float scale) {
    poster_contract_fill(name, -1, scale, out, n, 0);
}

float poster_block_drop_rate(const poster_model *m, int i) {
    AG_ASSERT(i >= 0 && i < m->pf.depth, "block %d of %d", i, m->pf.depth);
    return m->pf.drop_rate[i];
}
