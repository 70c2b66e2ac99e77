"""Peak memory against image size (512² … 4096²) for the diffusers backend (`SDEditPipeline`, tiny test model):
one fresh subprocess per (size, mode) so every peak is its own; peak = max RSS (`resource.getrusage`, which
sees torch's CPU allocations; tracemalloc does not). Also reported: the RSS after loading the model and the
input, before the edit (baseline), and peak − baseline (what the edit itself needs).

Modes: ``vae`` = VAE tiling (512-px tiles, the pipeline's own streaming tiles), UNet on the full latent;
``vae+unet`` = also the UNet in 512-px tiles (`enable_unet_tiling`); ``none`` = no tiling.

``--model full-sd15``: the published SD1.5 architecture with random weights (``bench/fullsize_models.py``:
UNet 860 M, VAE 84 M, CLIP-L; float32 on the CPU). One 512-px tile costs ~17 s of CPU in the UNet (×2 with
CFG) and a VAE decode tile about as much, so an 8192² edit (441 UNet tiles per step, 441 VAE tiles each
way) is hours of CPU. ``--real-calls N`` makes that measurable: the UNet, the VAE encoder and the VAE
decoder really run the first N times they see a given input shape, and after that return a copy of their
last output for that shape. Every tile is laid out, sliced, blended and written into the full-size buffers
for real; only the repeated network arithmetic is skipped. A tile's activations do not depend on where
it is, so the peak is the same as with every call real, and this is checked: run one size with and
without ``--real-calls`` and compare (BENCHMARKS.md §6). The peak is the process's VmHWM after a reset
(``/proc/self/clear_refs``) just before the edit, so model construction does not count; it falls back to
max RSS where the reset is not allowed.

    .venv/bin/python bench/memory.py [--sizes 512,1024,2048,4096] [--modes vae,vae+unet] [--steps 2] [--quick]
    .venv/bin/python bench/memory.py --model full-sd15 --modes vae+unet --sizes 1024,4096,8192 --steps 1 --real-calls 2
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



def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memoize_after(module, real_calls: int, counts: dict, name: str) -> None:
    """Make ``module.forward`` run for real the first ``real_calls`` times per input shape, then return a copy
    of its last output for that shape (tensors cloned, so every later tile still allocates its output)."""
    import copy

    import torch

    forward, cache = module.forward, {}

    def clone(out):
        if isinstance(out, torch.Tensor):
            return out.clone()
        if isinstance(out, tuple):
            return type(out)(clone(o) for o in out)
        new = copy.copy(out)  # a diffusers BaseOutput (dict-like dataclass)
        for k, v in out.items():
            new[k] = clone(v)
        return new

    def wrapped(*args, **kwargs):
        sample = args[0] if args else kwargs["sample"]
        key = (tuple(sample.shape), kwargs.get("return_dict", True), len(args))
        n = cache.get(key, (0, None))[0]
        counts[name] = counts.get(name, 0) + 1
        if n < real_calls:
            out = forward(*args, **kwargs)
            cache[key] = (n + 1, out)
            counts[name + "_real"] = counts.get(name + "_real", 0) + 1
            return out
        return clone(cache[key][1])

    module.forward = wrapped


def child(size: int, mode: str, steps: int, model: str | None, tile: int, real_calls: int = 0, cfg: float = 4.0):
    import torch

    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    if model is None:
        from tests.fixtures.tiny_diffusers import tiny_sd_path

        model = str(tiny_sd_path())
    if model == "full-sd15":
        from bench.fullsize_models import build

        sp = SDEditPipeline(build("sd15"))
    else:
        sp = SDEditPipeline.from_pretrained(model)
    counts: dict = {}
    if real_calls:
        for name, mod in (("unet", sp.unet), ("vae_encoder", sp.vae.encoder), ("vae_decoder", sp.vae.decoder)):
            memoize_after(mod, real_calls, counts, name)
    if mode != "none":  # SD1.5's 512-px tiles (the tiny VAE's config says 64 px)
        sp.enable_vae_tiling(tile_size=tile)
    if mode == "vae+unet":
        sp.enable_unet_tiling(tile_size=tile)
    img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    reset = _reset_peak()
    base = _status_mib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with torch.no_grad():
        out = sp(img, prompt="a red house", negative_prompt="blurry", t0=0.5, steps=steps, sampler="ddpm",
                 guidance_scale=cfg, seed=0, output_type="pt", progress=False)
    dt = time.perf_counter() - t
    assert out.images.shape[-1] == size
    peak = _status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mib": base, "peak_mib": peak, "seconds": dt, "calls": counts,
                      "peak_source": "VmHWM after reset" if reset else "max RSS"}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--modes", default="vae,vae+unet", help="comma list of 'vae', 'vae+unet', 'none'")
    ap.add_argument("--tile", type=int, default=512, help="tile size in pixels (VAE and UNet)")
    ap.add_argument("--model", help="diffusers folder, or full-sd15 (random full-size SD1.5; default: the tiny test model)")
    ap.add_argument("--real-calls", type=int, default=0,
                    help="network calls run for real per input shape before the rest reuse the output (0 = all real)")
    ap.add_argument("--cfg", type=float, default=4.0, help="guidance scale (> 1: CFG, UNet batch 2)")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--quick", action="store_true", help="512,1024,2048 only")
    ap.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="memory", help="result file stem under --out")
    args = ap.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1], args.steps, args.model, args.tile, args.real_calls, args.cfg)
        return 0
    if args.quick:
        args.sizes = "512,1024,2048"
    modes = args.modes.split(",")
    rows = []
    for mode in modes:
        for size in [int(s) for s in args.sizes.split(",")]:
            cmd = [sys.executable, __file__, "--child", str(size), mode, "--steps", str(args.steps), "--tile", str(args.tile),
                   "--real-calls", str(args.real_calls), "--cfg", str(args.cfg)]
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
                calls = res.get("calls", {})
                row.update(baseline_mib=round(res["baseline_mib"]), peak_mib=round(res["peak_mib"]),
                           edit_mib=round(res["peak_mib"] - res["baseline_mib"]), seconds=round(res["seconds"], 2),
                           network_calls=" ".join(f"{k} {calls.get(k + '_real', 0)}/{v}" for k, v in calls.items()
                                                  if not k.endswith("_real")) or "all real",
                           error="")
            else:
                row.update(baseline_mib="", peak_mib="", edit_mib="", seconds="", network_calls="", error=err)
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
    what = ("full-size SD1.5 architecture, random weights, float32 (UNet 860 M, VAE 84 M, CLIP-L)" if args.model == "full-sd15"
            else "tiny diffusers SD model: UNet 32/64 channels, VAE 8-16 channels" if args.model is None else args.model)
    reuse = (f"; network calls real for the first {args.real_calls} per input shape, then reused (network_calls = "
             "real/total)" if args.real_calls else "")
    (out / f"{args.name}.md").write_text(
        f"# Peak memory vs image size\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        f"SDEditPipeline ({what}; tiles {args.tile} px, ¼ overlap), ddpm, cfg {args.cfg:g}, "
        f"fresh process per row; peak RSS of the edit{reuse}.\n\n" + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
