#!/usr/bin/python3
"""Writes the PyTorch checkpoint fixtures read by tests/test_pth.c.

Run from the repository root with Debian's torch: /usr/bin/python3 tests/reference/ref_pth.py
Outputs tests/fixtures/pth/*.pth* (torch.save, zip and legacy formats) and
tests/fixtures/pth/expected.h5: one group per checkpoint (file name with '.'
replaced by '_') holding every tensor the C reader must return, by its final
name (after 'module.' is stripped), float32 or int64, plus attributes `file`
(the checkpoint's name) and `count` (how many tensors).

The tensors use official POSTER key names (see docs/poster_state_dict.tsv)
at reduced sizes, and cover: float16 and bfloat16/float64 storages, a transposed
(non-contiguous) tensor, a strided slice with a storage offset, two tensors sharing
one storage, int64 num_batches_tracked scalars, the OrderedDict _metadata of a real
state dict, a 'module.'-prefixed full checkpoint with optimizer state and objects
the reader must skip (argparse Namespace, a training recorder, numpy values).
"""
import argparse
import collections
import os
import sys

import h5py
import numpy as np
import torch

OUT = "tests/fixtures/pth"


class RecorderMeter:
    """Stands in for the training recorders that POSTER-like code pickles."""

    def __init__(self, epochs):
        self.total_epoch = epochs
        self.current_epoch = 2
        self.epoch_losses = np.zeros((epochs, 2), dtype=np.float32)
        self.epoch_accuracy = np.linspace(0, 1, epochs * 2).reshape(epochs, 2)


def g(seed):
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def rnd(shape, seed):
    return torch.randn(*shape, generator=g(seed))


def poster_state():
    """A bare state dict with official names, reduced sizes and awkward layouts."""
    sd = collections.OrderedDict()
    sd["ir_back.input_layer.0.weight"] = rnd((4, 3, 3, 3), 1)
    sd["ir_back.input_layer.1.weight"] = rnd((4,), 2).abs() + 0.5
    sd["ir_back.input_layer.1.bias"] = rnd((4,), 3)
    sd["ir_back.input_layer.1.running_mean"] = rnd((4,), 4) * 0.1
    sd["ir_back.input_layer.1.running_var"] = rnd((4,), 5).abs() + 1
    sd["ir_back.input_layer.1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["ir_back.input_layer.2.weight"] = torch.full((4,), 0.25)
    # transposed: stride (1, 6) over a [10, 6] storage
    sd["ir_layer.weight"] = rnd((10, 6), 6).t()
    sd["ir_layer.bias"] = rnd((6,), 7)
    sd["pyramid_fuse.cls_token"] = torch.zeros(1, 1, 8)
    sd["pyramid_fuse.pos_embed"] = rnd((1, 5, 8), 8).half()          # float16 storage
    # a slice with a storage offset and non-unit strides, [5, 5, 2] of a [5, 5, 3]
    sd["pyramid_fuse.downsample_m.weight"] = rnd((5, 5, 3), 9)[:, :, 1:3]
    sd["pyramid_fuse.downsample_m.bias"] = rnd((5,), 10)
    # two views of one storage
    both = rnd((2, 7), 11)
    sd["head.linear.weight"] = both[0:1].expand(1, 7).reshape(1, 7)
    sd["head.linear.bias"] = both[1, 0:1]
    sd["se_block.linear1.bias"] = rnd((3,), 12).to(torch.bfloat16)
    sd["se_block.linear2.bias"] = rnd((3,), 13).double()
    sd._metadata = collections.OrderedDict(
        [("", {"version": 1}), ("ir_back", {"version": 1}), ("ir_back.input_layer.1", {"version": 2})])
    return sd


def mobilefacenet_state():
    """face_landback.* names without the prefix, as mobilefacenet_model_best.pth.tar has."""
    sd = collections.OrderedDict()
    sd["conv1.conv.weight"] = rnd((4, 3, 3, 3), 21)
    sd["conv1.bn.weight"] = rnd((4,), 22)
    sd["conv1.bn.bias"] = rnd((4,), 23)
    sd["conv1.bn.running_mean"] = rnd((4,), 24)
    sd["conv1.bn.running_var"] = rnd((4,), 25).abs()
    sd["conv1.bn.num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)
    sd["conv1.prelu.weight"] = rnd((4,), 26)
    sd["conv2_dw.conv.weight"] = rnd((4, 1, 3, 3), 27).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    sd["output_layer.bn.running_var"] = rnd((6,), 28).abs()
    return sd


def adam_state(params):
    opt = torch.optim.Adam(params, lr=4e-5)
    loss = sum((p.float() ** 2).sum() for p in params)
    loss.backward()
    opt.step()
    return opt.state_dict()


def as_expected(t):
    t = t.detach()
    if t.is_floating_point():
        return t.float().contiguous().numpy()
    return t.to(torch.int64).contiguous().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    sd = poster_state()
    mfn = mobilefacenet_state()
    params = [torch.nn.Parameter(rnd((3, 2), 31)), torch.nn.Parameter(rnd((2,), 32))]
    full = {
        "epoch": 3,
        "arch": "poster",
        "state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        "best_acc": torch.tensor(91.5),
        "optimizer": adam_state(params),
        "args": argparse.Namespace(lr=4e-5, batch_size=16, data="raf-db", betas=(0.9, 0.999)),
        "recorder": RecorderMeter(4),
        "np_scalar": np.float64(0.875),
        "class_names": {"neutral", "happy"},
        "blob": b"\x00\x01binary",
    }
    full["state_dict"]._metadata = sd._metadata
    files = [  # (file, object, legacy format?, expected tensors)
        ("sd_zip.pth", sd, False, sd),
        ("sd_legacy.pth", sd, True, sd),
        ("ckpt_module_zip.pth.tar", full, False, sd),
        ("ckpt_module_legacy.pth.tar", full, True, sd),
        ("mfn_best.pth.tar", {"state_dict": mfn, "epoch": 40, "best_prec1": 0.5}, True, mfn),
        ("model_sd.pt", {"model_state_dict": mfn, "optimizer_state_dict": adam_state(params),
                         "epoch": 1}, False, mfn),
        ("model_key.pth", {"model": mfn, "iteration": 10}, False, mfn),
        ("params_zip.pth", collections.OrderedDict(
            [("pyramid_fuse.norm.weight", torch.nn.Parameter(rnd((8,), 41))),
             ("pyramid_fuse.norm.bias", torch.nn.Parameter(rnd((8,), 42), requires_grad=False))]),
         False, None),
    ]
    with h5py.File(os.path.join(args.out, "expected.h5"), "w") as h5:
        h5.attrs["format"] = "pth-fixture-expected"
        h5.attrs["version"] = 1
        for name, obj, legacy, expect in files:
            path = os.path.join(args.out, name)
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
            if expect is None:
                expect = obj
            # what torch reads back is the reference
            back = torch.load(path)
            back_sd = back if "state_dict" not in back and "model_state_dict" not in back \
                and "model" not in back else \
                back.get("state_dict", back.get("model_state_dict", back.get("model")))
            grp = h5.create_group(name.replace(".", "_"))
            grp.attrs["file"] = name
            grp.attrs["count"] = len(expect)
            for k, v in back_sd.items():
                k2 = k[len("module."):] if k.startswith("module.") else k
                assert torch.equal(v.detach(), expect[k2].detach()), k
                grp.create_dataset(k2, data=as_expected(v))
            print(f"{path}: {os.path.getsize(path)} bytes, {len(expect)} tensors")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
