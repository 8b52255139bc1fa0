#!/usr/bin/python3
"""Our own PyTorch restatement of POSTER (see docs/POSTER.md).

Written from docs/POSTER.md and a reading of the official code; it is the reference the
C model is compared against (tests/reference/make_poster_fixture.py,
tools/check_torch.sh). State dict names and shapes equal the official model's
(docs/poster_state_dict.tsv) for the default options.

Also defines THE CONTRACT with the C side for deterministic weights and inputs
(no weights are stored anywhere): `contract_values(name, shape, role)`.

Run as a script to check the default model against the TSV:
    /usr/bin/python3 tests/reference/poster_ref.py [--tsv PATH]
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_IMG = 50      # image tokens: 1 class token + 49 patches
N_TOK = 100     # image + landmark tokens
DIM = 512
HEADS = 8


# ----------------------------------------------------------------------------
# Options

class PosterOptions:
    """The model options the C side exposes (layers/poster.h)."""

    def __init__(self, depth=8, pyramid_levels=3, token_mix=True, landmark_bn="batch",
                 streams="both", num_classes=7, ir_units=(3, 4, 14), drop_path_rate=0.1,
                 run_gdc=False):
        assert depth >= 1
        assert pyramid_levels in (1, 2, 3)
        assert landmark_bn in ("batch", "frozen")
        assert streams in ("both", "image")
        assert len(ir_units) == 3 and all(u >= 1 for u in ir_units)
        self.depth = depth
        self.pyramid_levels = pyramid_levels
        self.token_mix = bool(token_mix)
        self.landmark_bn = landmark_bn
        self.streams = streams
        self.num_classes = num_classes
        self.ir_units = tuple(ir_units)
        self.drop_path_rate = drop_path_rate
        # The official MobileFaceNet also runs its GDC head (output discarded); in
        # training that updates the GDC's BatchNorm running statistics. docs/POSTER.md
        # skips it; run_gdc=True reproduces the official side effect.
        self.run_gdc = run_gdc

    @staticmethod
    def from_text(text):
        """Parses the output of text()."""
        kv = dict(item.split("=", 1) for item in text.split())
        return PosterOptions(
            depth=int(kv["depth"]), pyramid_levels=int(kv["pyramid_levels"]),
            token_mix=kv["token_mix"] == "on", landmark_bn=kv["landmark_bn"],
            streams=kv["streams"], num_classes=int(kv["num_classes"]),
            ir_units=tuple(int(u) for u in kv["ir_units"].split(",")),
            drop_path_rate=float(kv["drop_path_rate"]))

    def text(self):
        return ("depth=%d pyramid_levels=%d token_mix=%s landmark_bn=%s streams=%s "
                "num_classes=%d ir_units=%d,%d,%d drop_path_rate=%g" % (
                    self.depth, self.pyramid_levels, "on" if self.token_mix else "off",
                    self.landmark_bn, self.streams, self.num_classes, *self.ir_units,
                    self.drop_path_rate))


# ----------------------------------------------------------------------------
# Landmark stream: MobileFaceNet (frozen)

class ConvBN(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d [-> PReLU]. Keys conv / bn / prelu."""

    def __init__(self, cin, cout, k, s=1, p=0, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.prelu = nn.PReLU(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.act else x


class DepthWise(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear projection [+ input]."""

    def __init__(self, cin, cout, groups, stride, residual):
        super().__init__()
        self.conv = ConvBN(cin, groups, 1)
        self.conv_dw = ConvBN(groups, groups, 3, stride, 1, groups=groups)
        self.project = ConvBN(groups, cout, 1, act=False)
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class GDC(nn.Module):
    """The MobileFaceNet embedding head: present in the state, output unused."""

    def __init__(self, emb=136):
        super().__init__()
        self.conv_6_dw = ConvBN(512, 512, 7, groups=512, act=False)
        self.linear = nn.Linear(512, emb, bias=False)
        self.bn = nn.BatchNorm1d(emb)

    def forward(self, x):
        return self.bn(self.linear(self.conv_6_dw(x).flatten(1)))


class MobileFaceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvBN(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBN(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, 2, False)
        # The official code wraps these in a module with a `.model` Sequential;
        # the project's names (the TSV) have no `.model` level.
        self.conv_3 = nn.Sequential(*[DepthWise(64, 64, 128, 1, True) for _ in range(4)])
        self.conv_34 = DepthWise(64, 128, 256, 2, False)
        self.conv_4 = nn.Sequential(*[DepthWise(128, 128, 256, 1, True) for _ in range(6)])
        self.conv_45 = DepthWise(128, 128, 512, 2, False)
        self.conv_5 = nn.Sequential(*[DepthWise(128, 128, 256, 1, True) for _ in range(2)])
        self.conv_6_sep = ConvBN(128, 512, 1)
        self.output_layer = GDC(136)

    def forward(self, x, run_gdc=False):  # [B,3,112,112] -> [B,512,7,7]
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_5(self.conv_45(self.conv_4(self.conv_34(self.conv_3(self.conv_23(x))))))
        feat = self.conv_6_sep(x)
        if run_gdc:
            self.output_layer(feat)
        return feat


# ----------------------------------------------------------------------------
# Image stream: IR-50, first three stages

class Subsample(nn.Module):
    """The identity shortcut with stride: MaxPool2d(1, s) == x[:, :, ::s, ::s]."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x[:, :, ::self.s, ::self.s]


class BottleneckIR(nn.Module):
    def __init__(self, cin, d, stride):
        super().__init__()
        # shortcut first: the official state dict order
        if cin == d:
            self.shortcut_layer = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, d, 1, stride, bias=False),
                                                nn.BatchNorm2d(d))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin),
                                       nn.Conv2d(cin, d, 3, 1, 1, bias=False),
                                       nn.PReLU(d),
                                       nn.Conv2d(d, d, 3, stride, 1, bias=False),
                                       nn.BatchNorm2d(d))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50Trunk(nn.Module):
    def __init__(self, units=(3, 4, 14)):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(64), nn.PReLU(64))
        body = []
        for cin, d, n in ((64, 64, units[0]), (64, 128, units[1]), (128, 256, units[2])):
            body.append(BottleneckIR(cin, d, 2))
            body += [BottleneckIR(d, d, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*body)
        # Declared, never called (indices as in the official Sequential).
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.0), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x):  # [B,3,112,112] -> [B,49,1024]
        x = self.body(self.input_layer(x))          # [B,256,14,14]
        return x.reshape(x.shape[0], 49, 1024)      # raw memory-order reshape


