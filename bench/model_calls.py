"""Model calls against the exact SDEdit law: how many denoiser calls each sampler / σ spacing needs before
its SDEdit outputs cannot be told from exact draws, on two Gaussian-mixture priors whose exact denoiser
and exact SDEdit law are closed-form.

- ``analytic``: the project's own prior (``core/analytic.py``): 3 isotropic components (std 0.5) in
  4×8×8, on the pixel-DDPM table of the official SDEdit code.
- ``independent``: a mixture written here from scratch (its own denoiser and exact posterior sampler,
  nothing shared with ``core/analytic.py``): 4 components in 32 dimensions with per-coordinate stds in
  [0.15, 0.8] and weights 0.4/0.3/0.2/0.1, on SD1.5's scaled-linear table.

The exact law: x_σ0 = g + σ0·z, then x0 ~ p(x0 | x_σ0), applied K times for K repeats. Per row, N sampler
outputs are compared with N exact draws by

- the energy distance and its **permutation p-value** (B random relabellings of the pooled 2N points;
  p = (1 + #{ED_perm ≥ ED}) / (1 + B)) — small p = distinguishable from the exact law;
- the **spread ratio**: within-component variance of the outputs over that of the exact draws (each
  point labelled by its most likely prior component), averaged over coordinates and components — the
  statistic the 20-step default failed (≈ 0.8);
- the component total variation (TV) between the two label histograms.

The paper's setting is ddpm on every timestep from t0 = 0.5 with K = 3 (1500 calls). ``ddim`` (an ODE,
a different law) is the negative control that shows the test's power.

    nice python bench/model_calls.py [--samples 2000] [--perms 200] [--t0 0.5] [--out bench/results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import RESULTS, machine, write_csv  # noqa: E402  (sets OMP_NUM_THREADS=1 first)

from sdedit_engine import sdedit  # noqa: E402
from sdedit_engine.core.analytic import GaussianMixturePrior  # noqa: E402
from sdedit_engine.core.schedules import DiscreteSchedule  # noqa: E402

# (sampler, spacing, steps per repeat, repeats); "paper" steps = every timestep from t0
CONFIGS = [
    ("ddpm", "uniform", "paper", 3),
    ("ddpm", "uniform", 20, 1),
    ("ddpm", "exponential", 10, 1),
    ("dpmpp_2m_sde", "uniform", 20, 1),
    ("dpmpp_2m_sde", "uniform", 30, 1),
    ("dpmpp_2m_sde", "karras", 10, 1),
    ("dpmpp_2m_sde", "exponential", 20, 1),
    ("dpmpp_2m_sde", "exponential", 15, 1),
    ("dpmpp_2m_sde", "exponential", 10, 1),
    ("dpmpp_2m_sde", "exponential", 8, 1),
    ("dpmpp_2m_sde", "exponential", 6, 1),
    ("dpmpp_2m_sde", "exponential", 5, 2),
    ("ddim", "exponential", 20, 1),
]


class IndependentMixture:
    """A diagonal-covariance Gaussian mixture, written independently of ``core/analytic.py``.

    p(x0) = Σ_k π_k N(μ_k, diag(v_k)). At level σ: w_k(x) ∝ π_k N(x; μ_k, diag(v_k + σ²)); the exact
    denoiser is Σ_k w_k (v_k·x + σ²·μ_k)/(v_k + σ²); the posterior given x_σ is component k ~ w(x_σ),
    then N((v_k·x + σ²μ_k)/(v_k + σ²), v_k σ²/(v_k + σ²)) per coordinate.
    """

    def __init__(self, dim=32, seed=7, schedule=None):
        g = torch.Generator().manual_seed(seed)
        self.pi = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
        self.mu = 1.5 * torch.randn(4, dim, generator=g, dtype=torch.float64)
        self.var = (0.15 + 0.65 * torch.rand(4, dim, generator=g, dtype=torch.float64)) ** 2
        self.shape = (dim,)
        self.schedule = schedule or DiscreteSchedule.scaled_linear()
        self.calls = 0

    def _logw(self, x, sigma):
        s2 = sigma.reshape(-1, 1, 1) ** 2
        tot = self.var[None] + s2  # (B, K, d)
        ll = -0.5 * (((x[:, None] - self.mu[None]) ** 2) / tot + tot.log()).sum(-1) + self.pi.log()[None]
        return ll - ll.logsumexp(1, keepdim=True)

    def __call__(self, x, sigma, **_):
        self.calls += 1
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        w = self._logw(x, sigma).exp()[..., None]  # (B, K, 1)
        s2 = sigma.reshape(-1, 1, 1) ** 2
        post = (self.var[None] * x[:, None] + s2 * self.mu[None]) / (self.var[None] + s2)
        return (w * post).sum(1)

    def posterior_sample(self, x, sigma: float, g):
        sig = torch.full((x.shape[0],), sigma, dtype=torch.float64)
        k = torch.multinomial(self._logw(x, sig).exp(), 1, generator=g).squeeze(1)
        v, m = self.var[k], self.mu[k]
        mean = (v * x + sigma**2 * m) / (v + sigma**2)
        return mean + (v * sigma**2 / (v + sigma**2)).sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)

    def labels(self, x):
        return self._logw(x.reshape(x.shape[0], -1), torch.zeros(x.shape[0], dtype=torch.float64)).argmax(1)


class AnalyticAdapter:
    """The project's prior with the same interface (its own exact posterior sampler and labels)."""

    def __init__(self):
        self.prior = GaussianMixturePrior.random(3, (4, 8, 8), spread=1.0, std=0.5, seed=0)
        self.schedule, self.shape = self.prior.schedule, self.prior.shape

    @property
    def calls(self):
        return self.prior.calls

    @calls.setter
    def calls(self, n):
        self.prior.calls = n

    def __call__(self, x, sigma, **kw):
        return self.prior(x, sigma, **kw)

    def posterior_sample(self, x, sigma, g):
        return self.prior.posterior_sample(x, sigma, g)[0]

    def labels(self, x):
        return self.prior.log_component_weights(x, torch.zeros(x.shape[0], dtype=torch.float64)).argmax(1)


