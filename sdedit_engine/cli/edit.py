"""``sdedit`` subcommands for SDEdit (Meng et al., ICLR 2022): edit, composite, sweep, strokes, batch.

    sdedit edit GUIDE [--mask M] --prompt … --t0 0.5 --steps 20 --sampler ddpm --model PATH -o OUT
    sdedit composite BASE PATCH --at X,Y [--patch-mask M] --model PATH -o OUT
    sdedit sweep GUIDE --t0 0.2,0.3,0.4 --model PATH -o OUTDIR     (grid.png, l2_vs_t0.png, sweep.csv)
    sdedit strokes PHOTO -o GUIDE                                    (the paper's stroke simulation)
    sdedit batch DIR --model PATH -o OUTDIR                          (splits across `accelerate launch`)

Every command imports torch, PIL and diffusers only when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..core.defaults import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, SAMPLER_NAMES, SPACINGS
from .common import (
    T0_HELP,
    CLIError,
    add_guidance_arg,
    add_model_args,
    check_writable_image,
    crop_resolution_arg,
    info,
    load_pipeline,
    number,
    positive_int,
    steps_arg,
    t0_arg,
    t0_list_arg,
    xy_arg,
)


def _add_sdedit_args(p: argparse.ArgumentParser) -> None:
    """The model group plus SDEdit's sampling options (shared by edit, composite, sweep, batch)."""
    add_model_args(p)
    s = p.add_argument_group("sampling")
    s.add_argument("--prompt", default="")
    s.add_argument("--negative-prompt", default=None)
    s.add_argument("--steps", type=steps_arg, default=DEFAULT_STEPS, help="solver steps from σ(t0) to 0")
    s.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES)
    add_guidance_arg(s, None)
    s.add_argument("--repeats", type=positive_int, default=1, help="K: re-noise and solve again (paper: 3)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--spacing", default=DEFAULT_SPACING, choices=SPACINGS,
                   help="σ grid: exponential (even in log σ; default), uniform in timestep (the paper's loop), karras")
    s.add_argument("--known-noise", default="fresh", choices=("fresh", "fixed"))
    s.add_argument("--mask-grow", type=int, default=0, help="dilate the mask by N pixels")
    s.add_argument("--mask-blur", "--mask-feather", dest="mask_blur", type=number(0, what="--mask-blur"), default=0.0,
                   help="feather the mask by N pixels")
    s.add_argument("--no-composite", action="store_true", help="do not paste the original back outside the mask")
    s.add_argument("--crop-to-mask", type=int, default=None, metavar="PAD",
                   help="edit only the mask's bounding box plus PAD pixels (large images, small edits; needs a mask)")
    s.add_argument("--crop-resolution", type=crop_resolution_arg, default=None, metavar="PX",
                   help="with --crop-to-mask: resize the crop so its long side is PX pixels for the model "
                        "(e.g. 512 for SD1.5, 1024 for SDXL/Flux; default: the crop's own size)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_commands(sub) -> None:
    """Register edit, composite, sweep, strokes and batch on the ``sdedit`` subparsers."""
    e = sub.add_parser("edit", help="edit one guide image (strokes, composite, photo)")
    e.add_argument("guide", help="guide image: strokes, a composite, or a photo with strokes")
    e.add_argument("--mask", help="white = edit, black = keep (or transparent = edit)")
    e.add_argument("--t0", type=t0_arg, default=0.5, help=T0_HELP)
    e.add_argument("--num-images", type=positive_int, default=1, help="samples with seeds seed, seed+1, …")
    e.add_argument("-o", "--output", required=True)
    _add_sdedit_args(e)
    e.set_defaults(func=cmd_edit)

    c = sub.add_parser("composite", help="paste PATCH onto BASE at X,Y, then edit the pasted region")
    c.add_argument("base")
    c.add_argument("patch")
    c.add_argument("--at", type=xy_arg, required=True, help="top-left corner X,Y of the patch in BASE")
    c.add_argument("--patch-mask", help="which patch pixels to paste (white = paste); default: all")
    c.add_argument("--whole-image", action="store_true", help="edit the whole composite, not just the patch")
    c.add_argument("--save-guide", help="also save the composite guide here")
    c.add_argument("--t0", type=t0_arg, default=0.5, help=T0_HELP)
    c.add_argument("-o", "--output", required=True)
    _add_sdedit_args(c)
    c.set_defaults(func=cmd_composite)

    w = sub.add_parser("sweep", help="t0 sweep: labelled grid, L2-vs-t0 plot and CSV")
    w.add_argument("guide")
    w.add_argument("--mask")
    w.add_argument("--t0", type=t0_list_arg, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    w.add_argument("--num-seeds", type=positive_int, default=1)
    w.add_argument("--l2-size", type=int, default=0, help="also compute L2 at SIZE² (0: full resolution only)")
    w.add_argument("-o", "--output", required=True, help="output folder")
    _add_sdedit_args(w)
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
    b.add_argument("--t0", type=t0_arg, default=0.5, help=T0_HELP)
    b.add_argument("--skip-existing", action="store_true")
    b.add_argument("-o", "--output", required=True, help="output folder")
    _add_sdedit_args(b)
    b.set_defaults(func=cmd_batch)


# --------------------------------------------------------------------------- helpers
def _control(args):
    from ..io.imaging import load_image

    return load_image(args.control_image) if args.control_image else None


def _call_kwargs(args, mask) -> dict:
    """The SDEditPipeline keyword arguments shared by every command."""
    if args.crop_to_mask is not None and mask is None:
        raise CLIError("--crop-to-mask needs a mask (--mask, or a mask file next to each guide for batch)")
    if args.crop_resolution is not None and args.crop_to_mask is None:
        raise CLIError("--crop-resolution resizes the crop of --crop-to-mask; give --crop-to-mask PAD too")
    return dict(prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps, sampler=args.sampler,
                guidance_scale=args.guidance_scale, repeats=args.repeats, control_image=_control(args),
                controlnet_conditioning_scale=args.control_scale, spacing=args.spacing, known_noise=args.known_noise,
                mask_grow=args.mask_grow, mask_blur=args.mask_blur, composite=not args.no_composite,
                crop_padding=args.crop_to_mask, crop_resolution=args.crop_resolution, progress=not args.quiet)


def run_edit(pipe, args, guide, mask, seed: int, t0: float, num_images: int = 1):
    return pipe(guide, mask=mask, t0=t0, seed=seed, num_images=num_images, output_type="pt", **_call_kwargs(args, mask))


def _outputs(path: str, n: int) -> list[Path]:
    p = Path(path)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{i}{p.suffix or '.png'}") for i in range(n)]


# --------------------------------------------------------------------------- commands
def cmd_edit(args) -> int:
    from ..io.imaging import load_image, load_mask, save_image

    check_writable_image(args.output)
    if args.crop_to_mask is not None and not args.mask:
        raise CLIError("--crop-to-mask needs --mask (it crops to the mask's bounding box)")
    guide = load_image(args.guide)
    mask = load_mask(args.mask, size=tuple(guide.shape[-2:])) if args.mask else None
    pipe = load_pipeline(args)
    out = run_edit(pipe, args, guide, mask, args.seed, args.t0, args.num_images)
    for i, path in enumerate(_outputs(args.output, args.num_images)):
        save_image(out.images[i:i + 1], path)
        print(path)
    info(args, f"t0={out.t0} sigma0={out.sigma0:.4f} steps={out.steps} repeats={args.repeats} NFE={out.nfe}")
    return 0


def cmd_composite(args) -> int:
    from ..io.imaging import load_image, load_mask, paste_patch, save_image

    check_writable_image(args.output)
    if args.crop_to_mask is not None and args.whole_image:
        raise CLIError("--crop-to-mask crops to the pasted patch; it cannot be combined with --whole-image")
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

    if args.crop_to_mask is not None and not args.mask:
        raise CLIError("--crop-to-mask needs --mask (it crops to the mask's bounding box)")
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

    check_writable_image(args.output)
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
    import torch
    from accelerate import PartialState

    from ..io.imaging import load_image, load_mask, save_image

    jobs = batch_jobs(args.folder, args.masks)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
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
    info(args, f"rank {state.process_index}/{state.num_processes}: {done} of {len(jobs)} images -> {outdir}")
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