# ----------------------------------------------------------------------------
# Cross-fusion pyramid transformer

class DropPath(nn.Module):
    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1),
                                             dtype=x.dtype, device=x.device))
        return x / keep * mask


class CrossAttention(nn.Module):
    """Keys and values from one half of the tokens, queries (unprojected) from the other."""

    def __init__(self, dim, kv_from_image):
        super().__init__()
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.kv_from_image = kv_from_image
        self.scale = (dim // HEADS) ** -0.5

    def forward(self, y):  # y: normed [B,100,dim] -> [B,50,dim]
        img, lm = y[:, :N_IMG], y[:, N_IMG:]
        src, q = (img, lm) if self.kv_from_image else (lm, img)
        B, N, C = src.shape
        c = C // HEADS
        kv = self.kv(src).reshape(B, N, 2, HEADS, c).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]                                   # [B,h,N,c]
        q = q.reshape(B, q.shape[1], HEADS, c).permute(0, 2, 1, 3)
        a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, q.shape[2], C)
        return self.proj(o)


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, token_mix, dp):
        super().__init__()
        # registration order = the TSV's key order (norms first)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.norm4 = nn.LayerNorm(dim, eps=1e-6)
        self.attn_img = CrossAttention(dim, kv_from_image=True)
        self.attn_lm = CrossAttention(dim, kv_from_image=False)
        self.mlp1 = Mlp(dim)
        self.mlp2 = Mlp(dim)
        self.drop_path = DropPath(dp)
        if token_mix:
            self.conv = nn.Conv1d(N_TOK, N_TOK, 1)
        self.token_mix = token_mix

    def forward(self, x):
        img, lm = x[:, :N_IMG], x[:, N_IMG:]
        img = img + self.drop_path(self.attn_img(self.norm1(x)))
        img = img + self.drop_path(self.mlp1(self.norm2(img)))
        lm = lm + self.drop_path(self.attn_lm(self.norm3(x)))
        lm = lm + self.drop_path(self.mlp2(self.norm4(lm)))
        x = torch.cat((img, lm), dim=1)
        return self.conv(x) if self.token_mix else x


