"""Overhead of the flow backend: `SDEditPipeline` (ddim) vs diffusers' flow img2img (`StableDiffusion3Img2ImgPipeline`,
`FluxImg2ImgPipeline`, FlowMatchEuler) at equal transformer calls, same modules, in one process.

A: SDEditPipeline(image, t0, steps=N, sampler="ddim", guidance_scale=g)   (ddim in S = s/(1-s) is flow Euler)
B: the img2img pipeline with num_inference_steps chosen so it makes N transformer calls (strength 0.6).

Both: prompt encoding (SD3: CFG with the negative prompt, batch 2; Flux dev: guidance embedding, batch 1), VAE
encode, N calls, VAE decode, a float tensor out. Interleaved A, B, B, A, …; ratios = medians of per-pair ratios
of wall time and of process CPU time (one thread).

    .venv/bin/python bench/overhead_flow.py                      # tiny SD3 and Flux test models, 64²
    .venv/bin/python bench/overhead_flow.py --full --device cuda --dtype bf16 --size 1024   # SD3-medium / FLUX.1-dev size
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import sys
from pathlib import Path

import torch

from bench._common import RESULTS, machine, md_table, write_csv  # noqa: E402
from bench.fullsize_sd15 import interleave, submodules, vae_parts
from bench.gpu_check import DTYPES, image, img2img_calls, reference


def make_runs(sp, ref, steps: int, size: int, device: str):
    g = sp.default_guidance_scale
    n = next(k for k in range(steps, 10 * steps + 2) if img2img_calls(k, 0.6, True) >= steps)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    @torch.no_grad()
    def run_a(img, seed):
        out = sp(img, prompt="a red house in a field", t0=0.6, steps=steps, sampler="ddim", guidance_scale=g,
                 seed=seed, output_type="pt", progress=False).images
        sync()
        return out

    @torch.no_grad()
    def run_b(img, seed):
        kw = dict(height=size, width=size)  # else SD3/Flux img2img resize the image to their default 1024²
        out = ref("a red house in a field", image=img.to(device), strength=0.6, num_inference_steps=n, guidance_scale=g,
                  generator=torch.Generator().manual_seed(seed), output_type="pt", **kw).images
        sync()
        return out

    return run_a, run_b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="sd3,flux")
    ap.add_argument("--full", action="store_true", help="full-size random-weight SD3-medium / FLUX.1-dev (bench/fullsize_models.py)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    rows = []
    for fam in args.families.split(","):
        if args.full:
            from bench.fullsize_models import build

            pipe = build(fam, device=args.device, dtype=DTYPES[args.dtype])
        else:
            from bench.gpu_check import tiny_pipe

            pipe = tiny_pipe(fam).to(device=args.device, dtype=DTYPES[args.dtype])
        sp = SDEditPipeline(pipe, device=args.device)
        run_a, run_b = make_runs(sp, reference(sp), args.steps, args.size, args.device)
        nets = [sp.unet, *vae_parts(sp.vae), *submodules(pipe, "text_encoder", "text_encoder_2", "text_encoder_3")]
        row = interleave(run_a, run_b, args.pairs, lambda k: image(args.size, k), fam, networks=nets)
        rows.append({"family": fam, "model": "full-size" if args.full else "tiny test model", "dtype": args.dtype,
                     "size": args.size, **row})
        del sp, pipe, run_a, run_b
    out = Path(args.out)
    name = "overhead_flow" + ("_full" if args.full else "")
    write_csv(out / f"{name}.csv", rows)
    cmd = ".venv/bin/python bench/overhead_flow.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{name}.md").write_text(
        f"# SDEditPipeline (ddim) vs diffusers flow img2img at equal transformer calls\n\nMachine: {machine()}\n\n"
        f"Command: `{cmd}`\n\nA = SDEditPipeline, B = StableDiffusion3Img2ImgPipeline / FluxImg2ImgPipeline on the same "
        "modules; t0 0.6 / strength 0.6; ratios = medians of per-pair A/B (wall; process CPU time, one thread).\n\n"
        + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
