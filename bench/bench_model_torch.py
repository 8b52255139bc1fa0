#!/usr/bin/python3
"""Times the whole POSTER model in PyTorch (float32, 2 threads) so the C model's
benchmark can be reported as a ratio against PyTorch on the same machine.

Model: our restatement tests/reference/poster_ref.py, default options (large, depth 8,
7 classes), deterministic contract weights. Batch 16 by default.
  forward          : model.eval(), torch.no_grad()         (inference)
  forward+backward : model.train(), drop path 0, loss 2*LSCE(0.2)+CE, loss.backward()
                     (one training step's compute without the optimizer update)
Prints the median of `reps` timed runs (after one warm-up run) and images/s.

Usage: /usr/bin/python3 bench/bench_model_torch.py [reps] [batch] [threads]
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import poster_ref as pr  # noqa: E402


def timed(fn, reps):
    fn()                                   # warm-up (allocator, OpenMP pool)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    model = pr.Poster(pr.PosterOptions())
    pr.load_contract_state(model)
    x = torch.from_numpy(pr.contract_input((batch, 3, 224, 224)))
    target = torch.arange(batch) % model.opts.num_classes

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        loss = pr.poster_loss(model(x), target)
        loss.backward()

    print("torch %s, %d threads, batch %d, %d timed runs (median), POSTER large, float32"
          % (torch.__version__, torch.get_num_threads(), batch, reps))
    model.eval()
    tf, all_f = timed(fwd, reps)
    model.train()
    model.set_drop_path(0.0)
    tb, all_b = timed(fwd_bwd, reps)
    print("forward          : %8.3f s/batch  %7.2f images/s   (runs: %s)"
          % (tf, batch / tf, ", ".join("%.3f" % t for t in all_f)))
    print("forward+backward : %8.3f s/batch  %7.2f images/s   (runs: %s)"
          % (tb, batch / tb, ", ".join("%.3f" % t for t in all_b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
