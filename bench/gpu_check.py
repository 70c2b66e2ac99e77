"""One-command device check: full-size random-weight SD1.5 / SDXL / SD3-medium / FLUX.1-dev models, nothing
downloaded, through SDEditPipeline in fp16 and bf16, next to diffusers' img2img pipeline at equal model calls.

Per family and dtype it runs and *asserts*:

* SDEdit (ddim, t0 0.6): finite output; time per step and peak VRAM, next to diffusers' img2img
  (StableDiffusion(XL)Img2Img / StableDiffusion3Img2Img / FluxImg2Img) with the same number of calls;
* masked SDEdit: pixels outside the mask bit-identical to the input;
* seeds: the same seed twice gives the same image; the engine's noise drawn for a device tensor equals the
  noise drawn on the CPU (per-item CPU generators), so results do not depend on the device's RNG;
* Cycle-SDE reconstruction (record + replay, no edit): relative error (≤ 1e-3 asserted: the solver runs in
  float32 and the replayed half-precision calls are deterministic);
* SDE-Drag with a mask: finite, kept pixels exact.

With ``--comfy`` (SD1.5 only; needs ComfyUI importable, ``SDEDIT_COMFYUI_DIR``) it also times the pack's SDEdit
node against core KSampler in-process. Writes ``bench/results/gpu_check_<device>.md`` (+ .csv); exits 1 if
any assertion failed (the table still says which).

    python bench/gpu_check.py                       # CUDA: full-size, fp16 + bf16, ~5-8 min on one H100/H200
    python bench/gpu_check.py --device cpu --tiny   # the tiny test models (CI)
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

from bench._common import RESULTS, log, machine, md_table, write_csv  # noqa: E402

SIZES = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def tiny_pipe(family: str):
    from diffusers import DiffusionPipeline

    from tests.fixtures.tiny_diffusers import tiny_sd_path, tiny_sdxl_path
    from tests.fixtures.tiny_flow import tiny_flux_path, tiny_sd3_path

    path = {"sd15": tiny_sd_path, "sdxl": tiny_sdxl_path, "sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]()
    kw = dict(safety_checker=None, requires_safety_checker=False) if family == "sd15" else {}
    pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference(sp):
    """diffusers' img2img pipeline of the family on the same modules (UNets: DDIM, the same ODE step)."""
    import diffusers as d

    cls = {"sd": d.StableDiffusionImg2ImgPipeline, "sdxl": d.StableDiffusionXLImg2ImgPipeline,
           "sd3": d.StableDiffusion3Img2ImgPipeline, "flux": d.FluxImg2ImgPipeline}[sp.family]
    comps = {k: v for k, v in sp.pipe.components.items() if k in cls._get_signature_keys(cls)[0]}
    if sp.family in ("sd", "sdxl"):
        comps["scheduler"] = d.DDIMScheduler.from_config(sp.pipe.scheduler.config, clip_sample=False)
    if sp.family == "sd":
        comps.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref = cls(**comps)
    ref.set_progress_bar_config(disable=True)
    return ref


def img2img_calls(n: int, strength: float, flow: bool) -> int:
    """Model calls of diffusers' img2img for ``num_inference_steps=n`` (its get_timesteps truncation)."""
    if flow:  # t_start = int(n − n·strength)
        return n - int(max(n - min(n * strength, n), 0))
    return min(int(n * strength), n)


class Clock:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t
        self.peak_mib = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else float("nan")


def image(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, size)
    img = torch.stack([base[None, :].expand(size, size), base[:, None].expand(size, size), 0.5 * torch.ones(size, size)])
    return (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)[None]


