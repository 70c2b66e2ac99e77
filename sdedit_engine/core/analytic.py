"""An analytic diffusion prior: a mixture of isotropic Gaussians in latent shape.

For ``p(x0) = Σ_k π_k N(μ_k, s_k² I)`` everything SDEdit needs is closed-form, which makes it the
yardstick for the samplers (tests, benchmarks, the demo):

- the noisy marginal at level σ is ``Σ_k π_k N(μ_k, (s_k² + σ²) I)``;
- the exact denoiser is ``E[x0 | x_σ] = Σ_k w_k(x_σ) (s_k² x_σ + σ² μ_k)/(s_k² + σ²)`` with posterior
  component weights ``w_k ∝ π_k N(x_σ; μ_k, (s_k² + σ²) I)``;
- the exact SDEdit output for a guide g is: x_σ0 = g + σ0·z, draw k ~ w(x_σ0), then
  x0 ~ N((s_k² x_σ0 + σ0² μ_k)/(s_k² + σ0²), s_k² σ0²/(s_k² + σ0²) I) — what an exact reverse-SDE solve
  from σ0 produces.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .denoisers import CountingDenoiser
from .schedules import DiscreteSchedule


class GaussianMixturePrior(CountingDenoiser):
    """A Gaussian-mixture prior over tensors of ``shape`` that acts as an exact σ-space denoiser.

    Calling the object is the denoiser: ``prior(x, sigma) -> E[x0 | x]``; ``schedule`` (the plain linear
    DDPM table by default, like the official SDEdit code) turns t0 into σ. ``calls`` counts denoiser
    calls (it is a :class:`~sdedit_engine.core.denoisers.CountingDenoiser`), so callers can check how
    many model evaluations a method spends.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: Sequence[float] | torch.Tensor,
        weights: Optional[Sequence[float] | torch.Tensor] = None,
        schedule: Optional[DiscreteSchedule] = None,
    ):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k = self.means.shape[0]
        self.shape = tuple(self.means.shape[1:])
        self.dim = int(math.prod(self.shape))
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(k)
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.schedule = schedule if schedule is not None else DiscreteSchedule.linear()
        super().__init__()

    @classmethod
    def random(
        cls,
        num_components: int = 3,
        shape: Sequence[int] = (4, 8, 8),
        spread: float = 1.0,
        std: float | Sequence[float] = 0.5,
        seed: int = 0,
        schedule: Optional[DiscreteSchedule] = None,
        weights: Optional[Sequence[float]] = None,
    ) -> "GaussianMixturePrior":
        """Component means drawn i.i.d. N(0, spread²) per coordinate (seeded), isotropic stds ``std``."""
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn((num_components, *shape), generator=g, dtype=torch.float64)
        stds = [std] * num_components if isinstance(std, (int, float)) else list(std)
        return cls(means, stds, weights, schedule)

    # -- the denoiser ---------------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def log_component_weights(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log w_k(x) at noise level σ (per item), shape (B, K)."""
        xf = self._flat(x)
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=xf.device).reshape(-1, 1).expand(xf.shape[0], 1)
        var = self.stds.to(xf.device)[None, :] ** 2 + sig**2  # (B, K)
        mu = self.means.reshape(len(self.stds), self.dim).to(xf.device)
        sq = torch.cdist(xf, mu) ** 2  # (B, K)
        logits = self.weights.to(xf.device).log()[None] - 0.5 * self.dim * var.log() - 0.5 * sq / var
        return logits - torch.logsumexp(logits, dim=1, keepdim=True)

    def denoise(self, x: torch.Tensor, sigma, **_: object) -> torch.Tensor:
        """The exact ``E[x0 | x_σ]`` (calling the prior counts the call and returns this)."""
        xf = self._flat(x)
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=xf.device).reshape(-1, 1).expand(xf.shape[0], 1)
        w = self.log_component_weights(x, sig).exp()  # (B, K)
        s2 = self.stds.to(xf.device)[None, :] ** 2
        mu = self.means.reshape(len(self.stds), self.dim).to(xf.device)
        coef_x = s2 / (s2 + sig**2)  # (B, K)
        coef_mu = sig**2 / (s2 + sig**2)
        d = (w * coef_x).sum(1, keepdim=True) * xf + (w * coef_mu) @ mu
        return d.reshape(x.shape).to(x.dtype)

    def flow_denoise(self, x: torch.Tensor, s, **_: object) -> torch.Tensor:
        """The exact denoiser of the same prior in flow coordinates ``x_s = (1 − s)·x0 + s·ε``, s ∈ [0, 1].

        Written directly in those coordinates (not through the S = s/(1 − s) bridge, so it can check
        it): component k gives x_s ~ N((1 − s)μ_k, v_k I) with v_k = (1 − s)²s_k² + s², and
        ``E[x0 | x_s, k] = μ_k + (1 − s)s_k²/v_k·(x_s − (1 − s)μ_k)``. Defined at s = 1 (returns the
        prior mean there)."""
        self.calls += 1
        xf = self._flat(x)
        sv = torch.as_tensor(s, dtype=torch.float64, device=xf.device).reshape(-1, 1).expand(xf.shape[0], 1)
        a = 1.0 - sv
        s2 = self.stds.to(xf.device)[None, :] ** 2
        var = a * a * s2 + sv * sv  # (B, K)
        mu = self.means.reshape(len(self.stds), self.dim).to(xf.device)
        sq = ((xf[:, None, :] - a[:, :, None] * mu[None]) ** 2).sum(-1)  # |x − (1 − s)μ_k|²
        logits = self.weights.to(xf.device).log()[None] - 0.5 * self.dim * var.log() - 0.5 * sq / var
        w = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
        gain = a * s2 / var  # (B, K)
        d = (w * gain).sum(1, keepdim=True) * xf + (w * (1.0 - a * gain)) @ mu
        return d.reshape(x.shape).to(x.dtype)

    # -- exact sampling ------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws from the prior and their component labels."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        std = self.stds[comp].reshape(-1, *([1] * len(self.shape)))
        return self.means[comp] + std * z, comp

    def posterior_sample(self, x_sigma: torch.Tensor, sigma: float, generator: torch.Generator):
        """Exact draws from p(x0 | x_σ) and the drawn component labels."""
        w = self.log_component_weights(x_sigma, sigma).exp()
        comp = torch.multinomial(w, 1, generator=generator).squeeze(1)
        s2 = (self.stds[comp] ** 2).reshape(-1, *([1] * len(self.shape)))
        mean = (s2 * x_sigma + sigma**2 * self.means[comp]) / (s2 + sigma**2)
        std = (s2 * sigma**2 / (s2 + sigma**2)).sqrt()
        return mean + std * torch.randn(x_sigma.shape, generator=generator, dtype=torch.float64), comp

    def exact_sdedit(self, guide: torch.Tensor, sigma0: float, n: int, generator: torch.Generator):
        """n exact SDEdit outputs for one guide (shape ``self.shape``) at start level σ0, with labels."""
        g = guide.to(torch.float64).reshape(1, *self.shape).expand(n, *self.shape)
        x_sigma = g + sigma0 * torch.randn(g.shape, generator=generator, dtype=torch.float64)
        return self.posterior_sample(x_sigma, sigma0, generator)

    # -- measures ------------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of the prior (σ = 0) per item."""
        xf = self._flat(x)
        var = self.stds[None, :] ** 2
        sq = torch.cdist(xf, self.means.reshape(len(self.stds), self.dim)) ** 2
        logits = self.weights.log()[None] - 0.5 * self.dim * (2 * math.pi * var).log() - 0.5 * sq / var
        return torch.logsumexp(logits, dim=1)

    def nearest_component(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, RMS distance per coordinate) of the nearest component mean, per item."""
        dist = torch.cdist(self._flat(x), self.means.reshape(len(self.stds), self.dim))
        d, k = dist.min(dim=1)
        return k, d / math.sqrt(self.dim)


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance 2E|A−B| − E|A−A'| − E|B−B'| between two samples (rows), a metric on distributions."""
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    n, m = a.shape[0], b.shape[0]
    ab = torch.cdist(a, b).mean()
    aa = torch.cdist(a, a).sum() / (n * (n - 1))
    bb = torch.cdist(b, b).sum() / (m * (m - 1))
    return float(2 * ab - aa - bb)


def energy_test(a: torch.Tensor, b: torch.Tensor, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Energy distance of two samples and its permutation p-value (Székely & Rizzo's two-sample test).

    The distance is :func:`energy_distance` (an unbiased estimate: it scatters around 0, and may dip
    below it, when both samples come from one law). The p-value is the share of random relabellings of
    the pooled sample whose distance is at least the observed one, from one pooled distance matrix
    (each permutation is three quadratic forms of it). A small p (< 0.01) means the samples differ.
    """
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    n, m = a.shape[0], b.shape[0]
    d = torch.cdist(torch.cat([a, b]), torch.cat([a, b]))
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(permutations + 1, n + m, dtype=torch.float64)
    labels[0, :n] = 1  # the observed split first
    for k in range(1, permutations + 1):
        labels[k, torch.randperm(n + m, generator=g)[:n]] = 1
    u, v = labels, 1 - labels
    du, dv = u @ d, v @ d  # (P, N)
    aa, bb, ab = (du * u).sum(1), (dv * v).sum(1), (du * v).sum(1)
    stats = 2 * ab / (n * m) - aa / (n * (n - 1)) - bb / (m * (m - 1))
    return float(stats[0]), float((stats[1:] >= stats[0]).sum() + 1) / (permutations + 1)
