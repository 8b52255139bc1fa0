// Pretrained weights the official way: the IR-50 face-recognition trunk
// (ir50.pth) into ir_back. and the MobileFaceNet landmark network
// (mobilefacenet_model_best.pth.tar) into face_landback., matched by name and
// shape (config keys model.pretrained_ir50 / model.pretrained_mobilefacenet),
// and an official POSTER checkpoint (.pth, `module.` keys) loaded whole.
#pragma once
#include <stddef.h>
#include <stdio.h>

#include "autograd/tensor.h"
#include "layers/poster.h"
#include "layers/state_io.h"
#include "common/config.h"

// Registers model.pretrained_ir50 and model.pretrained_mobilefacenet (called by
// poster_config_register, so every command that knows the model keys knows them).
void pretrained_config_register(config *c);

// Loads the configured backbones into m (nothing when both keys are empty) and
// reports on log, per file: tensors matched, missing (kept their
// initialization), unexpected (in the file, not in the model; the official
// IR-50 file's 4th stage and output layer) and misshaped. The files' names lack
// the module prefix, which is added (a file whose names all carry it already,
// e.g. written by `poster import --prefix ir_back.`, is taken as it is). Either
// format: .pth/.pth.tar (zip or legacy) or our HDF5 state. A configured file
// that cannot be read, or of which nothing matches, is an error naming the key.
// Reports of the last call (tests): rep[0] IR-50, rep[1] MobileFaceNet.
int poster_load_pretrained(poster_model *m, const config *c, struct state_report *rep,
                           FILE *log, char *err, size_t errlen);

// A whole-model PyTorch checkpoint (an official POSTER one: the state dict under
// 'model_state_dict', `module.` keys, optimizer state skipped) into s, strictly:
// every tensor of s must come from the file with its shape and the file may
// hold nothing else, or it is an error naming the first offender and the counts.
int poster_load_pth_strict(param_store *s, const char *path, FILE *log, char *err,
                           size_t errlen);
