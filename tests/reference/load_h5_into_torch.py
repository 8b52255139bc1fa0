#!/usr/bin/python3
"""Loads our HDF5 state format (`poster import`, `poster train` checkpoints) into PyTorch.

The reusable part is load_poster_state(): a plain state dict for
model.load_state_dict(). Run as a script it proves a file equals a torch checkpoint:

  build/poster import tests/fixtures/pth/ckpt_module_legacy.pth.tar /tmp/s.h5 --prefix ir_back.
  /usr/bin/python3 tests/reference/load_h5_into_torch.py /tmp/s.h5 \
      tests/fixtures/pth/ckpt_module_legacy.pth.tar --prefix ir_back.

It builds a module with exactly the reference's tensor names (prefix added), loads
the HDF5 state into it with load_state_dict(strict=True) and compares every tensor
with the reference (float tensors as float32, integer ones as int64). Exit status 0
when all are equal, 1 on any mismatch or missing/unexpected key.
"""
import argparse
import collections
import pickle
import sys

import h5py
import numpy as np
import torch


def load_poster_state(path, group="state_dict"):
    """Our HDF5 state -> OrderedDict name -> tensor (float32, int64 counters)."""
    with h5py.File(path, "r") as f:
        fmt = f.attrs.get("format", b"")
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if fmt not in ("poster-state", "poster-checkpoint"):
            raise ValueError(f"{path}: format attribute is {fmt!r}, not a poster state file")
        return collections.OrderedDict(
            (name, torch.from_numpy(np.array(ds))) for name, ds in f[group].items())


def module_like(names_shapes):
    """An nn.Module whose state_dict has exactly these names, shapes and dtypes."""
    root = torch.nn.Module()
    for name, (shape, is_float) in names_shapes.items():
        *path, leaf = name.split(".")
        m = root
        for p in path:
            if p not in m._modules:
                m.add_module(p, torch.nn.Module())
            m = m._modules[p]
        if is_float:
            m.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape), requires_grad=False))
        else:
            m.register_buffer(leaf, torch.zeros(shape, dtype=torch.int64))
    return root


class _Opaque:
    """Stands in for classes of the training script that pickled the checkpoint."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (AttributeError, ImportError):
            return _Opaque


class _lenient_pickle:  # a pickle module for torch.load that tolerates unknown classes
    Unpickler = _LenientUnpickler
    load = pickle.load
    UnpicklingError = pickle.UnpicklingError
    __name__ = "pickle"


def reference_state(path):
    """The state dict inside a torch checkpoint, located like `poster import` does."""
    # torch 1.13 ignores pickle_module= unless weights_only, so swap the module it uses
    import torch.serialization as ser
    saved = ser.pickle
    ser.pickle = _lenient_pickle
    try:
        obj = torch.load(path, map_location="cpu")
    finally:
        ser.pickle = saved
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in ("state_dict", "model_state_dict", "model")
                      if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    out = collections.OrderedDict()
    for k, v in obj.items():
        if torch.is_tensor(v):
            out[k[len("module."):] if k.startswith("module.") else k] = v.detach()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("state_h5")
    ap.add_argument("reference", help="the torch checkpoint the state was imported from")
    ap.add_argument("--prefix", default="")
    args = ap.parse_args()

    ref = reference_state(args.reference)
    ref = collections.OrderedDict((args.prefix + k, v) for k, v in ref.items())
    model = module_like({k: (tuple(v.shape), v.is_floating_point()) for k, v in ref.items()})
    state = load_poster_state(args.state_h5)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        print(f"MISMATCH: load_state_dict(strict=True) failed: {e}")
        return 1
    bad = 0
    for k, v in model.state_dict().items():
        want = ref[k].float() if ref[k].is_floating_point() else ref[k].to(torch.int64)
        if v.dtype != want.dtype or not torch.equal(v, want):
            print(f"MISMATCH: {k}")
            bad += 1
    n = sum(v.numel() for v in ref.values())
    if bad:
        print(f"{bad} of {len(ref)} tensors differ")
        return 1
    print(f"OK: {len(ref)} tensors ({n} values) of {args.state_h5} equal {args.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
