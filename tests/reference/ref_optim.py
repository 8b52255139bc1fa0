#!/usr/bin/env python3
# Writes tests/fixtures/optim_ref.h5: parameters of a tiny two-layer network after
# 3 steps of each optimizer, with the official POSTER loss 2*LSCE(0.2) + CE, and
# the loss values and logit gradients for the loss test. Run with /usr/bin/python3
# (torch 1.13). float64 throughout, stored as float32.
#
# The SAM class is the official SAM recipe (first_step / second_step as in the
# public SAM implementation that POSTER uses), written out here.
import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = "tests/fixtures/optim_ref.h5"
B, D, H, K, STEPS = 8, 5, 6, 4, 3
rs = np.random.RandomState(7)
init = {
    "w1": rs.uniform(-0.5, 0.5, (H, D)),
    "b1": rs.uniform(-0.5, 0.5, (H,)),
    "w2": rs.uniform(-0.5, 0.5, (K, H)),
    "b2": rs.uniform(-0.5, 0.5, (K,)),
}
# store float32-representable values so C starts from the same numbers
init = {k: v.astype(np.float32).astype(np.float64) for k, v in init.items()}
xs = rs.uniform(-1, 1, (STEPS, B, D)).astype(np.float32).astype(np.float64)
ys = rs.randint(0, K, (STEPS, B))


def lsce(x, y, s):
    lp = F.log_softmax(x, dim=-1)
    nll = -lp.gather(dim=-1, index=y.unsqueeze(1)).squeeze(1)
    return ((1 - s) * nll + s * (-lp.mean(dim=-1))).mean()


def official_loss(x, y):
    return 2 * lsce(x, y, 0.2) + F.cross_entropy(x, y)


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kw):
        defaults = dict(rho=rho, adaptive=adaptive, **kw)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **kw)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self):
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                e_w = (torch.pow(p, 2) if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)

    @torch.no_grad()
    def second_step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()

    def _grad_norm(self):
        return torch.norm(torch.stack([
            ((torch.abs(p) if group["adaptive"] else 1.0) * p.grad).norm(p=2)
            for group in self.param_groups for p in group["params"] if p.grad is not None]), p=2)


def run(name, make_opt, sam=False):
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    params = [ps["w1"], ps["b1"], ps["w2"], ps["b2"]]
    opt = make_opt(params)

    def closure(i):
        x = torch.tensor(xs[i]); y = torch.tensor(ys[i])
        h = F.linear(x, ps["w1"], ps["b1"])
        out = F.linear(h, ps["w2"], ps["b2"])
        loss = official_loss(out, y)
        loss.backward()
        return loss

    for i in range(STEPS):
        opt.zero_grad()
        closure(i)
        if sam:
            opt.first_step(); opt.zero_grad(); closure(i); opt.second_step()
        else:
            opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


cases = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd_plain": lambda p: torch.optim.SGD(p, lr=0.1),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "sam_adam": lambda p: SAM(p, torch.optim.Adam, rho=0.05, lr=1e-2),
    "asam_sgd": lambda p: SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1, momentum=0.9),
}

with h5py.File(OUT, "w") as f:
    f.attrs["format"] = "poster-test-fixture"
    f.attrs["version"] = 1
    for k, v in init.items():
        f[f"init/{k}"] = v.astype(np.float32)
    f["x"] = xs.astype(np.float32)
    f["y"] = ys.astype(np.int64)
    for name, mk in cases.items():
        out = run(name, mk, sam=name.endswith(("sam_adam", "asam_sgd")))
        for k, v in out.items():
            f[f"{name}/{k}"] = v.astype(np.float32)
    # Loss values and d loss / d logits for three loss settings on fixed logits.
    logits = rs.normal(0, 2, (B, K))
    y = torch.tensor(ys[0])
    f["loss/logits"] = logits.astype(np.float32)
    for name, fn in {
        "official": official_loss,
        "ce": lambda x, t: F.cross_entropy(x, t),
        "lsce": lambda x, t: lsce(x, t, 0.1),
    }.items():
        lt = torch.tensor(logits, requires_grad=True)
        l = fn(lt, y)
        l.backward()
        f[f"loss/{name}/value"] = np.array([l.item()], dtype=np.float32)
        f[f"loss/{name}/grad"] = lt.grad.numpy().astype(np.float32)
print("wrote", OUT)
