#!/usr/bin/python3
"""Writes tests/fixtures/contract_ref.h5: values of the deterministic-weights
contract (docs/POSTER.md, "Deterministic test weights") computed by
poster_ref.contract_uniform, which test_poster_parity.c compares with the C
generator (poster_contract_u) bit for bit.

File layout (format "poster-contract-fixture", version 1):
  attrs: format, version, note
  u/<name>/index   int64     element indices i
  u/<name>/values  float64   u_i(name) = ((splitmix64(fnv1a64(name) + i) >> 40) / 2^24) * 2 - 1
  u/<name>         attr fnv1a64 (the name's hash, as a decimal string: it does not fit int64)
<name> is the tensor name with '/' never occurring in it; the names cover the test input,
a bias, a weight and the empty-like corner cases (one-character name, indices past 2^32).

Run: /usr/bin/python3 tests/reference/ref_contract.py   (from anywhere; imports poster_ref, so torch)
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import poster_ref as pr  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                   "contract_ref.h5")

# name -> element indices
CASES = {
    "input": [0, 1, 2, 3, 1000, 150527, 451583],
    "head.linear.bias": [0, 1, 2, 3, 4, 5, 6],
    "ir_back.body.0.res_layer.1.weight": [0, 1, 36863],
    "pyramid_fuse.pos_embed": [0, 25599],
    "x": [0, 1, (1 << 32) + 5, (1 << 40) + 7],
}


def uniform_at(name, idx):
    """u_i for arbitrary (also huge) indices, with the same arithmetic as contract_uniform."""
    h = np.uint64(pr.fnv1a64(name))
    i = np.array(idx, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = h + i + np.uint64(0x9e3779b97f4a7c15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 2.0 ** 24 * 2.0 - 1.0


def main():
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = "poster-contract-fixture"
        f.attrs["version"] = 1
        f.attrs["note"] = ("u_i(name) of the deterministic-weights contract, float64, "
                           "from tests/reference/poster_ref.py")
        for name, idx in CASES.items():
            u = uniform_at(name, idx)
            small = [i for i in idx if i < 1 << 24]
            # the vectorized generator the fixtures use agrees on the indices it can reach
            full = pr.contract_uniform(name, max(small) + 1)
            assert np.array_equal(full[small], u[[idx.index(i) for i in small]]), name
            g = f.create_group("u/" + name)
            g.create_dataset("index", data=np.array(idx, dtype=np.int64))
            g.create_dataset("values", data=u)
            g.attrs["fnv1a64"] = str(pr.fnv1a64(name))
    os.replace(tmp, OUT)
    print("wrote %s: %d names" % (os.path.normpath(OUT), len(CASES)))
    for name, idx in CASES.items():
        print("  %-36s %s" % (name, " ".join("%.8f" % v for v in uniform_at(name, idx)[:4])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
