// Loading weights into a model by name and shape: the one matcher every reader
// uses (eval, the trainer's --init and pretrained backbones, forward, import's
// check), whatever the file: a torch.save file (zip or legacy pickle), one of our
// HDF5 state files (`poster import`, `poster forward --weights`) or a training
// checkpoint (its `state_dict` group). weights_load detects which.
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "autograd/tensor.h"
#include "common/pth_read.h"
#include "layers/state_io.h"

// One tensor of a file as the matcher sees it.
typedef struct weights_entry {
    const char *name;      // relative to the file (the prefix is put in front)
    int ndim;
    const int *shape;
    const char *problem;   // non-NULL: the tensor cannot be read (why); never loaded
} weights_entry;

// The matcher. File tensor i goes into the parameter named prefix + name when
// that exists with the same shape (a counter: any one-element shape):
// target[i], else NULL (unexpected, or misshaped: those keep their values).
// Parameters under prefix that no file tensor names are missing. Fills rep
// (counts; first_problem names the first unexpected, misshaped or missing
// tensor in that order) and lists the problems on log (may be NULL; at most 40
// of each kind). Changes nothing in s.
void weights_match(param_store *s, const weights_entry *e, int n, const char *prefix,
                   param **target, state_report *rep, FILE *log);

// Copies the tensors of a loaded file into s by weights_match. strict: any
// missing, unexpected or misshaped tensor is an error naming the first, and
// nothing is changed; not strict: what matches is copied (an error when nothing
// does). path only names the file in messages; prefix may be NULL or "".
int weights_from_state(param_store *s, const pth_state *st, const char *path,
                       const char *prefix, bool strict, state_report *rep, FILE *log,
                       char *err, size_t errlen);

// Loads PATH (format detected by its first bytes: HDF5 or torch.save) and
// copies it into s as weights_from_state does. rep may be NULL.
int weights_load(param_store *s, const char *path, const char *prefix, bool strict,
                 state_report *rep, FILE *log, char *err, size_t errlen);
