"""Realism of landscape images: a small domain classifier with a known ground truth (torch + PIL strokes).

``realism(x) = P(domain | x) = sigmoid(f(x))`` where ``f`` is a small CNN (~0.1 M parameters) trained
to separate fresh procedural landscapes (label 1) from *off-domain* versions of them (label 0):

- stroke paintings (the paper's median filter + flat palette, :mod:`sdedit_engine.io.strokes`),
- partial stroke paintings and composites (a region painted over / a patch of another landscape
  pasted in) — the inputs of masked editing and compositing,
- Gaussian pixel noise (σ 0.03 … 0.15) and blur — the two ways a sampler typically fails.

Its ground truth is exact (which images come from the domain is known), so its quality is stated as
the ROC AUC on held-out landscapes vs. held-out stroke paintings (``bench/quality.py``), and the
SDEdit trade-off reads: realism = mean ``P(domain)`` over outputs, faithfulness = L2 to the guide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .domain import render_batch

WEIGHTS = Path(__file__).resolve().parent / "weights" / "realism.safetensors"


class RealismNet(nn.Module):
    """64² RGB in [0, 1] → logit of "is a landscape of the domain".

    A full-resolution 3×3 layer first (pixel noise and flat stroke regions are 1-pixel statistics),
    then four stride-2 stages, global average pooling and a linear head.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [width, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.SiLU()]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.SiLU(),
                       nn.Conv2d(b, b, 3, padding=1), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x * 2 - 1).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)).squeeze(-1)


def _blob_mask(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A random axis-aligned ellipse covering roughly 10–40 % of the image."""
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    ry, rx = rng.uniform(0.15, 0.35, 2) * size
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return torch.from_numpy((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32))


def corrupt(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Off-domain versions of landscapes ``x`` ``(B, 3, H, W)``: one random corruption per image (see module doc)."""
    from ..io.strokes import simulate_strokes

    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    S = x.shape[-1]
    for i in range(x.shape[0]):
        img = x[i : i + 1]
        kind = rng.integers(0, 6)
        if kind <= 1:  # stroke painting, whole image (twice as often: the main negative)
            k = int(rng.choice([5, 7, 9]))
            y = simulate_strokes(img, median_size=k, colors=int(rng.integers(3, 9)))
        elif kind == 2:  # strokes inside a blob
            m = _blob_mask(rng, S)
            y = img * (1 - m) + simulate_strokes(img, median_size=7, colors=int(rng.integers(3, 7))) * m
        elif kind == 3:  # composite of another landscape's patch
            other = torch.from_numpy(render_batch(1, int(rng.integers(1 << 30)), S)[0])
            m = _blob_mask(rng, S)
            y = img * (1 - m) + other * m
        elif kind == 4:  # pixel noise
            y = (img + rng.uniform(0.03, 0.15) * torch.randn(img.shape, generator=g)).clamp(0, 1)
        else:  # blur
            s = rng.uniform(0.8, 2.0)
            r = torch.arange(-4, 5.0)
            k1 = torch.exp(-r**2 / (2 * s * s))
            k1 = k1 / k1.sum()
            y = F.conv2d(F.pad(img, (4, 4, 0, 0), mode="replicate"), k1.view(1, 1, 1, 9).repeat(3, 1, 1, 1), groups=3)
            y = F.conv2d(F.pad(y, (0, 0, 4, 4), mode="replicate"), k1.view(1, 1, 9, 1).repeat(3, 1, 1, 1), groups=3)
        out.append(y)
    return torch.cat(out)


def train_realism(steps: int = 500, batch: int = 32, seed: int = 0, lr: float = 2e-3, pool: int = 2048,
                  log=None) -> RealismNet:
    """Train :class:`RealismNet` (seeded): a pool of ``pool`` landscapes and as many corruptions is rendered
    once (rendering dominates the cost), then ``steps`` minibatches of ``batch`` + ``batch`` are drawn
    from it with random horizontal flips (a mirrored landscape is still one)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    chunks = range(0, pool, 256)
    pos = torch.cat([torch.from_numpy(render_batch(256, 7_000_000 + seed * 1000 + i)[0]) for i in chunks])
    neg = torch.cat([corrupt(torch.from_numpy(render_batch(256, 8_000_000 + seed * 1000 + i)[0]), seed * 1000 + i)
                     for i in chunks])
    if log is not None:
        log(0, float("nan"))
    net = RealismNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    for k in range(steps):
        ip = torch.randint(0, pos.shape[0], (batch,), generator=g)
        ineg = torch.randint(0, neg.shape[0], (batch,), generator=g)
        x = torch.cat([pos[ip], neg[ineg]])
        flip = torch.rand(x.shape[0], generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.cat([torch.ones(batch), torch.zeros(batch)])
        for gr in opt.param_groups:
            gr["lr"] = lr * 0.5 * (1 + np.cos(np.pi * k / steps))
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and (k + 1) % 100 == 0:
            log(k + 1, loss.item())
    return net.eval().requires_grad_(False)


def save_realism(net: RealismNet, path: str | Path = WEIGHTS) -> None:
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(path))


_CACHE: dict[str, RealismNet] = {}


def load_realism(path: str | Path = WEIGHTS) -> RealismNet:
    """The shipped classifier (float32, cached per path)."""
    from safetensors.torch import load_file

    key = str(path)
    if key not in _CACHE:
        if not Path(path).is_file():
            raise FileNotFoundError(f"realism classifier weights not found: {path} (train with scripts/train_builtin.py --realism)")
        net = RealismNet()
        net.load_state_dict({k: v.float() for k, v in load_file(key).items()})
        _CACHE[key] = net.eval().requires_grad_(False)
    return _CACHE[key]


@torch.no_grad()
def realism(images: torch.Tensor, net: RealismNet | None = None) -> torch.Tensor:
    """``P(domain)`` per image of ``(B, 3, 64, 64)`` in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    net = net or load_realism()
    return torch.sigmoid(net(images.float().cpu()))


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) (ties count ½)."""
    p, n = pos.flatten()[:, None].double(), neg.flatten()[None, :].double()
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())
