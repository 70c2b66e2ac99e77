"""A model-free demonstration of SDEdit on the analytic Gaussian-mixture prior.

``sdedit demo --analytic`` (or ``python -m sdedit_engine.cli.demo``) prints (1) the realism–faithfulness
trade-off over t0 and (2) how close each sampler gets to the exact SDEdit distribution for a given
number of model calls (energy distance with a permutation p-value, :func:`~sdedit_engine.core.analytic.energy_test`).
Everything is exact and runs in seconds on a CPU, so it doubles as a smoke test of an installation.
Torch is imported when the demo runs, not when the ``sdedit`` parser is built.
"""

from __future__ import annotations

import argparse
import time

from .common import positive_int

PERMUTATIONS = 100


def add_commands(sub) -> None:
    """Register ``demo`` on the ``sdedit`` subparsers."""
    d = sub.add_parser("demo", help="the built-in landscape model offline: stroke paintings to images, realism vs "
                                     "faithfulness, a drag (PNGs in --out); --analytic: the model-free analytic-prior demo")
    d.add_argument("--out", "-o", default="sdedit-demo", help="output folder (default sdedit-demo/)")
    d.add_argument("--steps", type=positive_int, default=40, help="solver steps at t0 = 1 (steps*t0 below)")
    d.add_argument("--analytic", action="store_true", help="the analytic Gaussian-mixture demo instead (no model)")
    d.add_argument("--samples", type=positive_int, default=1000, help="--analytic: SDEdit outputs per setting")
    d.set_defaults(func=_run)


def _run(args) -> int:
    if args.analytic:
        return main(["--samples", str(args.samples)])
    from .common import quiet_libraries
    from .demo_builtin import main as builtin_demo

    quiet_libraries()
    return builtin_demo(["--out", args.out, "--steps", str(args.steps)])


def _stroke_guide(prior, seed: int):
    """A guide off the data manifold: halfway between two modes, plus noise (a 'stroke painting')."""
    import torch

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(prior.shape, generator=g, dtype=torch.float64)
    return 0.5 * (prior.means[0] + prior.means[1]) + 0.3 * noise


def trade_off_table(prior, guide, n: int, t0s, steps: int, sampler: str) -> list[tuple]:
    from ..core.sdedit import sdedit

    rows = []
    batch = guide.expand(n, *prior.shape).clone()
    for t0 in t0s:
        out = sdedit(prior, batch, t0=t0, steps=steps, sampler=sampler, seed=0)
        l2 = float((out - guide).flatten(1).norm(dim=1).mean())
        realism = float(prior.log_prob(out).mean())
        rows.append((t0, prior.schedule.t0_to_sigma(t0), l2, realism))
    return rows


def sampler_table(prior, guide, n: int, t0: float, configs) -> tuple[tuple[float, float], list[tuple]]:
    """Per (sampler, steps): model calls, (energy distance, p-value) against exact SDEdit draws, seconds;
    and the same test between two exact samples (what "no difference" looks like)."""
    import torch

    from ..core.analytic import energy_test
    from ..core.sdedit import sdedit

    g = torch.Generator().manual_seed(1)
    sigma0 = prior.schedule.t0_to_sigma(t0)
    exact, _ = prior.exact_sdedit(guide, sigma0, n, g)
    exact2, _ = prior.exact_sdedit(guide, sigma0, n, g)
    rows = []
    batch = guide.expand(n, *prior.shape).clone()
    for sampler, steps in configs:
        prior.calls = 0
        start = time.perf_counter()
        out = sdedit(prior, batch, t0=t0, steps=steps, sampler=sampler, seed=2)
        seconds = time.perf_counter() - start
        rows.append((sampler, steps, prior.calls, *energy_test(out, exact, PERMUTATIONS), seconds))
    return energy_test(exact2, exact, PERMUTATIONS), rows


def _distance(ed: float) -> str:
    """The unbiased estimate scatters around 0 for equal laws; below 0 it means "no difference seen"."""
    return f"{ed:.4f}" if ed > 0 else "~0"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdedit_engine.cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="SDEdit outputs per setting (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior and the guide")
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error(f"--samples must be at least 2 (two-sample statistics), got {args.samples}")

    from ..core.analytic import GaussianMixturePrior

    prior = GaussianMixturePrior.random(3, (4, 8, 8), spread=1.0, std=0.5, seed=args.seed)
    guide = _stroke_guide(prior, args.seed + 1)
    print(f"Analytic prior: 3 Gaussians in 4x8x8, linear DDPM schedule (sigma_max {prior.schedule.sigma_max:.1f})\n")

    print("Realism vs faithfulness (dpmpp_2m_sde, 30 steps)")
    print(f"{'t0':>5} {'sigma(t0)':>10} {'L2 to guide':>12} {'log p(x)':>10}")
    for t0, sigma, l2, logp in trade_off_table(prior, guide, args.samples, [0.05, 0.1, 0.2, 0.3, 0.5, 0.8], 30, "dpmpp_2m_sde"):
        print(f"{t0:>5.2f} {sigma:>10.3f} {l2:>12.3f} {logp:>10.1f}")

    configs = [("ddpm", 500), ("ddpm", 20), ("euler_maruyama", 20), ("dpmpp_2m_sde", 20), ("ddim", 20)]
    (null, null_p), rows = sampler_table(prior, guide, args.samples, 0.5, configs)
    print("\nHow close each sampler gets to the exact SDEdit distribution at t0 = 0.5")
    print("  distance: energy distance to exact draws (0 = same law; ~0 = no difference measurable)")
    print(f"  p: permutation test ({PERMUTATIONS} relabellings); p < 0.01 = the sampler's law differs from the exact one")
    print(f"{'sampler':>15} {'steps':>6} {'model calls':>12} {'distance':>9} {'p':>6}  {'verdict':<10}  {'seconds':>7}")
    rows = [("exact (again)", "", "", null, null_p, None)] + rows
    for sampler, steps, calls, ed, p, sec in rows:
        verdict = "differs" if p < 0.01 else "consistent"
        sec = "" if sec is None else f"{sec:.2f}"
        print(f"{sampler:>15} {steps:>6} {calls:>12} {_distance(ed):>9} {p:>6.2f}  {verdict:<10}  {sec:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
