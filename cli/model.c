// `poster info` (architecture and parameter counts) and `poster forward` (one
// forward, optionally backward, of given weights on given inputs: the bridge
// to the PyTorch comparison in tools/check_torch.sh).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "autograd/ops.h"
#include "layers/poster.h"
#include "layers/state_io.h"
#include "layers/weights.h"
#include "cli/cli.h"
#include "layers/loss.h"

// Only the model.* and loss.* keys matter here; a full training recipe may be
// given, its other sections are ignored (the training commands check them).
static int model_config(config *out, int argc, char **argv, char **rest, int *nrest, char *err,
                        size_t errlen) {
    static config all;   // large: keep it off the stack
    config_init(&all);
    poster_config_register(&all);
    loss_config_register(&all);
    if (config_from_args(&all, argc, argv, rest, nrest, err, errlen)) return -1;
    config_init(out);
    poster_config_register(out);
    loss_config_register(out);
    snprintf(out->path, sizeof out->path, "%s", all.path);
    for (int i = 0; i < all.n; i++)
        if (!strncmp(all.entries[i].key, "model.", 6) || !strncmp(all.entries[i].key, "loss.", 5))
            out->entries[out->n++] = all.entries[i];
    return config_validate(out, err, errlen);
}

static bool wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    return false;
}

// ---------------------------------------------------------------------------
// info

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: poster info [--config FILE] [--set model.key=value]...\n\n"
            "Prints the architecture and the trainable, frozen and total parameter counts.\n"
            "Without a config: the official large 7-class model. Model keys:\n");
    config c;
    config_init(&c);
    poster_config_register(&c);
    config_print_keys(&c, f);
}

int cli_info(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        info_usage(stdout);
        return 0;
    }
    static config c;
    char err[2048];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0;
    poster_opts o;
    poster_model *m = NULL;
    int rc = 1;
    if (model_config(&c, argc, argv, rest, &nrest, err, sizeof err) ||
        poster_opts_from_config(&c, &o, err, sizeof err)) {
        fprintf(stderr, "poster info: %s\n", err);
        goto done;
    }
    if (nrest > 1) {
        fprintf(stderr, "poster info: unknown argument '%s'\n\n", rest[1]);
        info_usage(stderr);
        rc = 2;
        goto done;
    }
    m = poster_create(&o, 0, err, sizeof err);
    if (!m) {
        fprintf(stderr, "poster info: %s\n", err);
        goto done;
    }
    poster_print_summary(m, stdout);
    rc = 0;
done:
    poster_free(m);
    free(rest);
    return rc;
}

// ---------------------------------------------------------------------------
// forward

static void forward_usage(FILE *f) {
    fprintf(f,
            "usage: poster forward --weights W.h5 --input IN.h5 --output OUT.h5\n"
            "                      [--config FILE] [--set model.key=value]...\n"
            "                      [--train-mode] [--grad] [--threads N]\n\n"
            "  --weights W.h5   a poster state (group state_dict) or a training checkpoint;\n"
            "                   loaded strictly. Its model_options attribute gives the model\n"
            "                   options that --config/--set do not set.\n"
            "  --input IN.h5    dataset `input` float32 [B,3,224,224] (or [B,3,112,112]);\n"
            "                   with --grad also `target` int64 [B]\n"
            "  --output OUT.h5  gets `logits` [B,K]; with --grad `loss` (the configured loss,\n"
            "                   official 2*LSCE(0.2)+CE) and grad/<name> for every tensor that\n"
            "                   gets a gradient; with --train-mode running/<name> (BatchNorm\n"
            "                   running statistics after the forward)\n"
            "  --train-mode     batch statistics (drop path stays off); default: eval mode\n");
}

