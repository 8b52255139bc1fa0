#!/usr/bin/python3
"""Reference for the data pipeline (tests/test_data_image.c): a few small test
JPEGs and what PIL + torchvision make of them.

Writes tests/fixtures/data_img0.jpg (100x100 colour: upscaled), data_img1.jpg
(256x200 colour: antialiased shrink), data_img2.jpg (48x48 grey: replicated to
3 channels) and tests/fixtures/data_ref.h5 with
  resized{i}  uint8 [224, 224, 3]  PIL decode -> RGB -> resize((224,224), BILINEAR)
  norm_lut    float32 [3, 256]     ToTensor + Normalize of every grey level
  eval0_rgb   float32 [3, 32, 224] the full eval transform of image 0 (RGB), top rows
  eval0_bgr   float32 [3, 224, 224] the same with OpenCV's BGR order (RAF-DB)
Run: /usr/bin/python3 tests/reference/ref_data.py
"""
import os

import h5py
import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")


def picture(w, h, seed):
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 7.0 + yy / 11.0)], -1)
    a += rs.normal(0, 20, a.shape)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rs.randint(0, w - 10), rs.randint(0, h - 10)
        d.ellipse([x0, y0, x0 + rs.randint(5, w // 2), y0 + rs.randint(5, h // 2)],
                  fill=tuple(int(v) for v in rs.randint(0, 256, 3)))
    return im


def main():
    imgs = [picture(100, 100, 1), picture(256, 200, 2), picture(48, 48, 3).convert("L")]
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with h5py.File(os.path.join(FIX, "data_ref.h5"), "w") as f:
        f.attrs["version"] = 1
        for i, im in enumerate(imgs):
            path = os.path.join(FIX, "data_img%d.jpg" % i)
            im.save(path, quality=90)
            dec = Image.open(path).convert("RGB")
            r = dec.resize((224, 224), Image.BILINEAR)   # what T.Resize((224, 224)) does
            f.create_dataset("resized%d" % i, data=np.asarray(r, dtype=np.uint8),
                             compression="gzip")
        levels = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3))
        lut = norm(T.ToTensor()(Image.fromarray(levels, "RGB")))   # [3, 1, 256]
        f.create_dataset("norm_lut", data=lut[:, 0, :].numpy().astype(np.float32))
        tf = T.Compose([T.Resize((224, 224)), T.ToTensor(), norm])
        dec = Image.open(os.path.join(FIX, "data_img0.jpg")).convert("RGB")
        f.create_dataset("eval0_rgb", data=tf(dec).numpy()[:, :32], compression="gzip")
        bgr = Image.fromarray(np.asarray(dec)[:, :, ::-1].copy(), "RGB")
        f.create_dataset("eval0_bgr", data=tf(bgr).numpy(), compression="gzip")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
