#!/usr/bin/python3
"""PyTorch references for the elementwise, shape and normalization ops
(autograd/ops_basic.c and autograd/ops_norm.c).

Writes tests/fixtures/ops_basic.h5 (format version 1, root attribute
"version"). For every case the group <op>/<case>/ holds the inputs (named as
below), the output y, a fixed random upstream gradient gy and the input
gradients g<name>, all float32, plus cfg (int64 or float64 dataset) with the
op's extra arguments where it has any. Batch norm cases also hold the running
statistics before (rm, rv) and after (rm_out, rv_out) the call. References are
computed in float64 from the float32-rounded inputs.

Run: /usr/bin/python3 tests/reference/ref_ops_basic.py   (from the repo root)
"""
import os
import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ops_basic.h5")
gen = torch.Generator().manual_seed(20240602)


def rand(*shape, lo=-1.0, hi=1.0, grad=True):
    # uniform in [lo, hi), rounded to float32 so C sees exactly the same inputs
    t = torch.rand(tuple(shape), generator=gen, dtype=torch.float64) * (hi - lo) + lo
    t = t.float().double()
    return t.requires_grad_(grad)


def away_from_zero(t, margin=0.05):
    # keeps relu/prelu inputs off the kink so gradients are unambiguous
    with torch.no_grad():
        t = torch.where(t.abs() < margin, t.sign() * margin + (t == 0) * margin, t)
    return t.float().double().requires_grad_(True)


def store(f, group, tensors, cfg=None, cfg_float=False):
    g = f.create_group(group)
    for k, v in tensors.items():
        g.create_dataset(k, data=v.detach().float().numpy())
    if cfg is not None:
        g.create_dataset("cfg", data=np.asarray(cfg, dtype=np.float64 if cfg_float else np.int64))


def run(f, group, fn, inputs, names, cfg=None, cfg_float=False, extra=None):
    y = fn(*inputs)
    gy = rand(*y.shape, grad=False)
    y.backward(gy)
    d = dict(zip(names, inputs))
    d["y"] = y
    d["gy"] = gy
    for n, t in zip(names, inputs):
        if t.requires_grad:
            d["g" + n] = t.grad
    if extra:
        d.update(extra)
    store(f, group, d, cfg, cfg_float)


BINARY = {
    "same": ((2, 3, 4, 5), (2, 3, 4, 5)),
    "chan": ((2, 3, 4, 5), (1, 3, 1, 1)),
    "chan1d": ((2, 3, 4, 5), (3, 1, 1)),
    "row": ((2, 5, 3), (3,)),
    "sample": ((2, 3, 4), (2, 1, 1)),
    "scalar": ((3, 4), (1,)),
    "scalar0": ((3, 4), ()),
    "both": ((3, 1, 5), (1, 4, 1)),
    "left": ((1, 3, 1, 1), (2, 3, 4, 5)),
    "five": ((2, 1, 3, 1, 2), (1, 2, 1, 3, 1)),
    "batch1": ((1, 7, 3), (7, 1)),
}

