#!/usr/bin/python3
"""Times the whole POSTER model in PyTorch (float32, 2 threads) so the C model's
benchmark (bench/bench_model.c) can be reported as a ratio against PyTorch on the
same machine, for the same work.

Model: our restatement tests/reference/poster_ref.py, default options (large, depth 8,
7 classes), deterministic contract weights. Batch 16 by default.
  forward          : model.eval(), torch.no_grad()                     (inference)
  forward+backward : model.train(), drop path on (0.1 schedule), loss 2*LSCE(0.2)+CE,
                     loss.backward()                 (one pass without the update)
  SAM step         : the official training loop's step: zero_grad, forward, loss,
                     backward, SAM first_step (rho 0.05, non-adaptive: e = rho g/||g||,
                     old weights saved, w += e, zero_grad), forward, loss, backward at
                     w + e, second_step (w = old weights, Adam lr 4e-5 step, zero_grad)
Prints the median of `reps` timed runs (after one warm-up run), images/s, and the
process's peak resident memory (getrusage).

Usage: /usr/bin/python3 bench/bench_model_torch.py [reps] [batch] [threads] [skip]
  skip: comma list of forward,fwd_bwd,sam_step to leave out
"""
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import poster_ref as pr  # noqa: E402


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization around a base optimizer, as the official POSTER
    training uses it (first_step / second_step; restated from the SAM paper's
    algorithm and the spec's "Training" section)."""

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    def _grad_norm(self):
        norms = [((torch.abs(p) if g["adaptive"] else 1.0) * p.grad).norm(p=2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.norm(torch.stack(norms), p=2)

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        grad_norm = self._grad_norm()
        for g in self.param_groups:
            scale = g["rho"] / (grad_norm + 1e-12)
            for p in g["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_((torch.pow(p, 2) if g["adaptive"] else 1.0) * p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()


def timed(fn, reps):
    fn()                                   # warm-up (allocator, OpenMP pool, Adam state)
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
    skip = sys.argv[4].split(",") if len(sys.argv) > 4 else []
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    model = pr.Poster(pr.PosterOptions())
    pr.load_contract_state(model)
    x = torch.from_numpy(pr.contract_input((batch, 3, 224, 224)))
    target = torch.arange(batch) % model.opts.num_classes
    optimizer = SAM(model.parameters(), torch.optim.Adam, lr=4e-5, rho=0.05, adaptive=False)

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        loss = pr.poster_loss(model(x), target)
        loss.backward()

    def sam_step():
        optimizer.zero_grad()
        loss = pr.poster_loss(model(x), target)
        loss.backward()
        optimizer.first_step(zero_grad=True)
        pr.poster_loss(model(x), target).backward()
        optimizer.second_step(zero_grad=True)

    print("torch %s, %d threads, batch %d, %d timed runs (median), POSTER large, float32"
          % (torch.__version__, torch.get_num_threads(), batch, reps))
    sys.stdout.flush()
    rows = []
    if "forward" not in skip:
        model.eval()
        rows.append(("forward", timed(fwd, reps)))
    model.train()
    model.set_drop_path(1.0)               # the training schedule linspace(0, 0.1, depth)
    if "fwd_bwd" not in skip:
        rows.append(("forward+backward", timed(fwd_bwd, reps)))
    if "sam_step" not in skip:
        rows.append(("SAM step", timed(sam_step, reps)))
    for name, (t, all_t) in rows:
        print("%-16s : %8.3f s/batch  %7.2f images/s   (runs: %s)"
              % (name, t, batch / t, ", ".join("%.3f" % v for v in all_t)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("peak resident memory: %.0f MB" % rss)
    print("RESULT torch_peak_rss_mb %.0f 0" % rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
