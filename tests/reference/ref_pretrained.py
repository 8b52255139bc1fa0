#!/usr/bin/env python3
"""Fixtures for tests/test_pretrained.c (run with Debian's /usr/bin/python3 + torch 1.13).

Writes into tests/fixtures/pretrained/:
  mobilefacenet_layout.pth.tar  legacy torch.save of {'epoch', 'state_dict'} with the official
                                MobileFaceNet names (conv_3.model.<k>.*, no face_landback.
                                prefix): conv1.*, conv_3.model.0/1.*, output_layer.bn.* and one
                                key the model lacks (extra_head.weight)
  ir50_layout.pth               zip torch.save of an IR-50 state dict (no ir_back. prefix) with
                                1 unit per stage (the test model's ir_units 1,1,1), its
                                output_layer (POSTER's ir_back declares it too) and the
                                official file's 4th stage (unexpected by name: shrunk to [2])
  ir50_full_names.tsv           name and shape of every tensor of the official 4-stage
                                IR-50 (3,4,14,3 units + output_layer), for the 304-matched check
  poster_official.pth           an official-POSTER-layout checkpoint {'iter', 'model_state_dict'
                                ('module.' + official names, conv_k.model.<i>), 'optimizer_state_dict'}
                                of a reduced POSTER (depth 1, pyramid_levels 1, ir_units 1,1,1).
Every float tensor is a stride-1-per-dimension view into one of three shared storages
(t[i,j,..] = s[offset + i+j+..]) so the full-size MobileFaceNet stays small.
Values follow strided() below (keyed by the file's name; for poster_official by our
name), which tests/test_pretrained.c recomputes.
"""
import os
import re
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import poster_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "pretrained")


def regime(name):
    """0: weights/biases 0.05*u, 1: BatchNorm/PReLU-free gains 1+0.1*u, 2: running_var 1+0.2*u."""
    if name.endswith("running_var"):
        return 2
    if re.search(r"(bn|norm|res_layer\.[04]|input_layer\.1|shortcut_layer\.1)\S*\.weight$", name):
        return 1
    return 0


def storage_value(r, j):
    u = ((j * 7) % 101) / 101.0 - 0.5
    return (0.05 * u, 1.0 + 0.1 * u, 1.0 + 0.2 * u)[r]


NSTORE = 4096
STORES = [torch.tensor([storage_value(r, j) for j in range(NSTORE)], dtype=torch.float64).float()
          for r in range(3)]


def offset(name):
    return len(name) % 97


def official(name):
    """Our MobileFaceNet names -> the official ones (conv_3.0. -> conv_3.model.0.)."""
    return re.sub(r"(^|\.)(conv_[345])\.(\d)", r"\1\2.model.\3", name)


def strided(name, shape, dtype):
    """t[i0,i1,..] = STORES[regime(name)][offset(name) + i0+i1+..]: a view with stride 1 in
    every dimension into one of three shared storages, so files stay small."""
    if dtype == torch.int64:
        return torch.full(tuple(shape), len(name), dtype=torch.int64)
    m = sum(d - 1 for d in shape) + 1
    store = STORES[regime(name)] if offset(name) + m <= NSTORE else big_store(regime(name))
    assert offset(name) + m <= store.numel(), name
    return store.as_strided(tuple(shape), tuple(1 for _ in shape), offset(name))


_BIG = {}


def big_store(r):
    """The same values, longer (IR-50's output_layer.3.weight [512, 25088])."""
    if r not in _BIG:
        _BIG[r] = torch.tensor([storage_value(r, j) for j in range(26000)],
                               dtype=torch.float64).float()
    return _BIG[r]


dense = strided


class BottleneckIR(nn.Module):  # face.evoLVe's bottleneck_IR, official names
    def __init__(self, cin, d, stride):
        super().__init__()
        self.shortcut_layer = nn.MaxPool2d(1, stride) if cin == d else \
            nn.Sequential(nn.Conv2d(cin, d, 1, stride, bias=False), nn.BatchNorm2d(d))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, d, 3, 1, 1, bias=False),
                                       nn.PReLU(d), nn.Conv2d(d, d, 3, stride, 1, bias=False),
                                       nn.BatchNorm2d(d))


class IR50(nn.Module):  # the official ir50.pth layout: 4 stages + output_layer
    def __init__(self, units=(3, 4, 14, 3)):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                         nn.PReLU(64))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))
        body, cin = [], 64
        for n, d in zip(units, (64, 128, 256, 512)):
            for k in range(n):
                body.append(BottleneckIR(cin, d, 2 if k == 0 else 1))
                cin = d
        self.body = nn.Sequential(*body)


def shapes_of(module):
    return [(k, list(v.shape), v.dtype) for k, v in module.state_dict().items()]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    # MobileFaceNet layout (legacy format, like the 2019-era file)
    mf = poster_ref.MobileFaceNet()
    keep = re.compile(r"^(conv1\.|conv_3\.[01]\.|output_layer\.bn\.)")
    sd = {}
    for k, shape, dt in shapes_of(mf):
        if keep.match(k):
            sd[official(k)] = dense(official(k), shape, dt)
    sd["extra_head.weight"] = dense("extra_head.weight", [3], torch.float32)
    torch.save({"epoch": 10, "best_loss": 0.5, "state_dict": sd},
               os.path.join(OUT, "mobilefacenet_layout.pth.tar"), _use_new_zipfile_serialization=False)
    print("mobilefacenet_layout:", len(sd), "tensors")

    # IR-50 layout, 1 unit per stage, 4th stage and output_layer shrunk
    small = IR50((1, 1, 1, 1))
    sd = {}
    for k, shape, dt in shapes_of(small):
        if k.startswith("body.3."):   # unexpected by name: shapes shrunk
            shape = [] if dt == torch.int64 else [2]
        sd[k] = dense(k, shape, dt)
    torch.save(sd, os.path.join(OUT, "ir50_layout.pth"))
    print("ir50_layout:", len(sd), "tensors")

    # names and shapes of the full official IR-50 (no values)
    full = IR50()
    with open(os.path.join(OUT, "ir50_full_names.tsv"), "w") as f:
        for k, shape, dt in shapes_of(full):
            f.write("%s\t%s\n" % (k, "x".join(str(d) for d in shape) if shape else "scalar"))
    del full

    # official POSTER checkpoint layout
    o = poster_ref.PosterOptions(depth=1, pyramid_levels=1, ir_units=(1, 1, 1))
    model = poster_ref.Poster(o)
    msd = {}
    for k, shape, dt in shapes_of(model):
        name = official(k[len("face_landback."):]) if k.startswith("face_landback.") else k
        if k.startswith("face_landback."):
            name = "face_landback." + name
        msd["module." + name] = strided(k, shape, dt)  # values keyed by OUR name
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
           "param_groups": [{"lr": 4e-5, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"iter": 1234, "model_state_dict": msd, "optimizer_state_dict": opt},
               os.path.join(OUT, "poster_official.pth"))
    print("poster_official:", len(msd), "tensors")


if __name__ == "__main__":
    main()