class PyramidBlock(nn.Module):
    def __init__(self, levels, token_mix, dp):
        super().__init__()
        self.block_l = Block(DIM, token_mix, dp)
        if levels >= 2:
            self.block_m = Block(DIM // 2, token_mix, dp)
        if levels >= 3:
            self.block_s = Block(DIM // 4, token_mix, dp)
        if levels >= 2:
            self.upsample_m = nn.ConvTranspose1d(N_TOK, N_TOK, 2, 2)
        if levels >= 3:
            self.upsample_s = nn.ConvTranspose1d(N_TOK, N_TOK, 2, 2)
        self.levels = levels

    def forward(self, xs):
        l = self.block_l(xs[0])
        if self.levels == 1:
            return [l]
        m = self.block_m(xs[1])
        if self.levels == 3:
            s = self.block_s(xs[2])
            m = self.upsample_s(s) + m
            l = l + self.upsample_m(m)
            return [l, m, s]
        l = l + self.upsample_m(m)
        return [l, m]


class PyramidFuse(nn.Module):
    def __init__(self, o):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, N_IMG, DIM))
        if o.pyramid_levels >= 2:
            self.downsample_m = nn.Conv1d(N_TOK, N_TOK, 2, 2)
        if o.pyramid_levels >= 3:
            self.downsample_s = nn.Conv1d(N_TOK, N_TOK, 4, 4)
        rates = [r.item() for r in torch.linspace(0, o.drop_path_rate, o.depth)]
        self.blocks = nn.ModuleList([PyramidBlock(o.pyramid_levels, o.token_mix, r)
                                     for r in rates])
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.levels = o.pyramid_levels

    def forward(self, img, lm):  # [B,49,512] x2 -> [B,512]
        img = torch.cat((img.mean(1, keepdim=True), img), dim=1) + self.pos_embed
        lm = torch.cat((lm.mean(1, keepdim=True), lm), dim=1)
        t = torch.cat((img, lm), dim=1)                          # [B,100,512]
        xs = [t]
        if self.levels >= 2:
            xs.append(self.downsample_m(t))                      # [B,100,256]
        if self.levels >= 3:
            xs.append(self.downsample_s(t))                      # [B,100,128]
        for b in self.blocks:
            xs = b(xs)
        return self.norm(xs[0])[:, 0, :]


class SEBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, y):
        return y * torch.sigmoid(self.linear2(self.relu(self.linear1(y))))


class Head(nn.Module):
    def __init__(self, dim, k):
        super().__init__()
        self.linear = nn.Linear(dim, k)

    def forward(self, y):
        return self.linear(y)


class Poster(nn.Module):
    def __init__(self, o=None):
        super().__init__()
        o = o or PosterOptions()
        self.opts = o
        self.face_landback = MobileFaceNet()
        for p in self.face_landback.parameters():
            p.requires_grad_(False)
        self.ir_back = IR50Trunk(o.ir_units)
        self.ir_layer = nn.Linear(1024, DIM)
        self.pyramid_fuse = PyramidFuse(o)
        self.se_block = SEBlock(DIM)
        self.head = Head(DIM, o.num_classes)

    def train(self, mode=True):
        super().train(mode)
        if self.opts.landmark_bn == "frozen":
            self.face_landback.eval()
        return self

    def set_drop_path(self, rate_scale):
        """Scales every block's drop path rate (0 turns drop path off)."""
        rates = torch.linspace(0, self.opts.drop_path_rate * rate_scale, self.opts.depth)
        for b, r in zip(self.pyramid_fuse.blocks, rates):
            for m in b.modules():
                if isinstance(m, DropPath):
                    m.rate = r.item()

    def forward(self, x):  # [B,3,224,224] -> logits [B,K]
        B = x.shape[0]
        x = F.interpolate(x, size=112)                       # nearest: pixel (2i, 2j)
        img = self.ir_layer(self.ir_back(x))                 # [B,49,512]
        if self.opts.streams == "both":
            lm = self.face_landback(x, self.opts.run_gdc)    # [B,512,7,7]
            lm = lm.reshape(B, 512, 49).transpose(1, 2)      # [B,49,512]
        else:
            lm = img
        y = self.pyramid_fuse(img, lm)
        return self.head(self.se_block(y))


