#!/usr/bin/env python3
"""Writes the seed corpora of the text, .npy and JPEG fuzz targets into
tests/fuzz/corpus/<target>/ (committed; run from the repository root). The HDF5
seeds come from the targets themselves: `tools/fuzz.sh --seeds`. Needs numpy and
Pillow (only to regenerate; the committed files are what the fuzzers use)."""
import glob
import io
import os
import shutil
import struct

import numpy as np
from PIL import Image

C = "tests/fuzz/corpus"


def put(target, name, data):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def two(a, b):   # fz_split2: 2-byte little-endian length of the first part
    a = a if isinstance(a, bytes) else a.encode()
    b = b if isinstance(b, bytes) else b.encode()
    return struct.pack("<H", len(a)) + a + b


# config: every shipped recipe, with and without --set lines
for p in sorted(glob.glob("configs/*.ini")):
    text = open(p).read()
    base = os.path.basename(p)[:-4]
    put("config", base, two(text, ""))
put("config", "sets", two("[train]\nepochs = 2\n[model]\ndepth = 1\n",
                          "optim.lr=1e-3\nmodel.ir_units=1,1,1\ndata.image_size=112\n"
                          "train.batch_size=8\neval.every=1\n"))
put("config", "bad", two("[train]\nepochs = -1\nnope\n[zzz]\nq = 1\n", "model.depth=x\n=\n"))

# lists: first byte selects the parser (fuzz_lists.c)
raf = "".join(f"train_{i:05d}.jpg {i % 7 + 1}\n" for i in range(1, 9)) + \
      "test_0001.jpg 3\ntest_0002.jpg 7\n"
put("lists", "rafdb", b"\x00" + raf.encode())
put("lists", "rafdb_bad", b"\x00" + b"train_00001.jpg 9\nfoo.jpg 1\ntest_0001.jpg\n\n")
aff = "".join(f"{i}.jpg {i % 7}\n" for i in range(8))
put("lists", "affectnet7", b"\x01" + aff.encode())
put("lists", "affectnet8", b"\x02" + (aff + "9.jpg 7\n").encode())
orig = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
        "expression,valence,arousal\n")
for i in range(8):
    orig += f'689/{i}.jpg,1,2,3,4,"1;2;3;4",{i % 11},0.1,-0.2\n'
put("lists", "affectnet_original", b"\x03" + orig.encode())
put("lists", "csv_index", b"\x04" + b"path,label\na.jpg,0\nsub/b.jpg,1\nc.jpg,2\n")
put("lists", "csv_names", b"\x05" + b"a.jpg,a\nb.jpg,b\n\"c,1.jpg\",c\n")

# ferplus: fer2013.csv + fer2013new.csv
pix = " ".join(str((7 * i) % 256) for i in range(2304))
fer = "emotion,pixels,Usage\n"
new = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
rows = [("Training", "fer0000000.png", "6,4,0,0,0,0,0,0,0,0"),
        ("Training", "fer0000001.png", "5,5,0,0,0,0,0,0,0,0"),
        ("PublicTest", "fer0000002.png", "3,0,0,0,0,0,0,7,0,0"),
        ("PrivateTest", "fer0000003.png", "0,0,0,0,0,1,9,0,0,0")]
for i, (u, n, v) in enumerate(rows):
    fer += f"{i % 7},{pix},{u}\n"
    new += f"{u},{n},{v}\n"
put("ferplus", "four_rows", two(fer, new))
put("ferplus", "short", two("emotion,pixels,Usage\n0,1 2 3,Training\n",
                            new.splitlines()[0] + "\nTraining,a.png,1,2,3\n"))


# npy: one label per file, several dtypes and header versions
def npy(arr, version=1):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(version, 0))
    return buf.getvalue()


put("npy", "i8", npy(np.array(3, dtype="<i8")))
put("npy", "u1", npy(np.array(5, dtype="u1")))
put("npy", "str", npy(np.array("6")))
put("npy", "f4_1d", npy(np.array([2.0], dtype="<f4")))
put("npy", "v2_be", npy(np.array(1, dtype=">i4"), version=2))

# jpeg: the test images, grey, CMYK, progressive, 4:2:0 and 4:4:4, tiny, restart markers
os.makedirs(f"{C}/jpeg", exist_ok=True)
for p in sorted(glob.glob("tests/fixtures/*.jpg")):
    shutil.copy(p, f"{C}/jpeg/")
rgb = Image.open("tests/fixtures/data_img2.jpg").convert("RGB").resize((24, 16))


def jpg(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


put("jpeg", "grey", jpg(rgb.convert("L")))
put("jpeg", "cmyk", jpg(rgb.convert("CMYK")))
put("jpeg", "progressive", jpg(rgb, progressive=True))
put("jpeg", "s444", jpg(rgb, subsampling=0))
put("jpeg", "s420", jpg(rgb, subsampling=2, quality=50))
put("jpeg", "tiny", jpg(rgb.resize((1, 1))))
put("jpeg", "truncated", jpg(rgb)[:200])

# pth: the PyTorch fixtures
os.makedirs(f"{C}/pth", exist_ok=True)
for p in sorted(glob.glob("tests/fixtures/pth/*.pt*")):
    shutil.copy(p, f"{C}/pth/")