def exact_law(prior, guide, sigma0, n, repeats, g):
    x = guide.expand(n, *guide.shape[1:]).clone()
    for _ in range(repeats):
        x = prior.posterior_sample(x + sigma0 * torch.randn(x.shape, generator=g, dtype=torch.float64), sigma0, g)
    return x


def energy_test(a, b, perms: int, seed: int):
    """Energy distance of two samples and its permutation p-value (pooled distance matrix, B relabellings)."""
    pooled = torch.cat([a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)]).to(torch.float64)
    n, m = a.shape[0], b.shape[0]
    dist = torch.cdist(pooled, pooled)

    def ed(lab):  # lab: 1 for sample A
        la, lb = lab, 1.0 - lab
        da, db = dist @ la, dist @ lb
        ab, aa, bb = float(lb @ da), float(la @ da), float(lb @ db)
        return 2 * ab / (n * m) - aa / (n * (n - 1)) - bb / (m * (m - 1))

    lab = torch.cat([torch.ones(n, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)])
    observed = ed(lab)
    g = torch.Generator().manual_seed(seed)
    exceed = sum(ed(lab[torch.randperm(n + m, generator=g)]) >= observed for _ in range(perms))
    return observed, (1 + exceed) / (1 + perms)


def spread_ratio(prior, out, exact):
    """Within-component variance of ``out`` over that of ``exact`` (per coordinate, then averaged with the
    exact component frequencies); components with < 30 points on either side are skipped."""
    lo, le = prior.labels(out), prior.labels(exact)
    num = den = 0.0
    for k in range(int(max(lo.max(), le.max())) + 1):
        a, b = out[lo == k].reshape(-1, out[0].numel()), exact[le == k].reshape(-1, exact[0].numel())
        if a.shape[0] < 30 or b.shape[0] < 30:
            continue
        w = b.shape[0]
        num += w * float((a.var(0) / b.var(0)).mean())
        den += w
    tv = 0.5 * float((torch.bincount(lo, minlength=4).double() / len(lo) - torch.bincount(le, minlength=4).double() / len(le)).abs().sum())
    return num / den, tv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--t0", type=float, default=0.5)
    ap.add_argument("--priors", default="independent,analytic")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="model_calls")
    args = ap.parse_args(argv)

    rows = []
    for pname in args.priors.split(","):
        prior = IndependentMixture() if pname == "independent" else AnalyticAdapter()
        gg = torch.Generator().manual_seed(5)
        # a guide between two components, off the data (a "stroke painting")
        means = prior.mu if pname == "independent" else prior.prior.means.reshape(3, -1)
        guide = (0.5 * (means[0] + means[1]) + 0.3 * torch.randn(means[0].shape, generator=gg, dtype=torch.float64))
        guide = guide.reshape(1, *prior.shape)
        sigma0 = prior.schedule.t0_to_sigma(args.t0)
        exact = {k: exact_law(prior, guide, sigma0, args.samples, k, torch.Generator().manual_seed(10 + k)) for k in (1, 2, 3)}
        for sampler, spacing, steps, reps in CONFIGS:
            steps = prior.schedule.t0_to_timestep(args.t0) + 1 if steps == "paper" else steps
            prior.calls = 0
            start = time.perf_counter()
            out = sdedit(prior, guide.expand(args.samples, *prior.shape).clone(), t0=args.t0, steps=steps,
                         sampler=sampler, spacing=spacing, repeats=reps, seed=0)
            seconds = time.perf_counter() - start
            ed, p = energy_test(out, exact[reps], args.perms, seed=1)
            ratio, tv = spread_ratio(prior, out, exact[reps])
            rows.append({"prior": pname, "sampler": sampler, "spacing": spacing, "steps": steps, "repeats": reps,
                         "model_calls": prior.calls, "energy_distance": round(ed, 5), "perm_p": round(p, 3),
                         "spread_ratio": round(ratio, 3), "component_tv": round(tv, 3), "seconds": round(seconds, 2)})
            print(rows[-1], flush=True)

    out_dir = Path(args.out)
    write_csv(out_dir / f"{args.name}.csv", rows)
    lines = [f"`python bench/model_calls.py --samples {args.samples} --perms {args.perms} --t0 {args.t0}` — {machine()}", "",
             "| prior | sampler | spacing | steps × K | model calls | energy distance | permutation p | spread ratio | component TV |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['prior']} | {r['sampler']} | {r['spacing']} | {r['steps']} × {r['repeats']} | {r['model_calls']} | "
                     f"{r['energy_distance']:.5f} | {r['perm_p']:.3f} | {r['spread_ratio']:.3f} | {r['component_tv']:.3f} |")
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
