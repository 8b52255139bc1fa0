// Optimizers with PyTorch's exact update rules (torch 1.13, single-tensor path):
// SGD (momentum, dampening, Nesterov, weight decay), Adam (L2 weight decay added
// to the gradient), AdamW (decoupled decay), and SAM / ASAM around any of them.
//
// They act on the param_store's trainable prefix [0, n_train) in one loop:
// frozen, unused and buffer tensors lie outside it, so they never move (as in
// PyTorch, where they have no .grad). Optimizer state buffers (exp_avg,
// exp_avg_sq, momentum_buffer) have the same layout as store->data, so the
// state of parameter p is at p->offset in each buffer.
#pragma once
#include <hdf5.h>
#include <stdbool.h>
#include <stdint.h>

#include "autograd/tensor.h"
#include "common/config.h"

enum optim_kind { OPTIM_SGD = 0, OPTIM_ADAM = 1, OPTIM_ADAMW = 2 };

typedef struct optim_opts {
    int kind;               // OPTIM_*
    double lr;              // base learning rate (schedules scale it)
    double beta1, beta2;    // Adam/AdamW
    double eps;             // Adam/AdamW, added after the bias-corrected sqrt
    double weight_decay;
    double momentum;        // SGD
    double dampening;       // SGD
    bool nesterov;          // SGD
    bool sam;               // sharpness-aware minimization around the base optimizer
    double rho;             // SAM radius (0.05)
    bool adaptive;          // ASAM: perturbation scaled by |w| (and the norm by |w|)
} optim_opts;

// Registers optim.* (name, lr, beta1, beta2, eps, weight_decay, momentum,
// dampening, nesterov, sam, rho, adaptive).
void optim_config_register(config *c);
void optim_opts_default(optim_opts *o);   // official: SAM(rho 0.05) around Adam(4e-5)
int optim_opts_from_config(const config *c, optim_opts *o, char *err, size_t errlen);
const char *optim_name(int kind);

typedef struct optimizer {
    optim_opts o;
    param_store *s;
    int64_t n;              // floats stepped: s->n_train at creation
    float *buf1;            // exp_avg (Adam/AdamW) or momentum_buffer (SGD)
    float *buf2;            // exp_avg_sq (Adam/AdamW), NULL for SGD
    float *old_w;           // SAM: weights before the perturbation
    int64_t step;           // base-optimizer steps taken (Adam's bias correction)
    bool buf1_init;         // SGD: momentum buffer exists (first step copies d_p)
    bool perturbed;         // SAM: weights currently hold w + e
    double lr;              // current learning rate
} optimizer;

optimizer *optim_create(param_store *s, const optim_opts *o);
void optim_free(optimizer *opt);
void optim_set_lr(optimizer *opt, double lr);
// One base-optimizer step with the gradients in s->grad (does not zero them).
void optim_step(optimizer *opt);

// SAM first step: saves w, computes the perturbation from s->grad and moves
// w to w + e. Returns ||g|| (or ||w*g|| for ASAM). The caller then zeroes the
// gradients, runs forward/backward again at w + e, and calls optim_sam_restore
// followed by optim_step (PyTorch's second_step restores old_p exactly).
double optim_sam_perturb(optimizer *opt);
void optim_sam_restore(optimizer *opt);

// ||g||_2 over the trainable prefix (double accumulation).
double optim_grad_norm(const param_store *s);

// Optimizer state in HDF5 under `group`: attributes kind, step, buf1_init and one
// dataset per trainable tensor and buffer, "<group>/exp_avg/<name>" (Adam) or
// "<group>/momentum_buffer/<name>" (SGD), named as in PyTorch's state.
int optim_write(const optimizer *opt, hid_t f, const char *group, char *err, size_t errlen);
// Reads it back; the kind and every tensor name and shape must match.
int optim_read(optimizer *opt, hid_t f, const char *group, char *err, size_t errlen);
