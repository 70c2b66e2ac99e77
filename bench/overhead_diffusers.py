"""Overhead of the diffusers backend: `SDEditPipeline` vs diffusers' `StableDiffusionImg2ImgPipeline` at equal
model calls, in one process, same modules (the img2img pipeline is built from the SDEditPipeline's components).

A: SDEditPipeline(image, t0=0.5, steps=N, sampler="ddpm", guidance_scale=g)
B: StableDiffusionImg2ImgPipeline(image, strength=0.5, num_inference_steps=2N, guidance_scale=g) with
   DDPMScheduler (clip_sample off, variance fixed_small: the same ancestral step) → N steps, from the same
   noise level (timestep 499 = round(0.5·1000)−1 in both).

Both: prompt encoding with CFG (negative prompt), VAE encode, N UNet calls on a batch of 2, VAE decode, a
float tensor out. Interleaved A, B, B, A, …; ratio = median of per-pair ratios.

    .venv/bin/python bench/overhead_diffusers.py [--quick] [--model PATH_OR_FOLDER] [--profile]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def load(model: str | None):
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    if model is None:
        from tests.fixtures.tiny_diffusers import tiny_sd_path

        model = str(tiny_sd_path())
    sp = SDEditPipeline.from_pretrained(model)
    return sp, img2img_reference(sp)


def img2img_reference(sp):
    """diffusers' ``StableDiffusionImg2ImgPipeline`` on the SDEditPipeline's own modules, with a DDPMScheduler
    (clip_sample off, fixed_small variance: the ancestral step of our ``ddpm``)."""
    from diffusers import DDPMScheduler, StableDiffusionImg2ImgPipeline

    comps = dict(sp.pipe.components)
    comps["scheduler"] = DDPMScheduler.from_config(sp.pipe.scheduler.config, clip_sample=False, thresholding=False,
                                                   variance_type="fixed_small")
    comps.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    comps = {k: v for k, v in comps.items() if k in StableDiffusionImg2ImgPipeline._get_signature_keys(StableDiffusionImg2ImgPipeline)[0]
             or k in ("requires_safety_checker",)}
    ref = StableDiffusionImg2ImgPipeline(**comps)
    ref.set_progress_bar_config(disable=True)
    return ref


def image(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, size)
    img = torch.stack([base[None, :].expand(size, size), base[:, None].expand(size, size), 0.5 * torch.ones(size, size)])
    return (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)[None]


def make_runs(sp, ref, steps: int, cfg: float):
    prompt, negative = "a red house in a field", "blurry"

    @torch.no_grad()
    def run_a(img, seed):
        out = sp(img, prompt=prompt, negative_prompt=negative, t0=0.5, steps=steps, sampler="ddpm",
                 guidance_scale=cfg, seed=seed, output_type="pt", progress=False)
        assert out.model_calls == steps if hasattr(out, "model_calls") else True
        return out.images

    @torch.no_grad()
    def run_b(img, seed):
        g = torch.Generator().manual_seed(seed)
        return ref(prompt, image=img, strength=0.5, num_inference_steps=2 * steps, guidance_scale=cfg,
                   negative_prompt=negative, generator=g, output_type="pt").images

    return run_a, run_b


def count_unet_calls(sp, fn, *a) -> int:
    n = [0]
    h = sp.unet.register_forward_hook(lambda *_: n.__setitem__(0, n[0] + 1))
    try:
        fn(*a)
    finally:
        h.remove()
    return n[0]


def profile(fn, *a, top=22) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn(*a)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    lines = s.getvalue().strip().splitlines()
    start = next((i for i, l in enumerate(lines) if "ncalls" in l), 0)
    return "\n".join(lines[:3] + lines[start:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="diffusers folder or single file (default: the tiny test model)")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--steps", default="20,50")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="64² and 20 steps only")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.steps = "64", "20"
    sp, ref = load(args.model)
    rows, profiles = [], []
    for size in [int(s) for s in args.sizes.split(",")]:
        for steps in [int(s) for s in args.steps.split(",")]:
            run_a, run_b = make_runs(sp, ref, steps, args.cfg)
            img = image(size, 0)
            calls_a, calls_b = count_unet_calls(sp, run_a, img, 0), count_unet_calls(sp, run_b, img, 0)  # + warm-up
            ta, tb, ratios = [], [], []
            for i in range(args.pairs):
                img = image(size, i + 1)
                got = {}
                order = (("A", run_a), ("B", run_b)) if i % 2 == 0 else (("B", run_b), ("A", run_a))
                for label, fn in order:
                    t = time.perf_counter()
                    fn(img, i + 1)
                    got[label] = time.perf_counter() - t
                ta.append(got["A"]), tb.append(got["B"]), ratios.append(got["A"] / got["B"])
            rows.append({"size": size, "steps": steps, "unet_calls_sdedit": calls_a, "unet_calls_img2img": calls_b,
                         "cfg": args.cfg, "pairs": args.pairs, "sdedit_s": median(ta), "img2img_s": median(tb),
                         "ratio_median_of_pairs": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)})
            log(rows[-1])
            if args.profile and size == int(args.sizes.split(",")[0]) and steps == int(args.steps.split(",")[-1]):
                profiles.append(f"### SDEditPipeline ({size}², {steps} steps), tottime\n```\n{profile(run_a, img, 0)}\n```")
                profiles.append(f"### StableDiffusionImg2ImgPipeline ({size}², {steps} steps), tottime\n```\n{profile(run_b, img, 0)}\n```")
    out = Path(args.out)
    write_csv(out / "overhead_diffusers.csv", rows)
    cmd = ".venv/bin/python bench/overhead_diffusers.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    body = ["Model: " + (args.model or "tiny diffusers SD test model (UNet 32/64 channels)")
            + "; ddpm both sides, t0 = strength = 0.5; wall time in-process, median over interleaved pairs.",
            "", md_table(rows)]
    if profiles:
        body += ["", "## Profiles", ""] + profiles
    (out / "overhead_diffusers.md").write_text(
        f"# SDEditPipeline vs StableDiffusionImg2ImgPipeline\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        + "\n".join(body) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
