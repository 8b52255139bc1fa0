// Pretrained backbones and official POSTER checkpoints (layers/pretrained.h).
#include "layers/pretrained.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include "common/pth_read.h"
#include "layers/weights.h"

static const config_key k_pretrained[] = {
    {"model.pretrained_ir50", CK_STR, "", 0, 0, NULL,
     "IR-50 face-recognition weights (ir50.pth or its `poster import` .h5) loaded into "
     "ir_back. by name and shape at the start of a fresh run; empty: none"},
    {"model.pretrained_mobilefacenet", CK_STR, "", 0, 0, NULL,
     "MobileFaceNet landmark weights (mobilefacenet_model_best.pth.tar or .h5) loaded into "
     "face_landback. by name and shape at the start of a fresh run; empty: none"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

void pretrained_config_register(config *c) { config_register(c, k_pretrained); }

// true when every tensor name of st starts with prefix (the file already has it).
static bool all_prefixed(const pth_state *st, const char *prefix) {
    size_t n = strlen(prefix);
    if (st->n == 0) return false;
    for (int i = 0; i < st->n; i++)
        if (strncmp(st->t[i].name, prefix, n)) return false;
    return true;
}

static int load_one(param_store *s, const char *key, const char *path, const char *prefix,
                    state_report *rep, FILE *log, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(err, errlen, "%s = %s: %s (download the file, or leave the key empty to start "
                 "from random weights)", key, path, strerror(errno));
        return -1;
    }
    char e2[1536];
    pth_state *st = pth_load(path, e2, sizeof e2);
    if (!st) {
        snprintf(err, errlen, "%s: %s", key, e2);
        return -1;
    }
    const char *pre = all_prefixed(st, prefix) ? "" : prefix;
    if (log)
        fprintf(log, "%s: %s (%s, %d tensors, state dict at %s%s%s)\n", key, path, st->format,
                st->n, st->where, st->stripped ? ", 'module.' stripped" : "",
                st->renamed ? ", MobileFaceNet conv_k.model.<i> names mapped" : "");
    int rc = weights_from_state(s, st, path, pre, false, rep, log, e2, sizeof e2);
    // state_report counts missing under the prefix; with a prefixed file pre is
    // "" and everything else in the model would count: recount under prefix.
    if (!rc && !pre[0]) {
        int missing = 0;
        size_t n = strlen(prefix);
        for (int j = 0; j < s->n; j++) {
            if (strncmp(s->params[j].name, prefix, n)) continue;
            if (!pth_find(st, s->params[j].name)) missing++;
        }
        rep->missing = missing;
    }
    pth_free(st);
    if (rc) {
        snprintf(err, errlen, "%s: %s", key, e2);
        return -1;
    }
    if (log)
        fprintf(log, "%s: load_weight %d matched into %s, %d missing, %d unexpected, "
                "%d misshaped\n", key, rep->matched, prefix, rep->missing, rep->unexpected,
                rep->misshaped);
    return 0;
}

int poster_load_pretrained(poster_model *m, const config *c, struct state_report *rep,
                           FILE *log, char *err, size_t errlen) {
    static const char *const keys[2] = {"model.pretrained_ir50", "model.pretrained_mobilefacenet"};
    static const char *const prefixes[2] = {"ir_back.", "face_landback."};
    state_report local[2];
    if (!rep) rep = local;
    memset(rep, 0, 2 * sizeof *rep);
    param_store *s = poster_store(m);
    for (int k = 0; k < 2; k++) {
        const char *path = config_str(c, keys[k]);
        if (!path[0]) {
            if (log)
                fprintf(log, "%s is not set: %s starts from random initialization (the paper's "
                        "results use the pretrained backbone)\n", keys[k], prefixes[k]);
            continue;
        }
        if (load_one(s, keys[k], path, prefixes[k], &rep[k], log, err, errlen)) return -1;
        if (k == 1 && rep[k].missing && log)   // the landmark stream is frozen: never trained
            fprintf(log, "warning: %d face_landback tensors were not in %s; the frozen landmark "
                    "stream keeps their random initialization\n", rep[k].missing, path);
    }
    return 0;
}

int poster_load_pth_strict(param_store *s, const char *path, FILE *log, char *err,
                           size_t errlen) {
    char e2[1536];
    pth_state *st = pth_load(path, e2, sizeof e2);
    if (!st) {
        snprintf(err, errlen, "%s", e2);
        return -1;
    }
    state_report rep;
    int rc = weights_from_state(s, st, path, "", false, &rep, NULL, e2, sizeof e2);
    if (rc) snprintf(err, errlen, "%s", e2);
    else if (rep.missing || rep.unexpected || rep.misshaped) {
        snprintf(err, errlen, "%s: does not fit the configured model (%d tensors matched, %d "
                 "missing, %d unexpected, %d misshaped; first: %s); check --config's model "
                 "keys against the checkpoint", path, rep.matched, rep.missing, rep.unexpected,
                 rep.misshaped, rep.first_problem);
        rc = -1;
    } else if (log) {
        fprintf(log, "loaded %s (PyTorch %s checkpoint, state dict at %s): %d tensors matched",
                path, st->format, st->where, rep.matched);
        if (st->stripped) fprintf(log, ", 'module.' stripped from %d names", st->stripped);
        if (st->renamed) fprintf(log, ", %d MobileFaceNet names mapped", st->renamed);
        fprintf(log, "\n");
        if (st->notes[0]) fprintf(log, "%s", st->notes);
    }
    pth_free(st);
    return rc;
}
