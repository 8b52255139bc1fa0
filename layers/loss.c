// The configurable training loss (see loss.h).
#include "layers/loss.h"

#include <stdio.h>
#include <string.h>

#include "autograd/ops.h"

static const config_key k_loss[] = {
    {"loss.ls_weight", CK_FLOAT, "2", 0, 100, NULL,
     "weight of the label-smoothing cross-entropy term (official 2)"},
    {"loss.smoothing", CK_FLOAT, "0.2", 0, 1, NULL, "label smoothing of that term (official 0.2)"},
    {"loss.ce_weight", CK_FLOAT, "1", 0, 100, NULL, "weight of the plain cross-entropy term (official 1)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void loss_config_register(config *c) { config_register(c, k_loss); }

void loss_opts_default(loss_opts *o) {
    o->ls_weight = 2.0f;
    o->smoothing = 0.2f;
    o->ce_weight = 1.0f;
}

int loss_opts_from_config(const config *c, loss_opts *o, char *err, size_t errlen) {
    o->ls_weight = (float)config_float(c, "loss.ls_weight");
    o->smoothing = (float)config_float(c, "loss.smoothing");
    o->ce_weight = (float)config_float(c, "loss.ce_weight");
    if (o->ls_weight == 0 && o->ce_weight == 0) {
        snprintf(err, errlen, "loss.ls_weight and loss.ce_weight are both 0: no loss to train");
        return -1;
    }
    return 0;
}

tensor *loss_compute(const loss_opts *o, tensor *logits, const int64_t *target) {
    tensor *loss = NULL;
    if (o->ls_weight != 0) {
        tensor *ls = op_cross_entropy(logits, target, o->smoothing);
        loss = o->ls_weight == 1.0f ? ls : op_scale(ls, o->ls_weight);
    }
    if (o->ce_weight != 0) {
        tensor *ce = op_cross_entropy(logits, target, 0.0f);
        if (o->ce_weight != 1.0f) ce = op_scale(ce, o->ce_weight);
        loss = loss ? op_add(loss, ce) : ce;
    }
    return loss;
}
