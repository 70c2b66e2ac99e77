"""Model calls against the paper: how close each sampler's SDEdit outputs get to the exact SDEdit
distribution, as a function of the number of model calls, on the analytic Gaussian-mixture prior.

Baseline: the official setting — every timestep of the 1000-step DDPM grid from t0 = 0.5 (500 steps),
K = 3 repeats, i.e. 1500 model calls. The target distribution is the exact SDEdit kernel applied K
times (closed form on this prior). Distances: energy distance (ED, with the exact-vs-exact value as
the noise floor), component frequencies (total variation, TV) and the within-component variance
ratio (1 = exact).

    python bench/model_calls.py [--samples 2000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdedit_engine import sdedit  # noqa: E402
from sdedit_engine.core.analytic import GaussianMixturePrior, energy_distance  # noqa: E402

CONFIGS = [  # (sampler, steps per repeat, repeats)
    ("ddpm", 500, 3),  # the paper's setting: 1500 calls
    ("ddpm", 10, 3),
    ("ddpm", 30, 1),
    ("euler_maruyama", 10, 3),
    ("euler_maruyama", 30, 1),
    ("dpmpp_2m_sde", 10, 3),
    ("dpmpp_2m_sde", 15, 2),
    ("dpmpp_2m_sde", 20, 1),
    ("dpmpp_2m_sde", 30, 1),
    ("ddim", 10, 3),
    ("ddim", 30, 1),
    ("dpmpp_2m", 30, 1),
]


def exact_repeats(prior, guide, sigma0, n, k, g):
    """The exact SDEdit kernel applied k times (each repeat starts from the previous output)."""
    x, comp = prior.exact_sdedit(guide, sigma0, n, g)
    for _ in range(k - 1):
        x_sigma = x + sigma0 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        x, comp = prior.posterior_sample(x_sigma, sigma0, g)
    return x


def stats(prior, out):
    k, _ = prior.nearest_component(out)
    freq = torch.bincount(k, minlength=len(prior.stds)).double() / len(k)
    var = [float(((out[k == j] - prior.means[j]) ** 2).mean() / prior.stds[j] ** 2) for j in range(len(prior.stds)) if (k == j).sum() > 20]
    return freq, sum(var) / len(var)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--t0", type=float, default=0.5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    prior = GaussianMixturePrior.random(3, (4, 8, 8), spread=1.0, std=0.5, seed=0)
    g = torch.Generator().manual_seed(5)
    guide = 0.5 * (prior.means[0] + prior.means[1]) + 0.3 * torch.randn(prior.shape, generator=g, dtype=torch.float64)
    sigma0 = prior.schedule.t0_to_sigma(args.t0)
    n = args.samples
    exact = {k: exact_repeats(prior, guide, sigma0, n, k, torch.Generator().manual_seed(10 + k)) for k in (1, 2, 3)}
    floor = {k: energy_distance(exact_repeats(prior, guide, sigma0, n, k, torch.Generator().manual_seed(20 + k)), exact[k]) for k in (1, 2, 3)}

    rows = []
    batch = guide.expand(n, *prior.shape).clone()
    for sampler, steps, reps in CONFIGS:
        prior.calls = 0
        start = time.perf_counter()
        out = sdedit(prior, batch, t0=args.t0, steps=steps, sampler=sampler, repeats=reps, seed=0)
        seconds = time.perf_counter() - start
        f_out, var = stats(prior, out)
        f_ex, _ = stats(prior, exact[reps])
        rows.append({
            "sampler": sampler, "steps": steps, "repeats": reps, "model_calls": prior.calls,
            "energy_distance": round(energy_distance(out, exact[reps]), 4), "exact_floor": round(floor[reps], 4),
            "component_tv": round(0.5 * float((f_out - f_ex).abs().sum()), 4), "variance_ratio": round(var, 4),
            "seconds": round(seconds, 2),
        })
        print(rows[-1], flush=True)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "model_calls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| sampler | steps × K | model calls | energy distance (floor) | component TV | variance ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} × {r['repeats']} | {r['model_calls']} | "
                     f"{r['energy_distance']:.4f} ({r['exact_floor']:.4f}) | {r['component_tv']:.3f} | "
                     f"{r['variance_ratio']:.3f} |")
    (out_dir / "model_calls.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