def poster_loss(logits, target, smoothing=0.2):
    """Official loss: 2 * LSCE(smoothing) + CE."""
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, target[:, None])[:, 0]
    lsce = ((1 - smoothing) * nll + smoothing * (-logp.mean(dim=-1))).mean()
    return 2 * lsce + nll.mean()


def kink_allowance(model, x, target, tau=1.5e-6):
    """How much a float32 run may legitimately differ in its parameter gradients
    because a PReLU/ReLU input within rounding distance of 0 lands on the other
    side of the kink (then dL/dx_j changes by (1 - slope) * g_j, and every
    gradient upstream changes through train-mode BatchNorm sums).

    Runs one train forward (drop path 0; this updates BN running statistics, so
    call it after anything that reads them). An element is ambiguous when
    |x_j| < tau * rms(x) of its kink's input (float32 activations there are within
    ~3e-7 * rms of float64, rarely more than 1e-6 * rms). Returns ({param name: bound on ||grad change||, the sum
    of the exact per-element effects}, [(kink, ambiguous count), ...])."""
    kinks = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.PReLU) and name.startswith("ir_back.") or isinstance(mod, nn.ReLU):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: kinks.__setitem__(
                    name, (i[0], o, m.weight if isinstance(m, nn.PReLU) else None))))
    model.train()
    model.set_drop_path(0.0)
    loss = poster_loss(model(x), target)
    for h in hooks:
        h.remove()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    allow = {n: 0.0 for n, _ in params}
    sites = []
    for name, (xin, out, slope) in kinks.items():
        rms = xin.detach().pow(2).mean().sqrt().item()
        amb = (xin.detach().abs() < tau * rms).nonzero().tolist()
        sites.append((name, len(amb)))
        if not amb:
            continue
        g = torch.autograd.grad(loss, out, retain_graph=True)[0]   # dL/d(kink output)
        upstream = params
        for j in amb:
            j = tuple(j)
            if slope is None:
                d = g[j]                        # ReLU slope 1 vs 0
            else:
                d = (1.0 - slope[j[1]]) * g[j]  # PReLU slope 1 vs a_c
            v = torch.zeros_like(xin)
            v[j] = d
            eff = torch.autograd.grad(xin, [p for _, p in upstream], grad_outputs=v,
                                      retain_graph=True, allow_unused=True)
            for (n, _), e in zip(upstream, eff):
                if e is not None:
                    allow[n] += e.norm().item()
    return allow, sites