with h5py.File(OUT, "w") as f:
    f.attrs["version"] = 1
    for op, fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)):
        for case, (sa, sb) in BINARY.items():
            run(f, f"{op}/{case}", fn, [rand(*sa), rand(*sb)], ["a", "b"])

    run(f, "scale/a", lambda x: x * -1.75, [rand(3, 4)], ["x"], cfg=[-1.75], cfg_float=True)
    run(f, "relu/a", F.relu, [away_from_zero(rand(3, 7))], ["x"])
    run(f, "sigmoid/a", torch.sigmoid, [rand(3, 7, lo=-4, hi=4)], ["x"])
    run(f, "gelu/a", F.gelu, [rand(3, 7, lo=-4, hi=4)], ["x"])
    run(f, "prelu/4d", F.prelu, [away_from_zero(rand(2, 3, 4, 5)), rand(3, lo=0, hi=0.5)],
        ["x", "w"])
    run(f, "prelu/2d", F.prelu, [away_from_zero(rand(4, 6)), rand(6, lo=0, hi=0.5)], ["x", "w"])

    run(f, "reshape/a", lambda x: x.reshape(6, 4), [rand(2, 3, 4)], ["x"], cfg=[6, 4])
    for case, (shape, perm) in {
        "p4": ((2, 3, 4, 5), (0, 2, 3, 1)),
        "p4b": ((2, 3, 4, 5), (3, 1, 2, 0)),
        "p3": ((2, 3, 4), (2, 0, 1)),
        "p5": ((2, 1, 3, 2, 3), (4, 2, 0, 3, 1)),
        "p2": ((3, 5), (1, 0)),
    }.items():
        run(f, f"permute/{case}", lambda x, p=perm: x.permute(*p), [rand(*shape)], ["x"],
            cfg=list(perm))
    run(f, "transpose/a", lambda x: x.transpose(1, 2), [rand(2, 3, 4)], ["x"], cfg=[1, 2])

    for case, (shapes, axis) in {
        "ax1": (((2, 3, 4), (2, 1, 4), (2, 2, 4)), 1),
        "ax0": (((1, 3), (2, 3)), 0),
        "axlast": (((2, 3, 2), (2, 3, 3)), 2),
        "five": (((2, 3, 1), (2, 3, 2), (2, 3, 1), (2, 3, 3), (2, 3, 1)), 2),
    }.items():
        names = [f"x{i}" for i in range(len(shapes))]
        run(f, f"concat/{case}", lambda *xs, a=axis: torch.cat(xs, a),
            [rand(*s) for s in shapes], names, cfg=[axis, len(shapes)])

    for case, (shape, axis, s, e) in {
        "mid": ((2, 6, 3), 1, 1, 4),
        "last": ((2, 6, 3), 2, 0, 2),
        "first": ((4, 3), 0, 3, 4),
    }.items():
        run(f, f"slice/{case}", lambda x, a=axis, s=s, e=e: x.narrow(a, s, e - s),
            [rand(*shape)], ["x"], cfg=[axis, s, e])

    for case, (shape, axis, keep) in {
        "ax1": ((2, 3, 4), 1, 0),
        "ax2keep": ((2, 3, 4), 2, 1),
        "ax0": ((5, 3), 0, 0),
    }.items():
        run(f, f"mean/{case}", lambda x, a=axis, k=keep: x.mean(a, keepdim=bool(k)),
            [rand(*shape)], ["x"], cfg=[axis, keep])

    # F.interpolate nearest to half size is the stride-2 subsample.
    run(f, "subsample/interp", lambda x: F.interpolate(x, size=(4, 5)),
        [rand(2, 3, 8, 10)], ["x"], cfg=[2])
    run(f, "subsample/odd", lambda x: x[:, :, ::2, ::2], [rand(1, 2, 7, 5)], ["x"], cfg=[2])
    run(f, "subsample/s3", lambda x: x[:, :, ::3, ::3], [rand(2, 1, 7, 6)], ["x"], cfg=[3])

    # ---- normalization ----
    for case, shape, scale in (("a", (3, 7), 1.0), ("b3d", (2, 3, 5), 1.0),
                               ("large", (2, 6), 30.0)):
        run(f, f"softmax/{case}", lambda x: torch.softmax(x, -1),
            [rand(*shape, lo=-scale, hi=scale)], ["x"])
        run(f, f"log_softmax/{case}", lambda x: torch.log_softmax(x, -1),
            [rand(*shape, lo=-scale, hi=scale)], ["x"])

    run(f, "layernorm/affine", lambda x, w, b: F.layer_norm(x, (8,), w, b, 1e-6),
        [rand(2, 5, 8), rand(8, lo=0.5, hi=1.5), rand(8)], ["x", "w", "b"], cfg=[1e-6],
        cfg_float=True)
    run(f, "layernorm/plain", lambda x: F.layer_norm(x, (7,), None, None, 1e-5),
        [rand(3, 7)], ["x"], cfg=[1e-5], cfg_float=True)

    # batchnorm: cfg = [training, affine, momentum, eps]
    for case, (shape, training, affine) in {
        "train2d": ((4, 3, 5, 5), 1, 1),
        "train1d": ((6, 4), 1, 1),
        "train1d_l": ((3, 4, 5), 1, 1),
        "train_noaffine": ((2, 3, 3, 3), 1, 0),
        "eval2d": ((4, 3, 5, 5), 0, 1),
        "eval1d": ((6, 4), 0, 1),
    }.items():
        C = shape[1]
        x = rand(*shape, lo=-2, hi=3)
        rm = rand(C, grad=False)
        rv = rand(C, lo=0.5, hi=2.0, grad=False)
        rm_in, rv_in = rm.clone(), rv.clone()
        if affine:
            w, b = rand(C, lo=0.5, hi=1.5), rand(C)
            inputs, names = [x, w, b], ["x", "w", "b"]
            fn = lambda x, w, b, t=training, rm=rm, rv=rv: F.batch_norm(
                x, rm, rv, w, b, bool(t), 0.1, 1e-5)
        else:
            inputs, names = [x], ["x"]
            fn = lambda x, t=training, rm=rm, rv=rv: F.batch_norm(
                x, rm, rv, None, None, bool(t), 0.1, 1e-5)
        run(f, f"batchnorm/{case}", fn, inputs, names, cfg=[training, affine, 0.1, 1e-5],
            cfg_float=True, extra={"rm": rm_in, "rv": rv_in, "rm_out": rm, "rv_out": rv})

    for case, (B, K, s) in {"s0": (5, 7, 0.0), "s02": (5, 7, 0.2), "b1": (1, 7, 0.2),
                            "big": (4, 7, 0.0)}.items():
        scale = 20.0 if case == "big" else 2.0
        x = rand(B, K, lo=-scale, hi=scale)
        t = torch.randint(0, K, (B,), generator=gen)
        y = F.cross_entropy(x, t, label_smoothing=s)
        gy = torch.tensor(0.75, dtype=torch.float64)
        y.backward(gy)
        store(f, f"cross_entropy/{case}", {"x": x, "y": y.reshape(1), "gy": gy.reshape(1),
                                           "gx": x.grad}, cfg=[s], cfg_float=True)
        f[f"cross_entropy/{case}"].create_dataset("target", data=t.numpy().astype(np.int64))

print("wrote", os.path.abspath(OUT), os.path.getsize(OUT), "bytes")
