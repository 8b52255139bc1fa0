// Test-time augmentation (eval.tta): `flip` averages the softmax of the image and
// of its horizontal flip, in `poster eval` and `poster predict`.
#pragma once
#include "autograd/tensor.h"
#include "layers/poster.h"
#include "common/config.h"

enum { TTA_OFF = 0, TTA_FLIP = 1 };

// Registers eval.tta (off|flip).
void tta_config_register(config *c);
int tta_from_config(const config *c);   // TTA_*

// x: [n, 3, S, S] network inputs. Fills probs [n, K] with the class probabilities:
// softmax(f(x)), or with TTA_FLIP (softmax(f(x)) + softmax(f(flip(x)))) / 2, the
// flip mirroring the last axis. Eval mode, no gradients.
void tta_probs(poster_model *m, const tensor *x, int tta, float *probs);
// The same as "logits" for the metrics and the loss: log(probs) [n, K] (an arena
// tensor): the argmax is the averaged prediction and log_softmax of it is itself,
// so a cross entropy on it is the loss of the averaged distribution.
tensor *tta_log_probs(poster_model *m, const tensor *x, int tta);