static int write_outputs(const char *path, poster_model *m, tensor *logits, tensor *loss,
                         bool grad, bool train, char *err, size_t errlen) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t f = h5_create(tmp, err, errlen);
    if (f < 0) return -1;
    param_store *s = poster_store(m);
    char opt[700];
    poster_opts_text(poster_options(m), opt, sizeof opt);
    int rc = h5_write_attr_str(f, "/", "format", "poster-forward") ||
             h5_write_attr_i64(f, "/", "version", 1) ||
             h5_write_attr_str(f, "/", "model_options", opt) ||
             h5_write_attr_str(f, "/", "mode", train ? "train" : "eval");
    if (rc) snprintf(err, errlen, "%s: cannot write attributes", tmp);
    if (!rc) rc = h5_write_floats(f, "logits", logits->data, 2, logits->shape, err, errlen);
    if (!rc && loss) rc = h5_write_floats(f, "loss", loss->data, 0, NULL, err, errlen);
    for (int i = 0; grad && !rc && i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind != PARAM_TRAINABLE) continue;
        char name[200];
        snprintf(name, sizeof name, "grad/%s", p->name);
        rc = h5_write_floats(f, name, p->t.grad, p->ndim, p->shape, err, errlen);
    }
    for (int i = 0; train && !rc && i < s->n; i++) {
        param *p = &s->params[i];
        if (p->kind != PARAM_BUFFER) continue;
        char name[200];
        snprintf(name, sizeof name, "running/%s", p->name);
        rc = h5_write_floats(f, name, p->t.data, p->ndim, p->shape, err, errlen);
    }
    if (h5_close(f) && !rc) {
        snprintf(err, errlen, "%s: close failed (disk full?)", tmp);
        rc = -1;
    }
    if (!rc) return atomic_commit(tmp, path, err, errlen);
    remove(tmp);
    return -1;
}

// Options: config (file / --set) first; keys it leaves unset come from the
// weights' model_options attribute when present, else the defaults.
static int forward_options(const config *c, const char *weights, poster_opts *o, char *err,
                           size_t errlen) {
    if (poster_opts_from_config(c, o, err, errlen)) return -1;
    hid_t f = h5_open_read(weights, err, errlen);
    if (f < 0) return -1;
    char text[1024] = "";
    int has = h5_read_attr_str(f, "/", "model_options", text, sizeof text) == 0 && text[0];
    h5_close(f);
    if (!has) return 0;
    poster_opts fo;
    char e2[512];
    if (poster_opts_from_text(text, &fo, e2, sizeof e2)) {
        snprintf(err, errlen, "%s: attribute model_options: %s", weights, e2);
        return -1;
    }
#define TAKE(key, field) \
    if (!config_has(c, "model." key)) o->field = fo.field
    TAKE("depth", depth);
    TAKE("pyramid_levels", pyramid_levels);
    TAKE("token_mix", token_mix);
    TAKE("landmark_bn", landmark_bn);
    TAKE("streams", streams);
    TAKE("num_classes", num_classes);
    TAKE("drop_path_rate", drop_path_rate);
    if (!config_has(c, "model.ir_units")) memcpy(o->ir_units, fo.ir_units, sizeof o->ir_units);
    if (!config_has(c, "model.freeze")) memcpy(o->freeze, fo.freeze, sizeof o->freeze);
#undef TAKE
    return 0;
}

