"""SDE-Drag cost: model calls, image evaluations and time per drag iteration against the official setting
(120 steps × batch 4 = 480 image evaluations per iteration: a recording pass and a replay pass, each with CFG
cond + uncond), and the cheapest step counts that keep the correctness checks passing:

- exact reconstruction: Cycle-SDE encode → decode with no edit on the tiny diffusers UNet (float32, CFG ramp
  1 → 3 as SDE-Drag uses it, and CFG off), relative error ≤ 1e-4 (tests/test_cycle_unet.py uses 30 steps);
- drag moves content: on the analytic one-Gaussian prior (tests/test_engine_cycle_drag.py's check, run at each
  step count): the source patch's correlation with the target region goes from < 0.2 to > 0.5, and far from
  the drag nothing changes (corr > 0.999);
- masked drag on the UNet: latents outside the mask come back bit for bit and the inside changes.

Time per iteration is measured on the tiny UNet at latent 8² (64² image) and 32² (256² image), one drag
iteration (a 2-cell move), rounds interleaved over the step counts; the ratio to the 120-step setting is
the median of per-round ratios.

    .venv/bin/python bench/drag_cost.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import sys
import time
from pathlib import Path

import torch

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdedit_engine import DiscreteSchedule  # noqa: E402
from sdedit_engine.core.analytic import GaussianMixturePrior  # noqa: E402
from sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas  # noqa: E402
from sdedit_engine.core.denoisers import CountingDenoiser  # noqa: E402
from sdedit_engine.core.drag import guidance_ramp, sde_drag  # noqa: E402

OFFICIAL_EVALS = 480  # 120 steps × batch 4 per drag iteration
T0 = 0.6


def corr(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="120,60,40,30,20,15,10,5")
    ap.add_argument("--sizes", default="8,32", help="latent sizes for the timing (8 → 64² image)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="steps 120,30,10; latent 8² only; 2 rounds")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.sizes, args.rounds = "120,30,10", "8", 2
    steps_list = [int(s) for s in args.steps.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]

    from sdedit_engine.pipelines.pipeline import SDEditPipeline
    from tests.fixtures.tiny_diffusers import tiny_sd_path

    pipe = SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))
    evals = [0]
    pipe.unet.register_forward_hook(lambda m, a, kw, out: evals.__setitem__(0, evals[0] + (a[0] if a else kw["sample"]).shape[0]),
                                    with_kwargs=True)
    g = args.guidance
    den_cfg = pipe.make_denoiser(guidance_scale=g)
    cond_cfg = pipe.encode_prompt("a cat", "", 1, g, 64, 64).as_extra_args()
    den_1 = pipe.make_denoiser(guidance_scale=1.0)
    cond_1 = pipe.encode_prompt("a cat", "", 1, 1.0, 64, 64).as_extra_args()
    SD = DiscreteSchedule.scaled_linear()

    rows = {s: {"steps": s} for s in steps_list}
    # -- correctness at each step count ------------------------------------------------------------------
    for steps in steps_list:
        ramp = guidance_ramp(g, steps)
        fn = lambda i, ramp=ramp: {"guidance_scale": ramp[i]}  # noqa: E731
        x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            rec = cycle_reconstruct(den_cfg, x0, cycle_sigmas(den_cfg.schedule, T0, steps), seed=3, extra_args=cond_cfg,
                                    extra_args_fn=fn)
            err_cfg = float((rec - x0).norm() / x0.norm())
            rec = cycle_reconstruct(den_1, x0, cycle_sigmas(den_1.schedule, T0, steps), seed=3, extra_args=cond_1)
            err_1 = float((rec - x0).norm() / x0.norm())
        prior = GaussianMixturePrior(torch.zeros(1, 4, 24, 24, dtype=torch.float64), [3.0], schedule=SD)
        p0 = prior.sample(1, torch.Generator().manual_seed(0))[0]
        src = p0[..., 0:10, 0:10]
        before = corr(p0[..., 8:18, 8:18], src)
        out = sde_drag(prior, p0, [((5, 5), (13, 13))], t0=T0, steps=steps, step_size=20, seed=0)
        after, far = corr(out[..., 8:18, 8:18], src), corr(out[..., 19:, 19:], p0[..., 19:, 19:])
        moves = before < 0.2 and after > 0.5 and far > 0.999
        mask = torch.zeros(1, 1, 8, 8)
        mask[..., :, :5] = 1
        x1 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            o = sde_drag(den_1, x1, [((1, 3), (3, 3))], mask=mask, radius=1, t0=T0, steps=steps, seed=0, extra_args=cond_1)
        keep = (mask == 0).expand_as(o)
        masked_ok = bool(torch.equal(o[keep], x1[keep])) and float((o - x1)[~keep].abs().mean()) > 1e-3
        rows[steps].update({"cycle_rel_err_cfg_ramp": err_cfg, "cycle_rel_err_cfg1": err_1,
                            "exact_ok": err_cfg <= 1e-4 and err_1 <= 1e-4, "drag_corr_after": after,
                            "drag_far_corr": far, "drag_moves_ok": moves, "masked_unet_ok": masked_ok})
        log(rows[steps])

    # -- cost per iteration (one 2-cell move = 1 iteration) ---------------------------------------------------
    for size in sizes:
        cond = pipe.encode_prompt("a cat", "", 1, g, 8 * size, 8 * size).as_extra_args()
        x = torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(2))
        pair = [((size // 4, size // 2), (size // 4 + 2, size // 2))]
        times = {s: [] for s in steps_list}

        def one(steps):
            ramp = guidance_ramp(g, steps)
            den = CountingDenoiser(den_cfg)
            evals[0] = 0
            t = time.perf_counter()
            with torch.no_grad():
                sde_drag(den, x, pair, radius=max(1, min(5, size // 8)), t0=T0, steps=steps,  # noqa: B023 (called
                         step_size=2.0, seed=0, extra_args=cond,  # noqa: B023 (in this iteration)
                         extra_args_fn=lambda i: {"guidance_scale": ramp[i]})
            return time.perf_counter() - t, den.calls, evals[0]

        one(steps_list[-1])  # warm-up
        for r in range(args.rounds):
            order = steps_list if r % 2 == 0 else steps_list[::-1]
            for steps in order:
                dt, calls, ev = one(steps)
                times[steps].append(dt)
                rows[steps]["denoiser_calls_per_iter"], rows[steps]["image_evals_per_iter"] = calls, ev
        ref = times[max(steps_list)]
        for steps in steps_list:
            ratios = [a / b for a, b in zip(times[steps], ref)]
            rows[steps][f"s_per_iter_lat{size}"] = median(times[steps])
            rows[steps][f"time_vs_120_lat{size}"] = median(ratios)
        log(f"latent {size}² done")
    table = []
    for steps in steps_list:
        r = rows[steps]
        r["evals_vs_official"] = r["image_evals_per_iter"] / OFFICIAL_EVALS
        table.append(r)
    out = Path(args.out)
    write_csv(out / "drag_cost.csv", table)
    ok = [s for s in steps_list if rows[s]["exact_ok"] and rows[s]["drag_moves_ok"] and rows[s]["masked_unet_ok"]]
    cheapest = min(ok) if ok else None
    cmd = ".venv/bin/python bench/drag_cost.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    cols = ["steps", "denoiser_calls_per_iter", "image_evals_per_iter", "evals_vs_official"] + \
        [f"s_per_iter_lat{s}" for s in sizes] + [f"time_vs_120_lat{s}" for s in sizes] + \
        ["cycle_rel_err_cfg_ramp", "cycle_rel_err_cfg1", "exact_ok", "drag_corr_after", "drag_moves_ok", "masked_unet_ok"]
    body = (f"t0 = {T0}, CFG ramp 1 → {g} (SDE-Drag's), tiny diffusers UNet (float32) for calls, time and "
            "reconstruction; analytic one-Gaussian prior (24² latent, 8-cell drag) for the moves-content check.\n\n"
            + md_table(table, cols)
            + f"\n\nCheapest step count passing all checks: **{cheapest}** "
            f"({2 * 2 * cheapest if cheapest else '-'} image evaluations per iteration vs {OFFICIAL_EVALS} official).\n")
    (out / "drag_cost.md").write_text(f"# SDE-Drag cost per iteration\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n{body}")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
