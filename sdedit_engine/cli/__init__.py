"""The ``sdedit`` command line: SDEdit with diffusers models, for scripts, batch jobs and research.

    sdedit edit GUIDE [--mask M] --prompt … --t0 0.5 --steps 20 --sampler ddpm --model PATH -o OUT
    sdedit composite BASE PATCH --at X,Y [--patch-mask M] --model PATH -o OUT
    sdedit sweep GUIDE --t0 0.2,0.3,0.4 --model PATH -o OUTDIR     (grid.png, l2_vs_t0.png, sweep.csv)
    sdedit strokes PHOTO -o GUIDE                                    (the paper's stroke simulation)
    sdedit batch DIR --model PATH -o OUTDIR
    sdedit drag IMAGE --points '[{"source":[x,y],"target":[x,y]}]' [--mask M] --model PATH -o OUT
    sdedit dragbench DIR --model PATH -o OUTDIR                      (DragBench layout; contact sheets)
    sdedit inpaint IMAGE --mask M --mode sde --model PATH -o OUT      (SDE inpainting; --mode ode: DDIM)
    sdedit diffedit IMAGE --source-prompt … --target-prompt … --model PATH -o OUT   (DiffEdit-SDE)
    accelerate launch --num_processes N [--multi_gpu] -m sdedit_engine.cli batch DIR --model PATH -o OUTDIR
        (N processes split the folder: no duplicates, no gaps; on a CPU-only machine pass --multi_gpu
         so accelerate starts N processes, which then use the CPU)

Bad input (missing model, unreadable image, mismatched sizes, bad t0, pickle checkpoint) prints one
``sdedit: error: …`` line on stderr and exits non-zero; set ``SDEDIT_DEBUG=1`` for a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

EXIT_ERROR, EXIT_USAGE = 1, 2
T0_HELP = "noise level in (0, 1]: larger = more realism, less faithfulness (paper: 0.3-0.6; default 0.5)"


class CLIError(ValueError):
    """A user error detected by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``sdedit: error:`` line (no usage dump)."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"sdedit: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


# --------------------------------------------------------------------------- argument types
def _t0(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"t0 must be a number in (0, 1], got {text!r}") from None
    if not (0.0 < v <= 1.0) or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"t0 must be in (0, 1] (0 = keep the guide, 1 = pure noise), got {text}")
    return v