int cli_forward(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        forward_usage(stdout);
        return 0;
    }
    static config c;
    char err[4096];
    char **rest = malloc((size_t)(argc + 1) * sizeof(char *));
    int nrest = 0, rc = 1, threads = 0;
    const char *weights = NULL, *input = NULL, *output = NULL;
    bool train = false, grad = false;
    poster_model *m = NULL;
    float *xin = NULL;
    int64_t *target = NULL;
    h5_quiet();
    if (model_config(&c, argc, argv, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    for (int i = 1; i < nrest; i++) {
        const char *a = rest[i];
        if (!strcmp(a, "--train-mode")) train = true;
        else if (!strcmp(a, "--grad")) grad = true;
        else if (i + 1 < nrest && !strcmp(a, "--weights")) weights = rest[++i];
        else if (i + 1 < nrest && !strcmp(a, "--input")) input = rest[++i];
        else if (i + 1 < nrest && !strcmp(a, "--output")) output = rest[++i];
        else if (i + 1 < nrest && !strcmp(a, "--threads")) threads = atoi(rest[++i]);
        else {
            fprintf(stderr, "poster forward: unknown argument or missing value: '%s'\n\n", a);
            forward_usage(stderr);
            rc = 2;
            goto done;
        }
    }
    if (!weights || !input || !output) {
        fprintf(stderr, "poster forward: --weights, --input and --output are required\n\n");
        forward_usage(stderr);
        rc = 2;
        goto done;
    }
    poster_opts o;
    loss_opts lo;
    if (forward_options(&c, weights, &o, err, sizeof err) ||
        loss_opts_from_config(&c, &lo, err, sizeof err)) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    if (threads > 0) ops_set_threads(threads);
    if (!(m = poster_create(&o, 0, err, sizeof err))) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    param_store *s = poster_store(m);
    state_report rep;
    if (weights_load(s, weights, "", true, &rep, NULL, err, sizeof err)) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }

    // Input (and target).
    hid_t fin = h5_open_read(input, err, sizeof err);
    if (fin < 0) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    int nd, sh[T_MAXDIM];
    int r = h5_read_floats(fin, "input", &xin, &nd, sh, err, sizeof err);
    if (!r && !(nd == 4 && sh[0] >= 1 && sh[1] == 3 &&
                ((sh[2] == 224 && sh[3] == 224) || (sh[2] == 112 && sh[3] == 112)))) {
        tensor tmp = {.ndim = nd};
        for (int d = 0; d < nd; d++) tmp.shape[d] = sh[d];
        char sb[96];
        snprintf(err, sizeof err, "%s: dataset 'input' has shape %s, expected [B,3,224,224] or "
                 "[B,3,112,112]", input, tensor_shape_str(&tmp, sb, sizeof sb));
        r = -1;
    }
    const int B = r ? 0 : sh[0], K = o.num_classes;
    if (!r && grad) {
        int tnd, tsh[T_MAXDIM];
        r = h5_read_int64s(fin, "target", &target, &tnd, tsh, err, sizeof err);
        if (!r && !(tnd == 1 && tsh[0] == B)) {
            snprintf(err, sizeof err, "%s: dataset 'target' must be int64 [%d] (one class per "
                     "input), got %d dimensions", input, B, tnd);
            r = -1;
        }
        for (int b = 0; !r && b < B; b++)
            if (target[b] < 0 || target[b] >= K) {
                snprintf(err, sizeof err, "%s: target[%d] = %lld is not a class in [0, %d)",
                         input, b, (long long)target[b], K);
                r = -1;
            }
    }
    h5_close(fin);
    if (r) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    poster_set_drop_path(m, 0.0f);
    tensor *x = tensor_from(nd, sh, xin);
    bool prev = ag_no_grad_begin();
    ag_set_grad_enabled(grad);
    store_zero_grad(s);
    tensor *logits = poster_forward(m, x, train, NULL);
    tensor *loss = NULL;
    if (grad) {
        loss = loss_compute(&lo, logits, target);
        ag_backward(loss);
    }
    ag_no_grad_end(prev);
    if (write_outputs(output, m, logits, loss, grad, train, err, sizeof err)) {
        fprintf(stderr, "poster forward: %s\n", err);
        goto done;
    }
    fprintf(stderr, "poster forward: %s mode, batch %d, %d classes -> %s%s\n",
            train ? "train" : "eval", B, K, output, grad ? " (with loss and gradients)" : "");
    rc = 0;
done:
    ag_step_reset();
    free(xin);
    free(target);
    poster_free(m);
    free(rest);
    return rc;
}
