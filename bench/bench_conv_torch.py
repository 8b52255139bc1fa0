#!/usr/bin/python3
"""Times the conv2d shapes of bench/bench_conv.c in PyTorch (float32, 2 threads)
so bench_conv's numbers can be reported as a ratio against PyTorch on the same
machine. Forward = F.conv2d; backward = autograd.grad for x and w (as in C).

Usage: /usr/bin/python3 bench/bench_conv_torch.py [reps] [batch]
"""
import sys
import time

import torch
import torch.nn.functional as F

# name, cin, hw, cout, k, stride, count per image (same table as bench_conv.c)
SHAPES = [
    ("stem 3->64 112", 3, 112, 64, 3, 1, 1),
    ("s1u0 64->64 112", 64, 112, 64, 3, 1, 1),
    ("s1u0 64->64 112 s2", 64, 112, 64, 3, 2, 1),
    ("64->64 56", 64, 56, 64, 3, 1, 4),
    ("s2u0 64->128 56", 64, 56, 128, 3, 1, 1),
    ("s2u0 128->128 56 s2", 128, 56, 128, 3, 2, 1),
    ("sc 1x1 64->128 56 s2", 64, 56, 128, 1, 2, 1),
    ("128->128 28", 128, 28, 128, 3, 1, 6),
    ("s3u0 128->256 28", 128, 28, 256, 3, 1, 1),
    ("s3u0 256->256 28 s2", 256, 28, 256, 3, 2, 1),
    ("sc 1x1 128->256 28 s2", 128, 28, 256, 1, 2, 1),
    ("256->256 14", 256, 14, 256, 3, 1, 26),
]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    torch.set_num_threads(2)
    torch.manual_seed(0)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    best = 1e30
    for r in range(3):
        t = time.perf_counter()
        torch.mm(a, b)
        t = time.perf_counter() - t
        if r > 0:
            best = min(best, t)
    print("torch %s, threads %d, batch %d; mm 2048^3: %.1f GFLOP/s"
          % (torch.__version__, torch.get_num_threads(), batch, 2 * 2048 ** 3 / best * 1e-9))
    print("%-24s %5s | %9s %7s %9s %7s" % ("conv (x count/img)", "GMAC", "fwd ms", "GF/s",
                                           "bwd ms", "GF/s"))
    tf = tb = 0.0
    for name, cin, hw, cout, k, s, count in SHAPES:
        x = torch.randn(batch, cin, hw, hw, requires_grad=True)
        w = torch.randn(cout, cin, k, k, requires_grad=True)
        ho = (hw + 2 * (k // 2) - k) // s + 1
        dy = torch.randn(batch, cout, ho, ho)
        macs = batch * cout * ho * ho * cin * k * k
        bf = bb = 1e30
        for r in range(reps + 1):
            t0 = time.perf_counter()
            y = F.conv2d(x, w, None, stride=s, padding=k // 2)
            t1 = time.perf_counter()
            torch.autograd.grad(y, (x, w), dy)
            t2 = time.perf_counter()
            if r > 0:
                bf = min(bf, t1 - t0)
                bb = min(bb, t2 - t1)
        print("%-18s (x%2d) %5.2f | %9.1f %7.1f %9.1f %7.1f"
              % (name, count, macs * 1e-9, bf * 1e3, 2 * macs / bf * 1e-9, bb * 1e3,
                 4 * macs / bb * 1e-9), flush=True)
        tf += bf * count
        tb += bb * count
    print("IR-50 stages 1-3 convs, batch %d: forward %.2f s, backward %.2f s" % (batch, tf, tb))


if __name__ == "__main__":
    main()
