#!/usr/bin/python3
"""Writes tests/fixtures/sched_ref.h5: learning rates of PyTorch's own schedulers,
which tests/test_train_optim.c compares with train/sched.c (sched_lr).

File layout (format "poster-sched-fixture", version 1); every group holds `lr`
(float64) and its settings as attributes:
  exponential   ExponentialLR(gamma 0.98) from lr 4e-5, stepped once per epoch: lr[e] is
                the rate of epoch e (0-based), e < 300 (the official recipe)
  cosine        CosineAnnealingLR(T_max 10, eta_min 1e-6) from lr 1e-3, e <= 10 (train.epochs
                = T_max: the run ends at epoch T_max - 1; epoch T_max is the floor)
  step          StepLR(step_size 3, gamma 0.1) from lr 1.0, e < 12
  warmup        the way train/sched.c composes a warmup: lr[e * S + s] = (rate of epoch e
                of ExponentialLR(gamma 0.9), stepped per epoch) * (factor of a LambdaLR
                stepped per batch with lambda k: min(1, (k + 1) / (W * S))), W = 2 warmup
                epochs of S = 4 batches, from lr 1e-3, e < 4; each factor from its own torch
                scheduler on its own optimizer
Run: /usr/bin/python3 tests/reference/ref_sched.py
"""
import os
import sys

import h5py
import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sched_ref.h5")


def optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def per_epoch(make, lr, epochs):
    """Rates of epochs 0..epochs-1: the optimizer's lr, then one scheduler step."""
    opt = optimizer(lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out, dtype=np.float64)


def main():
    torch.set_default_dtype(torch.float64)
    groups = {}
    groups["exponential"] = (
        per_epoch(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.98), 4e-5, 300),
        {"base_lr": 4e-5, "gamma": 0.98})
    groups["cosine"] = (
        per_epoch(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-6),
                  1e-3, 11),
        {"base_lr": 1e-3, "t_max": 10, "eta_min": 1e-6})
    groups["step"] = (
        per_epoch(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1), 1.0, 12),
        {"base_lr": 1.0, "gamma": 0.1, "step_size": 3})
    W, S, E, base = 2, 4, 4, 1e-3
    main_rates = per_epoch(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), base, E)
    warm_opt = optimizer(1.0)
    warm = torch.optim.lr_scheduler.LambdaLR(warm_opt, lambda k: min(1.0, (k + 1) / (W * S)))
    lr = []
    for e in range(E):
        for s in range(S):
            lr.append(main_rates[e] * warm_opt.param_groups[0]["lr"])
            warm_opt.step()
            warm.step()
    groups["warmup"] = (np.array(lr, dtype=np.float64),
                        {"base_lr": base, "gamma": 0.9, "warmup_epochs": W,
                         "steps_per_epoch": S})
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = "poster-sched-fixture"
        f.attrs["version"] = 1
        f.attrs["torch"] = str(torch.__version__).encode()
        for name, (v, attrs) in groups.items():
            g = f.create_group(name)
            g.create_dataset("lr", data=v)
            for k, a in attrs.items():
                g.attrs[k] = float(a)
    os.replace(tmp, OUT)
    for name, (v, _) in groups.items():
        print("%-12s %3d rates: %s ..." % (name, len(v), " ".join("%.6g" % x for x in v[:6])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
