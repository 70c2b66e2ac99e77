"""The sampler loop alone, without a network: the engine's SDEdit loop (σ-space denoiser wrapper, per-item CPU
noise, σ→timestep, the step) vs diffusers' `DDPMScheduler` (`add_noise` to t = 499, then N × `step`, as
img2img runs it), both with a model that returns zeros. What is left of §1b's overhead once the UNet is taken away.

    .venv/bin/python bench/loop_cost.py [--steps 20,50] [--latent 8,64] [--rounds 9]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import time
from pathlib import Path

import torch

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402


def make_runs(steps: int, latent: int):
    from diffusers import DDPMScheduler

    from sdedit_engine import sdedit
    from sdedit_engine.core.denoisers import DiscreteTimeDenoiser
    from sdedit_engine.core.schedules import DiscreteSchedule

    zeros = lambda x, t, **k: torch.zeros_like(x)  # noqa: E731
    den = DiscreteTimeDenoiser(zeros, DiscreteSchedule.scaled_linear())
    guide = torch.zeros(1, 4, latent, latent)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          variance_type="fixed_small")

    def engine(seed):
        return sdedit(den, guide, t0=0.5, steps=steps, sampler="ddpm", seed=seed)

    def diffusers_loop(seed):
        sched.set_timesteps(2 * steps)
        g = torch.Generator().manual_seed(seed)
        ts = sched.timesteps[steps:]
        x = sched.add_noise(guide, torch.randn(guide.shape, generator=g), ts[:1])  # as img2img does
        for t in ts:
            x = sched.step(zeros(x, t), t, x, generator=g).prev_sample
        return x

    return engine, diffusers_loop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="20,50")
    ap.add_argument("--latent", default="8,64", help="latent sides (8 = a 64² image, 64 = 512²)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = []
    for latent in [int(s) for s in args.latent.split(",")]:
        for steps in [int(s) for s in args.steps.split(",")]:
            a, b = make_runs(steps, latent)
            a(0), b(0)  # warm up
            ta, tb, ratios = [], [], []
            for r in range(args.rounds):
                order = (a, b) if r % 2 == 0 else (b, a)
                times = {}
                for fn in order:
                    t = time.perf_counter()
                    for k in range(10):
                        fn(k)
                    times[fn] = (time.perf_counter() - t) / (10 * steps) * 1e3
                ta.append(times[a]), tb.append(times[b]), ratios.append(times[a] / times[b])
            row = {"latent": f"{latent}²", "steps": steps, "engine_ms_per_step": round(median(ta), 4),
                   "ddpm_scheduler_ms_per_step": round(median(tb), 4), "ratio": round(median(ratios), 3),
                   "ratio_min_max": f"{min(ratios):.3f}–{max(ratios):.3f}"}
            rows.append(row)
            log(row)
    out = Path(args.out)
    write_csv(out / "loop_cost.csv", rows)
    cmd = ".venv/bin/python bench/loop_cost.py" + (" " + " ".join(argv if argv is not None else _sys.argv[1:])).rstrip()
    (out / "loop_cost.md").write_text(
        f"# The sampler loop without a network\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        "Engine `sdedit(..., sampler='ddpm')` vs `DDPMScheduler.step` over the same steps, zero model, batch 1; "
        "per step, median of interleaved rounds of 10 runs.\n\n" + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
