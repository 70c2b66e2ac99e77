"""Peak memory against image size (512² … 4096²) for the diffusers backend (`SDEditPipeline`, tiny test model):
one fresh subprocess per (size, mode) so every peak is its own; peak = max RSS (`resource.getrusage`, which
sees torch's CPU allocations; tracemalloc does not). Also reported: the RSS after loading the model and the
input, before the edit (baseline), and peak − baseline (what the edit itself needs).

Modes: ``vae`` = VAE tiling (512-px tiles, the pipeline's own streaming tiles), UNet on the full latent;
``vae+unet`` = also the UNet in 512-px tiles (`enable_unet_tiling`); ``none`` = no tiling.

    .venv/bin/python bench/memory.py [--sizes 512,1024,2048,4096] [--modes vae,vae+unet] [--steps 2] [--quick]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._common import RESULTS, log, machine, md_table, write_csv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def child(size: int, mode: str, steps: int, model: str | None, tile: int):
    import torch

    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    if model is None:
        from tests.fixtures.tiny_diffusers import tiny_sd_path

        model = str(tiny_sd_path())
    sp = SDEditPipeline.from_pretrained(model)
    if mode != "none":  # SD1.5's 512-px tiles (the tiny VAE's config says 64 px)
        sp.enable_vae_tiling(tile_size=tile)
    if mode == "vae+unet":
        sp.enable_unet_tiling(tile_size=tile)
    img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with torch.no_grad():
        out = sp(img, prompt="a red house", negative_prompt="blurry", t0=0.5, steps=steps, sampler="ddpm",
                 guidance_scale=4.0, seed=0, output_type="pt", progress=False)
    dt = time.perf_counter() - t
    assert out.images.shape[-1] == size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mib": base, "peak_mib": peak, "seconds": dt}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--modes", default="vae,vae+unet", help="comma list of 'vae', 'vae+unet', 'none'")
    ap.add_argument("--tile", type=int, default=512, help="tile size in pixels (VAE and UNet)")
    ap.add_argument("--model", help="diffusers folder (default: the tiny test model)")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--quick", action="store_true", help="512,1024,2048 only")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="memory", help="result file stem under --out")
    args = ap.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1], args.steps, args.model, args.tile)
        return 0
    if args.quick:
        args.sizes = "512,1024,2048"
    modes = args.modes.split(",")
    rows = []
    for mode in modes:
        for size in [int(s) for s in args.sizes.split(",")]:
            cmd = [sys.executable, __file__, "--child", str(size), mode, "--steps", str(args.steps), "--tile", str(args.tile)]
            if args.model:
                cmd += ["--model", args.model]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
                err = None if res else (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1][:120]
            except subprocess.TimeoutExpired:
                res, err = None, f"timeout {args.timeout:.0f}s"
            row = {"size": size, "tiling": mode, "steps": args.steps}
            if res:
                row.update(baseline_mib=round(res["baseline_mib"]), peak_mib=round(res["peak_mib"]),
                           edit_mib=round(res["peak_mib"] - res["baseline_mib"]), seconds=round(res["seconds"], 2), error="")
            else:
                row.update(baseline_mib="", peak_mib="", edit_mib="", seconds="", error=err)
            rows.append(row)
            log(row)
    for mode in modes:
        ref = next((r for r in rows if r["tiling"] == mode and r["size"] == 1024 and r["peak_mib"] != ""), None)
        for r in rows:
            if r["tiling"] == mode:
                r["peak_vs_1024"] = round(r["peak_mib"] / ref["peak_mib"], 2) if ref and r["peak_mib"] != "" else ""
    out = Path(args.out)
    write_csv(out / f"{args.name}.csv", rows)
    cmd = ".venv/bin/python bench/memory.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    (out / f"{args.name}.md").write_text(
        f"# Peak memory vs image size\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        f"SDEditPipeline (tiny diffusers SD model: UNet 32/64 channels, VAE 8-16 channels; tiles {args.tile} px, ¼ overlap), ddpm, cfg 4, "
        "fresh process per row; max RSS.\n\n" + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