# ----------------------------------------------------------------------------
# THE CONTRACT: deterministic values by name

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def fnv1a64(name):
    h = 0xcbf29ce484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def contract_uniform(name, n):
    """u_i in [-1, 1), i < n, float64: ((splitmix64(h + i) >> 40) / 2**24) * 2 - 1."""
    h = np.uint64(fnv1a64(name))
    out = np.empty(n, dtype=np.float64)
    chunk = 1 << 22
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            i = np.arange(s, min(n, s + chunk), dtype=np.uint64)
            z = h + i + np.uint64(0x9e3779b97f4a7c15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
            z = z ^ (z >> np.uint64(31))
            out[s:s + len(i)] = (z >> np.uint64(40)).astype(np.float64) / 2.0 ** 24 * 2.0 - 1.0
    return out


def contract_values(name, shape, role):
    """float32 numpy array for a tensor by role (see tensor_roles)."""
    n = int(np.prod(shape)) if len(shape) else 1
    if role == "count":
        return np.zeros(shape, dtype=np.int64)
    u = contract_uniform(name, n)
    if role == "running_var":
        v = 1.0 + 0.25 * (u + 1.0)
    elif role == "running_mean":
        v = 0.1 * u
    elif role == "norm_weight":
        v = 1.0 + 0.1 * u
    elif role == "prelu_weight":
        v = 0.25 + 0.05 * u
    elif role == "bias":
        v = 0.1 * u
    elif role == "embed":
        v = 0.02 * u
    elif role == "weight":
        v = u / math.sqrt(float(np.prod(shape[1:])))
    else:
        raise ValueError("unknown role %s for %s" % (role, name))
    return v.astype(np.float32).reshape(shape)


def tensor_roles(model):
    """name -> role for every state_dict entry, decided by module type."""
    kinds = {}
    for mname, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            kinds[mname] = "norm"
        elif isinstance(m, nn.PReLU):
            kinds[mname] = "prelu"
    roles = {}
    for name, t in model.state_dict().items():
        mod, _, leaf = name.rpartition(".")
        if leaf == "num_batches_tracked":
            r = "count"
        elif leaf == "running_var":
            r = "running_var"
        elif leaf == "running_mean":
            r = "running_mean"
        elif leaf in ("pos_embed", "cls_token"):
            r = "embed"
        elif leaf == "bias":
            r = "bias"
        elif leaf == "weight" and kinds.get(mod) == "norm":
            assert t.ndim == 1, name
            r = "norm_weight"
        elif leaf == "weight" and kinds.get(mod) == "prelu":
            assert t.ndim == 1, name
            r = "prelu_weight"
        elif leaf == "weight":
            assert t.ndim >= 2, name
            r = "weight"
        else:
            raise AssertionError("no role for " + name)
        roles[name] = r
    return roles


def contract_state(model):
    """The deterministic state as {name: float32/int64 numpy array}."""
    roles = tensor_roles(model)
    return {n: contract_values(n, tuple(t.shape), roles[n])
            for n, t in model.state_dict().items()}


def load_contract_state(model, state=None):
    """Loads the contract state (float32 values, widened to the model's dtype)."""
    state = state if state is not None else contract_state(model)
    with torch.no_grad():
        for n, t in model.state_dict().items():
            t.copy_(torch.from_numpy(np.asarray(state[n])))
    return state


def contract_input(shape, name="input", scale=1.5):
    return (scale * contract_uniform(name, int(np.prod(shape)))).astype(np.float32).reshape(shape)


# ----------------------------------------------------------------------------

def read_tsv(path):
    rows = []
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            shape = () if cols[1] == "scalar" else tuple(int(s) for s in cols[1].split("x"))
            rows.append((cols[0], shape, cols[2]))
    return rows


def check_against_tsv(model, path):
    rows = read_tsv(path)
    sd = model.state_dict()
    ours = [(n, tuple(t.shape), str(t.dtype).replace("torch.", "")) for n, t in sd.items()]
    assert len(rows) == 1309, "TSV has %d rows" % len(rows)
    assert len(ours) == len(rows), "model has %d tensors, TSV %d" % (len(ours), len(rows))
    for a, b in zip(ours, rows):
        assert a == b, "mismatch: ours %s, TSV %s" % (a, b)
    frozen = {r.split("\t")[0] for r in open(path) if r.rstrip("\n").endswith("frozen")}
    for n, p in model.named_parameters():
        assert (not p.requires_grad) == (n in frozen), n
    return len(rows)


DEFAULT_TSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                           "poster_state_dict.tsv")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tsv", default=DEFAULT_TSV)
    a = ap.parse_args()
    model = Poster()
    n = check_against_tsv(model, a.tsv)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print("state dict matches %s: %d tensors, in order; trainable parameters %d"
          % (a.tsv, n, trainable))
    assert trainable == 70843151, trainable
    return 0


if __name__ == "__main__":
    sys.exit(main())
