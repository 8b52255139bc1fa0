// `poster import IN OUT.h5 [--prefix P] [--list]`: converts a PyTorch checkpoint
// (.pth, .pth.tar, .pt; zip or legacy torch.save format) or one of our state
// files to our HDF5 state format (layers/state_io.h: format "poster-state",
// version 1, one dataset per tensor under /state_dict named by its dotted name).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic.h"
#include "common/h5io.h"
#include "cli/cli.h"
#include "common/pth_read.h"
#include "layers/state_io.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: poster import IN.pth OUT.h5 [--prefix PREFIX] [--list]\n"
            "  Converts a PyTorch checkpoint (torch.save: zip or legacy format; a bare state\n"
            "  dict or one under 'state_dict' / 'model_state_dict' / 'model'; 'module.'\n"
            "  stripped) to our HDF5 state format, written atomically.\n"
            "  --prefix P   prepend P to every name, e.g. face_landback. for\n"
            "               mobilefacenet_model_best.pth.tar, ir_back. for ir50.pth\n"
            "  --list       print every tensor's name, shape and type\n");
}

// HDF5 link names: no '/', not "." and printable, so one tensor is one dataset.
static const char *bad_name(const char *name) {
    if (!name[0]) return "empty name";
    if (!strcmp(name, ".")) return "name '.'";
    if (strlen(name) > 400) return "name longer than 400 bytes";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p == '/') return "'/' in the name";
        if (*p < 0x20 || *p == 0x7f) return "control character in the name";
    }
    return NULL;
}

static int write_state(const pth_state *st, const char *out, const char *prefix, char *err,
                       size_t errlen) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", out);
        return -1;
    }
    hid_t f = h5_create(tmp, err, errlen);
    if (f < 0) return -1;
    int rc = 0;
    if (h5_write_attr_str(f, "/", "format", STATE_FORMAT) ||
        h5_write_attr_i64(f, "/", "version", STATE_VERSION)) {
        snprintf(err, errlen, "%.900s: cannot write the format attributes", tmp);
        rc = -1;
    }
    char name[1024];
    for (int i = 0; i < st->n && !rc; i++) {
        const pth_tensor *t = &st->t[i];
        snprintf(name, sizeof name, "state_dict/%s%s", prefix, t->name);
        rc = t->is_int ? h5_write_int64s(f, name, t->i64, t->ndim, t->shape, err, errlen)
                       : h5_write_floats(f, name, t->f32, t->ndim, t->shape, err, errlen);
    }
    if (h5_close(f) && !rc) {
        snprintf(err, errlen, "%.900s: error closing the file", tmp);
        rc = -1;
    }
    if (!rc) return atomic_commit(tmp, out, err, errlen);
    unlink(tmp);
    return rc;
}

int cli_import(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *prefix = "";
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--prefix")) {
            if (++i >= argc) {
                fprintf(stderr, "poster import: --prefix needs a value\n");
                return 2;
            }
            prefix = argv[i];
        } else if (!strncmp(argv[i], "--prefix=", 9)) {
            prefix = argv[i] + 9;
        } else if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "poster import: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            fprintf(stderr, "poster import: too many arguments ('%s')\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    pth_state *st = pth_load(in, err, sizeof err);
    if (!st) {
        fprintf(stderr, "poster import: %s\n", err);
        return 1;
    }
    if (st->notes[0]) {
        for (char *line = st->notes, *nl; *line; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl) break;
            fprintf(stderr, "note: %.*s\n", (int)(nl - line), line);
        }
    }
    int rc = 0;
    char full[1024], shp[128];
    int64_t n_int = 0;
    for (int i = 0; i < st->n && !rc; i++) {
        const pth_tensor *t = &st->t[i];
        snprintf(full, sizeof full, "%s%s", prefix, t->name);
        const char *why = bad_name(full);
        if (why) {
            fprintf(stderr, "poster import: %s: tensor '%s': %s\n", in, full, why);
            rc = 1;
        } else if (t->ndim > T_MAXDIM) {
            fprintf(stderr, "poster import: %s: tensor '%s' has %d dimensions (at most %d)\n", in,
                    full, t->ndim, T_MAXDIM);
            rc = 1;
        }
        if (t->is_int) n_int += t->numel;
        if (list && !rc)
            printf("%-60s %-20s %s\n", full, pth_shape_str(t, shp, sizeof shp),
                   t->is_int ? "int64" : "float32");
    }
    if (!rc && st->n == 0) {
        fprintf(stderr, "poster import: %s: the state dict (%s) holds no tensors\n", in, st->where);
        rc = 1;
    }
    if (!rc && write_state(st, out, prefix, err, sizeof err)) {
        fprintf(stderr, "poster import: %s\n", err);
        rc = 1;
    }
    if (!rc) {
        printf("imported %d tensors, %lld parameters (%lld float32, %lld int64) from %s (%s "
               "format, state dict at %s",
               st->n, (long long)pth_numel(st), (long long)(pth_numel(st) - n_int),
               (long long)n_int, in, st->format, st->where);
        if (st->stripped) printf(", 'module.' stripped from %d names", st->stripped);
        if (st->renamed)
            printf(", %d MobileFaceNet names conv_k.model.<i> written as conv_k.<i>", st->renamed);
        if (prefix[0]) printf(", prefix '%s' added", prefix);
        printf(") into %s\n", out);
    }
    pth_free(st);
    return rc;
}