def _t0_list(text: str) -> list[float]:
    vals = [_t0(p.strip()) for p in text.split(",") if p.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("--t0 needs at least one value, e.g. 0.3,0.4,0.5")
    return vals


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _xy(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at must be X,Y in pixels, e.g. 32,48; got {text!r}") from None
    return x, y


# --------------------------------------------------------------------------- parser
def add_model_source_args(g) -> None:
    """--model, --config, --allow-download, --device (read by :func:`load_pipeline`)."""
    g.add_argument("--model", required=True, help="diffusers folder, cached hub id, or single-file .safetensors")
    g.add_argument("--config", help="diffusers folder/id describing a single-file checkpoint (needed offline)")
    g.add_argument("--allow-download", action="store_true", help="allow fetching models from the Hugging Face hub")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps …")


def add_tiling_args(g) -> None:
    """--vae-tiling and --unet-tiling (read by :func:`load_pipeline`)."""
    g.add_argument("--vae-tiling", action="store_true", help="tile the VAE (large images, bounded memory)")
    g.add_argument("--unet-tiling", type=int, nargs="?", const=0, default=None, metavar="PX",
                   help="denoise in overlapping tiles of PX pixels (default: the model's native size) for images "
                        "far above it; memory follows the tile")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from ..core.samplers import SAMPLER_NAMES

    g = p.add_argument_group("model")
    add_model_source_args(g)
    g.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    g.add_argument("--controlnet", help="ControlNet folder (needs --control-image)")
    g.add_argument("--control-image", help="control image for the ControlNet (resized to the guide)")
    g.add_argument("--control-scale", type=float, default=1.0)
    g.add_argument("--lora", help="LoRA .safetensors file or folder")
    g.add_argument("--lora-scale", type=float, default=1.0)
    add_tiling_args(g)
    s = p.add_argument_group("sampling")
    s.add_argument("--prompt", default="")
    s.add_argument("--negative-prompt", default=None)
    s.add_argument("--steps", type=_positive_int, default=20, help="solver steps from σ(t0) to 0")
    s.add_argument("--sampler", default="dpmpp_2m_sde", choices=SAMPLER_NAMES)
    s.add_argument("--guidance-scale", "--cfg", type=float, default=7.5, dest="guidance_scale")
    s.add_argument("--repeats", type=_positive_int, default=1, help="K: re-noise and solve again (paper: 3)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--spacing", default="uniform", choices=("uniform", "karras"))
    s.add_argument("--known-noise", default="fresh", choices=("fresh", "fixed"))
    s.add_argument("--mask-grow", type=int, default=0, help="dilate the mask by N pixels")
    s.add_argument("--mask-blur", type=float, default=0.0, help="feather the mask by N pixels")
    s.add_argument("--no-composite", action="store_true", help="do not paste the original back outside the mask")
    s.add_argument("--crop-to-mask", type=int, default=None, metavar="PAD",
                   help="edit only the mask's bounding box plus PAD pixels (large images, small edits)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1]
    p = _Parser(prog="sdedit", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="SDEdit (Meng et al., ICLR 2022) image editing with diffusers Stable Diffusion models.",
                epilog="examples:\n" + examples + "\n\nt0 is the paper's noise level: sigma of timestep round(t0*1000)-1.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    e = sub.add_parser("edit", help="edit one guide image (strokes, composite, photo)")
    e.add_argument("guide", help="guide image: strokes, a composite, or a photo with strokes")
    e.add_argument("--mask", help="white = edit, black = keep (or transparent = edit)")
    e.add_argument("--t0", type=_t0, default=0.5, help=T0_HELP)
    e.add_argument("--num-images", type=_positive_int, default=1, help="samples with seeds seed, seed+1, …")
    e.add_argument("-o", "--output", required=True)
    _add_model_args(e)
    e.set_defaults(func=cmd_edit)

    c = sub.add_parser("composite", help="paste PATCH onto BASE at X,Y, then edit the pasted region")
    c.add_argument("base")
    c.add_argument("patch")
    c.add_argument("--at", type=_xy, required=True, help="top-left corner X,Y of the patch in BASE")
    c.add_argument("--patch-mask", help="which patch pixels to paste (white = paste); default: all")
    c.add_argument("--whole-image", action="store_true", help="edit the whole composite, not just the patch")
    c.add_argument("--save-guide", help="also save the composite guide here")
    c.add_argument("--t0", type=_t0, default=0.5, help=T0_HELP)
    c.add_argument("-o", "--output", required=True)
    _add_model_args(c)
    c.set_defaults(func=cmd_composite)

    w = sub.add_parser("sweep", help="t0 sweep: labelled grid, L2-vs-t0 plot and CSV")
    w.add_argument("guide")
    w.add_argument("--mask")
    w.add_argument("--t0", type=_t0_list, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    w.add_argument("--num-seeds", type=_positive_int, default=1)
    w.add_argument("--l2-size", type=int, default=0, help="also compute L2 at SIZE² (0: full resolution only)")
    w.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(w)
    w.set_defaults(func=cmd_sweep)

    s = sub.add_parser("strokes", help="simulate a stroke painting from a photo (median filter + flat palette)")
    s.add_argument("photo")
    s.add_argument("--median", type=int, default=None, help="median kernel (odd; default 23 px at 256², scaled)")
    s.add_argument("--colors", type=int, default=6)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_strokes)

    b = sub.add_parser("batch", help="edit every image of a folder (splits across `accelerate launch` processes)")
    b.add_argument("folder")
    b.add_argument("--masks", help="folder of masks named like the guides (default: <stem>_mask.* next to them)")
    b.add_argument("--t0", type=_t0, default=0.5, help=T0_HELP)
    b.add_argument("--skip-existing", action="store_true")
    b.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(b)
    b.set_defaults(func=cmd_batch)

    from .drag import add_commands  # SDE-Drag, DragBench, SDE inpainting, DiffEdit-SDE

    add_commands(sub)
    d = sub.add_parser("demo", help="model-free demo on the analytic prior (t0 trade-off, samplers vs the exact SDEdit)")
    d.add_argument("--samples", type=_positive_int, default=1000, help="SDEdit outputs per setting")
    d.set_defaults(func=cmd_demo)
    return p


# --------------------------------------------------------------------------- helpers
def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl

        dl.set_verbosity_error()
        dl.disable_progress_bar()
        tl.set_verbosity_error()
        tl.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks are best effort
        pass


def _device_dtype(args, device=None):
    import torch

    dev = args.device
    if dev == "auto":
        dev = device or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    dev = torch.device(dev)
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    if dt is None:
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    return dev, dt


def load_pipeline(args, device=None):
    from ..pipelines.pipeline import SDEditPipeline

    _quiet_libraries()
    if args.control_image and not args.controlnet:
        raise CLIError("--control-image needs --controlnet")
    if args.controlnet and not args.control_image:
        raise CLIError("--controlnet needs --control-image")
    dev, dt = _device_dtype(args, device)
    pipe = SDEditPipeline.load(args.model, config=args.config, controlnet=args.controlnet,
                               allow_download=args.allow_download, torch_dtype=dt, device=dev)
    if args.lora:
        pipe.load_lora_weights(args.lora, scale=args.lora_scale)
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    if args.unet_tiling is not None:
        try:
            pipe.enable_unet_tiling(tile_size=args.unet_tiling or None)
        except ValueError as e:
            raise CLIError(f"--unet-tiling: {e}") from None
    return pipe


def _control(args):
    from ..io.imaging import load_image

    return load_image(args.control_image) if args.control_image else None


def _call_kwargs(args, mask) -> dict:
    """The SDEditPipeline keyword arguments shared by every command."""
    return dict(prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps, sampler=args.sampler,
                guidance_scale=args.guidance_scale, repeats=args.repeats, control_image=_control(args),
                controlnet_conditioning_scale=args.control_scale, spacing=args.spacing, known_noise=args.known_noise,
                mask_grow=args.mask_grow, mask_blur=args.mask_blur, composite=not args.no_composite,
                crop_padding=args.crop_to_mask if mask is not None else None, progress=not args.quiet)


def run_edit(pipe, args, guide, mask, seed: int, t0: float, num_images: int = 1):
    return pipe(guide, mask=mask, t0=t0, seed=seed, num_images=num_images, output_type="pt", **_call_kwargs(args, mask))


def _outputs(path: str, n: int) -> list[Path]:
    p = Path(path)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{i}{p.suffix or '.png'}") for i in range(n)]


def _check_writable_image(path: str) -> None:
    from PIL import Image

    ext = Path(path).suffix.lower()
    if ext not in Image.registered_extensions():
        raise CLIError(f"cannot write {path}: unknown image extension {ext or '(none)'!r}; use .png or .jpg")


def _info(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- commands
def cmd_edit(args) -> int:
    from ..io.imaging import load_image, load_mask, save_image

    _check_writable_image(args.output)
    guide = load_image(args.guide)
    mask = load_mask(args.mask, size=tuple(guide.shape[-2:])) if args.mask else None
    pipe = load_pipeline(args)
    out = run_edit(pipe, args, guide, mask, args.seed, args.t0, args.num_images)
    for i, path in enumerate(_outputs(args.output, args.num_images)):
        save_image(out.images[i:i + 1], path)
        print(path)
    _info(args, f"t0={out.t0} sigma0={out.sigma0:.4f} steps={out.steps} repeats={args.repeats} NFE={out.nfe}")
    return 0


def cmd_composite(args) -> int:
    from ..io.imaging import load_image, load_mask, paste_patch, save_image

    _check_writable_image(args.output)
    base = load_image(args.base)
    patch = load_image(args.patch)
    pmask = load_mask(args.patch_mask, size=tuple(patch.shape[-2:])) if args.patch_mask else None
    guide, mask = paste_patch(base, patch, pmask, *args.at)
    if args.save_guide:
        save_image(guide, args.save_guide)
    pipe = load_pipeline(args)
    out = run_edit(pipe, args, guide, None if args.whole_image else mask, args.seed, args.t0)
    save_image(out.images, args.output)
    print(args.output)
    return 0


def cmd_sweep(args) -> int:
    from ..io.imaging import load_image, load_mask
    from .sweep import t0_sweep

    guide = load_image(args.guide)
    mask = load_mask(args.mask, size=tuple(guide.shape[-2:])) if args.mask else None
    pipe = load_pipeline(args)
    kw = _call_kwargs(args, mask)
    t0_sweep(pipe, guide, args.t0, args.output, mask=mask, seeds=[args.seed + k for k in range(args.num_seeds)],
             l2_size=args.l2_size, **kw)
    for name in ("grid.png", "l2_vs_t0.png", "sweep.csv"):
        print(Path(args.output) / name)
    return 0


def cmd_strokes(args) -> int:
    from ..io.imaging import load_image, save_image
    from ..io.strokes import simulate_strokes

    _check_writable_image(args.output)
    if args.median is not None and (args.median < 1 or args.median % 2 == 0):
        raise CLIError(f"--median must be a positive odd integer, got {args.median}")
    if not 1 <= args.colors <= 256:
        raise CLIError(f"--colors must be in 1..256, got {args.colors}")
    save_image(simulate_strokes(load_image(args.photo), args.median, args.colors), args.output)
    print(args.output)
    return 0


def _find_mask(guide: Path, masks_dir: Path | None) -> Path | None:
    from ..io.imaging import IMAGE_EXTENSIONS

    cands = []
    for ext in IMAGE_EXTENSIONS:
        if masks_dir is not None:
            cands += [masks_dir / f"{guide.stem}{ext}", masks_dir / f"{guide.stem}_mask{ext}"]
        else:
            cands.append(guide.with_name(f"{guide.stem}_mask{ext}"))
    return next((c for c in cands if c.is_file()), None)


def batch_jobs(folder, masks=None) -> list[tuple[Path, Path | None]]:
    """(guide, mask) pairs in name order; files named ``*_mask.*`` are masks, not guides."""
    from ..io.imaging import list_images

    mdir = Path(masks) if masks else None
    if mdir is not None and not mdir.is_dir():
        raise CLIError(f"mask folder not found: {mdir}")
    guides = [f for f in list_images(folder) if not f.stem.endswith("_mask")]
    if not guides:
        raise CLIError(f"no images found in {folder}")
    return [(g, _find_mask(g, mdir)) for g in guides]


def cmd_batch(args) -> int:
    from accelerate import PartialState

    from ..io.imaging import load_image, load_mask, save_image

    jobs = batch_jobs(args.folder, args.masks)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    import torch

    # accelerate only builds a CPU (gloo) process group when told to use the CPU; on a CPU-only
    # machine start the processes with `accelerate launch --multi_gpu --num_processes N` or torchrun.
    use_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()) \
        or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=use_cpu)
    # Seeds are tied to each file's position in the sorted list, so results do not depend on N.
    indexed = list(enumerate(jobs))
    with state.split_between_processes(indexed) as mine:
        mine = list(mine)
    pipe = load_pipeline(args, device=str(state.device))
    manifest = outdir / f"manifest-rank{state.process_index}.jsonl"
    done, failed = 0, []
    with open(manifest, "w") as log:
        for idx, (guide_path, mask_path) in mine:
            out_path = outdir / f"{guide_path.stem}.png"
            if args.skip_existing and out_path.exists():
                continue
            record = {"input": guide_path.name, "mask": mask_path.name if mask_path else None, "index": idx,
                      "seed": args.seed + idx, "rank": state.process_index, "world": state.num_processes}
            try:  # one bad file must not stop (or hang) the other processes: record it and go on
                guide = load_image(guide_path)
                mask = load_mask(mask_path, size=tuple(guide.shape[-2:])) if mask_path else None
                out = run_edit(pipe, args, guide, mask, args.seed + idx, args.t0)
                save_image(out.images, out_path)
                record["output"] = out_path.name
                done += 1
            except (ValueError, OSError) as e:
                record["error"] = " ".join(str(e).split())
                failed.append(guide_path.name)
            log.write(json.dumps(record) + "\n")
            log.flush()
    _info(args, f"rank {state.process_index}/{state.num_processes}: {done} of {len(jobs)} images -> {outdir}")
    state.wait_for_everyone()
    if state.is_main_process:  # manifests of a previous run with more processes would mislead
        for stale in outdir.glob("manifest-rank*.jsonl"):
            rank = stale.stem.removeprefix("manifest-rank")
            if rank.isdigit() and int(rank) >= state.num_processes:
                stale.unlink()
    if failed:
        raise CLIError(f"{len(failed)} file(s) failed on rank {state.process_index} ({', '.join(failed)}); "
                       f"see {manifest}")
    return 0


# --------------------------------------------------------------------------- entry point
def cmd_demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(["--samples", str(args.samples)])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("SDEDIT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("sdedit: interrupted\n")
        return 130
    except Exception as e:  # every failure is one line; tracebacks only with SDEDIT_DEBUG=1
        if debug:
            raise
        from ..io.imaging import ImageError
        from ..pipelines.loading import ModelLoadError

        known = isinstance(e, (CLIError, ImageError, ModelLoadError, ValueError, FileNotFoundError, PermissionError))
        msg = " ".join(str(e).split()) or type(e).__name__
        prefix = "" if known else f"internal error ({type(e).__name__}, SDEDIT_DEBUG=1 for details): "
        sys.stderr.write(f"sdedit: error: {prefix}{msg}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
