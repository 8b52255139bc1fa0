#!/usr/bin/python3
"""PyTorch references for matmul, linear, conv2d, conv1d and conv_transpose1d.

Writes tests/fixtures/ops_linalg.h5 (format version 1). For every config the
group <op>/<name>/ holds the inputs (x, w, b / a, b), the output y, a fixed
upstream gradient gy and the input gradients (gx, gw, gb / ga, gb), all float32,
plus cfg (int64) with the op's integer arguments. References are computed in
float64 from the float32-rounded inputs.

Run: /usr/bin/python3 tests/reference/ref_ops_linalg.py   (from the repo root)
"""
import os
import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ops_linalg.h5")
gen = torch.Generator().manual_seed(20240601)


def rand(*shape):
    # uniform in [-1, 1), rounded to float32 so C sees exactly the same inputs
    t = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1
    return t.float().double().requires_grad_(True)


def store(f, group, tensors, cfg):
    g = f.create_group(group)
    for k, v in tensors.items():
        g.create_dataset(k, data=v.detach().float().numpy())
    g.create_dataset("cfg", data=np.asarray(cfg, dtype=np.int64))


def run(f, group, fn, inputs, names, cfg):
    y = fn(*inputs)
    gy = rand(*y.shape).detach()
    y.backward(gy)
    d = {n: t for n, t in zip(names, inputs) if t is not None}
    d["y"] = y
    d["gy"] = gy
    for n, t in zip(names, inputs):
        if t is not None:
            d["g" + n] = t.grad
    store(f, group, d, cfg)


# matmul: name -> (a shape, b shape, trans_a, trans_b)
MATMUL = {
    "nn": ((2, 3, 5, 7), (2, 3, 7, 4), 0, 0),
    "nt": ((2, 3, 5, 7), (2, 3, 4, 7), 0, 1),
    "tn": ((2, 3, 7, 5), (2, 3, 7, 4), 1, 0),
    "tt": ((2, 3, 7, 5), (2, 3, 4, 7), 1, 1),
    "shared": ((2, 4, 5, 6), (6, 3), 0, 0),
    "shared_tt": ((3, 6, 5), (3, 6), 1, 1),
    "plain": ((9, 33), (33, 17), 0, 0),
}
# linear: name -> (x shape, out, bias)
LINEAR = {"bias": ((2, 5, 7), 4, 1), "nobias": ((6, 7), 3, 0)}
# conv2d: name -> (B, Cin, H, W, Cout, k, stride, pad, groups, bias)
CONV2D = {
    "k3s1p1": (2, 4, 7, 6, 5, 3, 1, 1, 1, 1),
    "k3s2p1": (2, 4, 9, 8, 6, 3, 2, 1, 1, 0),
    "k3s1p0": (1, 3, 6, 5, 4, 3, 1, 0, 1, 1),
    "k1s1": (2, 6, 5, 5, 4, 1, 1, 0, 1, 0),
    "k1s2": (2, 6, 7, 7, 4, 1, 2, 0, 1, 1),
    "g2": (1, 4, 6, 6, 6, 3, 1, 1, 2, 1),
    "dw_s1": (2, 5, 7, 7, 5, 3, 1, 1, 5, 0),
    "dw_s2": (3, 5, 8, 8, 5, 3, 2, 1, 5, 1),
    "wino": (2, 16, 6, 7, 17, 3, 1, 1, 1, 1),   # takes the Winograd path in C
}
# conv1d: name -> (B, Cin, L, Cout, k, stride, bias)
CONV1D = {
    "k2s2": (2, 6, 16, 6, 2, 2, 1),
    "k4s4": (2, 6, 16, 5, 4, 4, 1),
    "k1s1": (2, 6, 9, 6, 1, 1, 1),
    "k3s2": (1, 4, 11, 3, 3, 2, 0),
}
# conv_transpose1d: name -> (B, Cin, L, Cout, k, stride, bias)
CONVT1D = {
    "k2s2": (2, 6, 8, 6, 2, 2, 1),
    "k3s2": (1, 4, 5, 3, 3, 2, 0),
    "k3s1": (2, 3, 4, 5, 3, 1, 1),
}


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["version"] = 1
        f.attrs["generator"] = "tests/reference/ref_ops_linalg.py, torch " + torch.__version__
        for name, (sa, sb, ta, tb) in MATMUL.items():
            def mm(a, b, ta=ta, tb=tb):
                return (a.transpose(-1, -2) if ta else a) @ (b.transpose(-1, -2) if tb else b)
            run(f, "matmul/" + name, mm, [rand(*sa), rand(*sb)], ["a", "b"], [ta, tb])
        for name, (sx, out, bias) in LINEAR.items():
            ins = [rand(*sx), rand(out, sx[-1]), rand(out) if bias else None]
            run(f, "linear/" + name, F.linear, ins, ["x", "w", "b"], [bias])
        for name, (B, Ci, H, W, Co, k, s, p, g, bias) in CONV2D.items():
            ins = [rand(B, Ci, H, W), rand(Co, Ci // g, k, k), rand(Co) if bias else None]
            fn = lambda x, w, b, s=s, p=p, g=g: F.conv2d(x, w, b, stride=s, padding=p, groups=g)
            run(f, "conv2d/" + name, fn, ins, ["x", "w", "b"], [s, p, g, bias])
        for name, (B, Ci, L, Co, k, s, bias) in CONV1D.items():
            ins = [rand(B, Ci, L), rand(Co, Ci, k), rand(Co) if bias else None]
            fn = lambda x, w, b, s=s: F.conv1d(x, w, b, stride=s)
            run(f, "conv1d/" + name, fn, ins, ["x", "w", "b"], [s, bias])
        for name, (B, Ci, L, Co, k, s, bias) in CONVT1D.items():
            ins = [rand(B, Ci, L), rand(Ci, Co, k), rand(Co) if bias else None]
            fn = lambda x, w, b, s=s: F.conv_transpose1d(x, w, b, stride=s)
            run(f, "conv_transpose1d/" + name, fn, ins, ["x", "w", "b"], [s, bias])
    os.replace(tmp, OUT)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
