// Test-time augmentation (see tta.h).
#include "eval/tta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"

static const config_key k_tta[] = {
    {"eval.tta", CK_ENUM, "off", 0, 0, "off|flip",
     "test-time augmentation in poster eval/predict: flip = mean softmax of the image and its "
     "horizontal flip"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void tta_config_register(config *c) { config_register(c, k_tta); }

int tta_from_config(const config *c) {
    return strcmp(config_str(c, "eval.tta"), "flip") ? TTA_OFF : TTA_FLIP;
}

// softmax of the model's logits on x into out [n, K]
static void softmax_of(poster_model *m, tensor *x, float *out) {
    tensor *z = poster_forward(m, x, false, NULL);   // [n, K]
    tensor *p = op_softmax(z);
    memcpy(out, p->data, (size_t)p->numel * sizeof(float));
}

void tta_probs(poster_model *m, const tensor *x, int tta, float *probs) {
    AG_ASSERT(x->ndim == 4, "tta_probs: [n, 3, S, S] input");
    const int n = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int K = poster_options(m)->num_classes;
    bool prev = ag_no_grad_begin();
    softmax_of(m, (tensor *)x, probs);
    if (tta == TTA_FLIP) {
        tensor *f = tensor_new(4, (int[]){n, C, H, W});   // x[..., ::-1]
        for (int64_t r = 0; r < (int64_t)n * C * H; r++) {
            const float *src = x->data + r * W;
            float *dst = f->data + r * W;
            for (int j = 0; j < W; j++) dst[j] = src[W - 1 - j];
        }
        float *q = malloc((size_t)n * K * sizeof(float));
        AG_ASSERT(q != NULL, "out of memory");
        softmax_of(m, f, q);
        for (int64_t i = 0; i < (int64_t)n * K; i++) probs[i] = (probs[i] + q[i]) * 0.5f;
        free(q);
    }
    ag_no_grad_end(prev);
}

tensor *tta_log_probs(poster_model *m, const tensor *x, int tta) {
    const int n = x->shape[0], K = poster_options(m)->num_classes;
    tensor *t = tensor_new(2, (int[]){n, K});
    tta_probs(m, x, tta, t->data);
    // A probability that underflowed to 0 becomes a large negative finite number,
    // so the loss stays finite.
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = logf(fmaxf(t->data[i], 1e-30f));
    return t;
}