def check_family(family: str, dtype_name: str, pipe, device: str, size: int, steps: int) -> list[dict]:
    from sdedit_engine.core.noise import NoiseSource
    from sdedit_engine.pipelines.drag_pipeline import cycle_check
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    sp = SDEditPipeline(pipe, device=device)
    img = image(size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: size // 2, size // 4: 3 * size // 4] = 1
    g = sp.default_guidance_scale if sp.family != "flux-schnell" else 0.0
    rows = []

    def row(path, clock, n_steps, ok, note=""):
        rows.append({"family": family, "dtype": dtype_name, "size": size, "path": path, "steps": n_steps,
                     "s_per_step": clock.seconds / max(n_steps, 1) if clock else float("nan"),
                     "peak_vram_mib": clock.peak_mib if clock else float("nan"), "ok": "yes" if ok else "FAIL", "note": note})
        log(rows[-1])

    kw = dict(prompt="a red house in a field", t0=0.6, steps=steps, sampler="ddim", guidance_scale=g,
              output_type="pt", progress=False)
    with Clock(device) as c:
        out = sp(img, seed=0, **kw)
    row("SDEdit", c, steps, bool(torch.isfinite(out.images).all()), f"nfe {out.nfe}")
    with Clock(device) as c:
        again = sp(img, seed=0, **kw)
    dev_noise = NoiseSource.like(torch.zeros(2, 4, 8, 8, device=device), [5, 6]).draw().cpu()
    cpu_noise = NoiseSource.like(torch.zeros(2, 4, 8, 8), [5, 6]).draw()
    row("seeds (same seed twice; device noise = CPU noise)", c, steps,
        torch.equal(out.images, again.images) and torch.equal(dev_noise, cpu_noise))
    with Clock(device) as c:
        masked = sp(img, mask=mask, seed=1, **kw)
    keep = (mask == 0).expand_as(img)
    row("masked SDEdit (kept pixels exact)", c, steps, torch.equal(masked.images[keep], img[keep]) and
        bool(torch.isfinite(masked.images).all()))
    with Clock(device) as c:
        err = cycle_check(sp, img, "a red house", t0=0.6, steps=steps, guidance_scale=3.0 if sp.family != "flux-schnell" else 0.0)
    row("Cycle-SDE reconstruction", c, 2 * steps, err <= 1e-3, f"rel. error {err:.2e}")
    with Clock(device) as c:
        d = sp.drag(img, [{"source": [size // 3, size // 3], "target": [size // 3 + size // 16, size // 3]}],
                    mask=mask, steps=steps, radius=2, output_type="pt", progress=False)
    row("SDE-Drag (masked)", c, d.nfe, bool(torch.isfinite(d.images).all()) and torch.equal(d.images[keep], img[keep]),
        f"{d.iterations} moves")
    ref = reference(sp)
    strength, flow = 0.6, sp.flow is not None
    n = next(k for k in range(steps, 10 * steps + 2) if img2img_calls(k, strength, flow) >= steps)
    rkw = dict(image=img.to(device), strength=strength, num_inference_steps=n, guidance_scale=g, output_type="pt",
               generator=torch.Generator().manual_seed(0))
    if flow:  # SD3/Flux img2img would resize the image to their default 1024² otherwise
        rkw.update(height=size, width=size)
    calls = [0]
    hook = sp.unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with Clock(device) as c:
            ref_out = ref("a red house in a field", **rkw).images
    finally:
        hook.remove()
    row(f"diffusers {type(ref).__name__}", c, calls[0], bool(torch.isfinite(ref_out).all()), f"{calls[0]} calls")
    return rows


def memory_rows(pipe, device: str, sizes, tile: int, dtype_name: str) -> list[dict]:
    """Peak memory of a 2-step SDEdit with VAE + UNet tiling at each size (GPU: max allocated; host: max RSS,
    where the decoded pixels are assembled). Target: the 4096² peak ≤ 1.25× the 1024² peak; 8192² fits."""
    import resource

    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    sp = SDEditPipeline(pipe, device=device)
    sp.enable_vae_tiling(tile_size=tile)
    sp.enable_unet_tiling(tile_size=tile)
    rows = []
    for size in sizes:
        img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        with Clock(device) as c:
            out = sp(img, prompt="a red house", t0=0.5, steps=2, sampler="ddim", output_type="pt", progress=False, seed=0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append({"family": "sd15 (tiled)", "dtype": dtype_name, "size": size, "path": f"memory, VAE+UNet tiles {tile} px",
                     "steps": 2, "s_per_step": c.seconds / 2, "peak_vram_mib": c.peak_mib,
                     "ok": "yes" if bool(torch.isfinite(out.images).all()) else "FAIL",
                     "note": f"host max RSS so far {rss:.0f} MiB"})
        log(rows[-1])
        del out, img
    base = next((r["peak_vram_mib"] for r in rows if r["size"] == sizes[0]), float("nan"))
    for r in rows:
        r["note"] += f"; peak / {sizes[0]}² peak = {r['peak_vram_mib'] / base:.2f}" if base == base else ""
    return rows


def comfy_rows(device: str, tiny: bool, size: int, steps: int, dtype_name: str) -> list[dict]:
    """The pack's SDEdit node vs core KSampler, in-process (SD1.5 checkpoint: tiny fixture or full-size)."""
    from tests.comfy import harness

    harness.add_comfyui_to_sys_path(None, cpu=torch.device(device).type == "cpu")
    harness.import_pack()
    import comfy.sd
    from comfyui_sdedit.nodes import sdedit_nodes

    import nodes as comfy_nodes

    if tiny:
        from tests.fixtures import tiny_sd15

        ckpt = tiny_sd15.checkpoint_path()
    else:
        from bench.fullsize_sd15 import ldm_checkpoint
        from tests.fixtures.tiny_diffusers import cache_root

        ckpt = ldm_checkpoint(cache_root().parent / "fullsize" / "sd15-random-fp16.safetensors")
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    px = image(size).permute(0, 2, 3, 1).contiguous()
    rows = []
    for name, fn in (("ComfyUI SDEdit node", lambda: sdedit_nodes.SDEdit.execute(
            model, pos, neg, vae, px, t0=0.6, steps=steps, cfg=4.0, sampler="ddim", repeats=1, seed=0,
            mask_grow=0, mask_feather=0.0)),
            ("ComfyUI core KSampler (ddim, denoise 0.6)", lambda: comfy_nodes.VAEDecode().decode(vae, comfy_nodes.common_ksampler(
                model, 0, steps, 4.0, "ddim", "simple", pos, neg, comfy_nodes.VAEEncode().encode(vae, px)[0],
                denoise=0.6)[0])[0])):
        fn()  # warm-up (model load)
        with Clock(device) as c:
            out = fn()
        img = out[0] if isinstance(out, (tuple, list)) else getattr(out, "args", [out])[0]
        rows.append({"family": "sd15 (ComfyUI)", "dtype": dtype_name, "size": size, "path": name, "steps": steps,
                     "s_per_step": c.seconds / steps, "peak_vram_mib": c.peak_mib,
                     "ok": "yes" if bool(torch.isfinite(torch.as_tensor(img)).all()) else "FAIL", "note": ""})
        log(rows[-1])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny test models (64 px) instead of full size")
    ap.add_argument("--families", default="sd15,sdxl,sd3,flux")
    ap.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default: fp16,bf16; fp32 with --tiny on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per path (default 10; 4 with --tiny)")
    ap.add_argument("--size", type=int, default=None, help="image side (default: 512 SD1.5, 1024 others; 64 tiny)")
    ap.add_argument("--comfy", action="store_true", help="also the ComfyUI node vs KSampler (SD1.5)")
    ap.add_argument("--memory", default=None, help="also peak memory with VAE+UNet tiling on SD1.5 at these sizes "
                    "(default on CUDA: 1024,4096,8192; tiny: off)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but CUDA is not available (use --device cpu --tiny)")
    dtypes = (args.dtypes or ("fp32" if args.tiny and args.device == "cpu" else "fp16,bf16")).split(",")
    steps = args.steps or (4 if args.tiny else 10)
    rows, failures = [], 0
    start = time.perf_counter()
    log(machine())
    for family in args.families.split(","):
        size = args.size or (64 if args.tiny else SIZES[family])
        base = None
        for dt in dtypes:
            try:
                if base is None:
                    if args.tiny:
                        base = tiny_pipe(family)
                    else:
                        from bench.fullsize_models import build

                        base = build(family, device=args.device, dtype=DTYPES[dt])
                base.to(device=args.device, dtype=DTYPES[dt])
                rows += check_family(family, dt, base, args.device, size, steps)
            except Exception as e:  # one family failing must not hide the others
                traceback.print_exc()
                rows.append({"family": family, "dtype": dt, "size": size, "path": "(error)", "steps": 0,
                             "s_per_step": float("nan"), "peak_vram_mib": float("nan"), "ok": "FAIL",
                             "note": f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"})
        del base
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    mem_sizes = args.memory or ("" if args.tiny or torch.device(args.device).type != "cuda" else "1024,4096,8192")
    if mem_sizes:
        try:
            from bench.fullsize_models import build

            pipe = tiny_pipe("sd15") if args.tiny else build("sd15", device=args.device, dtype=DTYPES[dtypes[0]])
            pipe.to(device=args.device, dtype=DTYPES[dtypes[0]])
            rows += memory_rows(pipe, args.device, [int(v) for v in mem_sizes.split(",")], 64 if args.tiny else 512,
                                dtypes[0])
            del pipe
        except Exception as e:
            traceback.print_exc()
            rows.append({"family": "sd15 (tiled)", "dtype": dtypes[0], "size": 0, "path": "(error)", "steps": 0,
                         "s_per_step": float("nan"), "peak_vram_mib": float("nan"), "ok": "FAIL",
                         "note": f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"})
    if args.comfy:
        try:
            rows += comfy_rows(args.device, args.tiny, args.size or (64 if args.tiny else 512), steps, dtypes[0])
        except Exception as e:
            traceback.print_exc()
            rows.append({"family": "sd15 (ComfyUI)", "dtype": dtypes[0], "size": 0, "path": "(error)", "steps": 0,
                         "s_per_step": float("nan"), "peak_vram_mib": float("nan"), "ok": "FAIL",
                         "note": f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"})
    failures = sum(r["ok"] != "yes" for r in rows)
    total = time.perf_counter() - start
    out = Path(args.out)
    name = f"gpu_check_{torch.device(args.device).type}{'_tiny' if args.tiny else ''}"
    write_csv(out / f"{name}.csv", rows)
    cmd = "python bench/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{name}.md").write_text(
        f"# Device check ({'tiny test models' if args.tiny else 'full-size random-weight models'})\n\n"
        f"Machine: {machine()}\n\nCommand: `{cmd}`\n\nTotal {total:.0f} s; {failures} failed check(s). "
        "s/step = wall seconds of the path / model-call steps; peak VRAM = torch.cuda.max_memory_allocated "
        "(nan on CPU).\n\n" + md_table(rows) + "\n")
    print(md_table(rows))
    print(f"{len(rows)} checks, {failures} failed, {total:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
