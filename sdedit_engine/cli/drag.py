"""``sdedit`` subcommands for the SDE editing family (Nie et al., ICLR 2024).

    sdedit drag IMAGE --points '[{"source":[x,y],"target":[x,y]}]' [--mask M] --prompt … --model PATH -o OUT
    sdedit dragbench DIR --model PATH -o OUTDIR        (DragBench layout; results, contact sheets, summary)
    sdedit inpaint IMAGE --mask M --mode sde|ode --prompt … --model PATH -o OUT
    sdedit diffedit IMAGE --source-prompt … --target-prompt … [--mask M] --mode sde|ode --model PATH -o OUT

Errors are one ``sdedit: error: …`` line, like every other subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.defaults import DEFAULT_DRAG_STEPS
from .common import (
    CLIError,
    add_guidance_arg,
    add_model_args,
    check_writable_image,
    info,
    load_pipeline,
    number,
    positive_int,
    steps_arg,
    t0_arg,
)


def _family_model_args(p: argparse.ArgumentParser) -> None:
    g = add_model_args(p, controlnet=False)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _drag_args(p: argparse.ArgumentParser, lora_rank: int) -> None:
    d = p.add_argument_group("SDE-Drag (defaults: the paper's, except --steps)")
    d.add_argument("--t0", type=t0_arg, default=0.6, help="noise level of the drag (paper: 0.6)")
    d.add_argument("--steps", type=steps_arg, default=DEFAULT_DRAG_STEPS,
                   help=f"Cycle-SDE steps from t0 (default {DEFAULT_DRAG_STEPS}; the paper: 120, 4x the cost)")
    add_guidance_arg(d, 3.0, "CFG at t0, ramping linearly to about 1 at the end (paper: 3)")
    d.add_argument("--step-size", type=number(0, what="--step-size", open_lo=True), default=2.0,
                   help="latent pixels moved per drag iteration (2 = 16 image pixels)")
    d.add_argument("--radius", "--patch-radius", dest="radius", type=positive_int, default=5, help="half-size of the copied latent patch (5 = 10x10)")
    d.add_argument("--beta", type=number(0, 1, "--beta"), default=0.3, help="source content kept (rest: noise)")
    d.add_argument("--alpha", type=number(0, what="--alpha"), default=1.1, help="amplification at the target")
    d.add_argument("--lora-steps", type=int, default=0,
                   help="fine-tune a LoRA on the image for N steps first (paper: 100; 0 = off)")
    d.add_argument("--lora-rank", type=positive_int, default=lora_rank, help=f"rank of that LoRA (default {lora_rank})")
    d.add_argument("--lora-lr", type=number(0, what="--lora-lr", open_lo=True), default=2e-4)
    d.add_argument("--lora-scale-min", type=number(0, 1, "--lora-scale-min"), default=0.5,
                   help="LoRA weight at t0 (cosine ramp to 1 near t = 0)")
    d.add_argument("--prompt", default=None, help="prompt (a description of the wanted result works best)")
    d.add_argument("--negative-prompt", default=None)
    d.add_argument("--no-composite", action="store_true", help="do not paste the original back outside the mask")


def add_commands(sub) -> None:
    """Register drag, dragbench, inpaint and diffedit on the ``sdedit`` subparsers."""
    p = sub.add_parser("drag", help="SDE-Drag: drag content from source points to target points")
    p.add_argument("image")
    p.add_argument("--points", required=True,
                   help='JSON or a .json file: [{"source":[x,y],"target":[x,y]}, …] or DragBench\'s '
                        '{"source":[[x,y],…],"target":[[x,y],…]} in image pixels (x = column)')
    p.add_argument("--mask", help="editable area (white = may change); outside it the image is kept exactly")
    p.add_argument("--save-sheet", help="also write original | points | result here")
    p.add_argument("-o", "--output", required=True)
    _drag_args(p, 16)
    _family_model_args(p)
    p.set_defaults(func=cmd_drag)

    b = sub.add_parser("dragbench", help="SDE-Drag over a DragBench folder (skips and reports broken samples)")
    b.add_argument("folder", help="root of sample folders with origin_image.png, mask.png, prompt.json")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--limit", type=positive_int, help="only the first N samples")
    b.add_argument("--skip-existing", action="store_true", help="skip samples whose result already exists")
    b.add_argument("--sheet", choices=("each", "one", "both", "none"), default="both",
                   help="contact sheets: one per sample (<name>_sheet.png), one for all (contact_sheet.png)")
    _drag_args(b, 4)
    _family_model_args(b)
    b.set_defaults(func=cmd_dragbench)

    i = sub.add_parser("inpaint", help="SDE (DDPM) or ODE (DDIM) inpainting with a non-inpainting model")
    i.add_argument("image")
    i.add_argument("--mask", required=True, help="white = fill")
    i.add_argument("--mode", choices=("sde", "ode"), default="sde")
    i.add_argument("--steps", type=steps_arg, default=50)
    add_guidance_arg(i, None)
    i.add_argument("--prompt", default="")
    i.add_argument("--negative-prompt", default=None)
    i.add_argument("--mask-grow", type=int, default=0)
    i.add_argument("--mask-blur", "--mask-feather", dest="mask_blur", type=number(0, what="--mask-blur"), default=0.0,
                   help="feather the mask by N pixels")
    i.add_argument("--no-composite", action="store_true")
    i.add_argument("-o", "--output", required=True)
    _family_model_args(i)
    i.set_defaults(func=cmd_inpaint)

    e = sub.add_parser("diffedit", help="DiffEdit-SDE (or -ODE): source prompt → target prompt inside a mask")
    e.add_argument("image")
    e.add_argument("--source-prompt", required=True, help="what the image shows, e.g. 'a bowl of fruits'")
    e.add_argument("--target-prompt", required=True, help="what it should show, e.g. 'a bowl of bananas'")
    e.add_argument("--mask", help="white = edit (default: DiffEdit's automatic mask)")
    e.add_argument("--mode", choices=("sde", "ode"), default="sde")
    e.add_argument("--t0", type=t0_arg, default=0.7)
    e.add_argument("--steps", type=steps_arg, default=35)
    add_guidance_arg(e, None)
    e.add_argument("--negative-prompt", default=None)
    e.add_argument("--mask-threshold", type=number(0, 1, "--mask-threshold"), default=0.5)
    e.add_argument("--save-mask", help="also write the mask used here")
    e.add_argument("--no-composite", action="store_true")
    e.add_argument("-o", "--output", required=True)
    _family_model_args(e)
    e.set_defaults(func=cmd_diffedit)


# --------------------------------------------------------------------------- helpers
def read_points(text: str):
    """``--points``: JSON text, or the path of a JSON file (a DragBench prompt.json works)."""
    t = text.strip()
    if t[:1] in ("[", "{"):
        return t, None
    p = Path(text).expanduser()
    if not p.is_file():
        raise CLIError(f"--points: not JSON and no such file: {text}")
    try:
        content = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"--points: cannot read {p}: {e}") from None
    prompt = None
    try:
        data = json.loads(content)
        if isinstance(data, dict) and isinstance(data.get("prompt"), str):
            prompt = data["prompt"]
    except json.JSONDecodeError as e:
        raise CLIError(f"--points: {p} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return content, prompt


def _lora_options(args):
    if args.lora_steps < 0:
        raise CLIError(f"--lora-steps must be >= 0, got {args.lora_steps}")
    if args.lora_steps == 0:
        return None
    return {"steps": args.lora_steps, "rank": args.lora_rank, "learning_rate": args.lora_lr,
            "scale_min": args.lora_scale_min}


def _drag_kwargs(args) -> dict:
    return dict(t0=args.t0, steps=args.steps, guidance_scale=args.guidance_scale, step_size=args.step_size,
                radius=args.radius, beta=args.beta, alpha=args.alpha, seed=args.seed, lora_tuning=_lora_options(args),
                negative_prompt=args.negative_prompt, composite=not args.no_composite, output_type="pt",
                progress=not args.quiet)


# --------------------------------------------------------------------------- commands
def cmd_drag(args) -> int:
    from ..core.drag import parse_points
    from ..io.imaging import load_image, load_mask, save_image
    from .dragbench import contact_row

    check_writable_image(args.output)
    if args.save_sheet:
        check_writable_image(args.save_sheet)
    image = load_image(args.image)
    h, w = image.shape[-2:]
    spec, file_prompt = read_points(args.points)
    parse_points(spec, w, h)  # clear errors before the model loads
    mask = load_mask(args.mask, size=(h, w)) if args.mask else None
    _lora_options(args)
    prompt = args.prompt if args.prompt is not None else (file_prompt or "")
    pipe = load_pipeline(args)
    out = pipe.drag(image, spec, mask, prompt, **_drag_kwargs(args))
    save_image(out.images, args.output)
    print(args.output)
    if args.save_sheet:
        contact_row(image, out.pairs, out.images, mask).save(args.save_sheet)
        print(args.save_sheet)
    info(args, f"drag: {len(out.pairs)} pair(s), {out.iterations} iteration(s), t0={args.t0} steps={out.steps} "
                f"NFE={out.nfe}" + (f", LoRA loss {out.lora_losses[0]:.4f} -> {out.lora_losses[-1]:.4f}"
                                    if out.lora_losses else ""))
    return 0


def cmd_dragbench(args) -> int:
    from ..core.samplers import SamplingCancelled
    from ..io.imaging import save_image
    from .dragbench import SampleError, contact_row, find_samples, load_sample, stack_rows

    _lora_options(args)
    outdir = Path(args.output)
    found = find_samples(args.folder)
    if args.limit:
        found = found[: args.limit]
    if not found:
        raise CLIError(f"no sample folders in {args.folder} (expected <sample>/origin_image.png, mask.png, prompt.json)")
    failed: list[tuple[str, str]] = []
    good = []
    for name, folder in found:
        try:
            good.append(load_sample(name, folder))
        except SampleError as e:
            failed.append((name, str(e)))
            sys.stderr.write(f"sdedit: skipped {name}: {e}\n")
    if args.skip_existing:
        good = [s for s in good if not (outdir / f"{s.name}.png").exists()]
    summary = {name: {"status": "failed", "error": err} for name, err in failed}
    rows = []
    pipe = load_pipeline(args) if good else None
    outdir.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(good):
        info(args, f"[{k + 1}/{len(good)}] {s.name}: {len(s.pairs)} pair(s), prompt {s.prompt!r}")
        try:
            out = pipe.drag(s.image, s.pairs, s.mask, args.prompt if args.prompt is not None else s.prompt,
                            **_drag_kwargs(args))
            path = save_image(out.images, outdir / f"{s.name}.png")
            row = contact_row(s.image, out.pairs, out.images, s.mask, s.name)
            if args.sheet in ("each", "both"):
                row.save(outdir / f"{s.name}_sheet.png")
            if args.sheet in ("one", "both"):
                rows.append(_thumb(row, 3 * 256))
            summary[s.name] = {"status": "ok", "output": path.name, "pairs": len(out.pairs),
                               "iterations": out.iterations, "nfe": out.nfe}
            print(path)
        except SamplingCancelled:
            raise
        except (ValueError, OSError, RuntimeError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            failed.append((s.name, msg))
            summary[s.name] = {"status": "failed", "error": msg}
            sys.stderr.write(f"sdedit: failed {s.name}: {msg}\n")
    if rows:
        stack_rows(rows).save(outdir / "contact_sheet.png")
        print(outdir / "contact_sheet.png")
    (outdir / "summary.json").write_text(json.dumps(dict(sorted(summary.items())), indent=1) + "\n")
    n_ok = sum(1 for v in summary.values() if v["status"] == "ok")
    info(args, f"dragbench: {n_ok} ok, {len(failed)} failed of {len(found)} sample(s) -> {outdir}")
    if failed:
        names = ", ".join(f"{n} ({e})" for n, e in failed)
        raise CLIError(f"{len(failed)} of {len(found)} sample(s) failed: {names}; see {outdir / 'summary.json'}")
    return 0


def _thumb(img, max_width: int):
    if img.width <= max_width:
        return img
    h = max(1, round(img.height * max_width / img.width))
    return img.resize((max_width, h))


def cmd_inpaint(args) -> int:
    from ..io.imaging import load_image, load_mask, save_image

    check_writable_image(args.output)
    image = load_image(args.image)
    mask = load_mask(args.mask, size=tuple(image.shape[-2:]))
    pipe = load_pipeline(args)
    out = pipe.inpaint(image, mask, args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
                       mode=args.mode, guidance_scale=args.guidance_scale, seed=args.seed, mask_grow=args.mask_grow,
                       mask_blur=args.mask_blur, composite=not args.no_composite, output_type="pt",
                       progress=not args.quiet)
    save_image(out.images, args.output)
    print(args.output)
    info(args, f"inpaint-{args.mode}: steps={out.steps} NFE={out.nfe}")
    return 0


def cmd_diffedit(args) -> int:
    from ..io.imaging import load_image, load_mask, save_image

    check_writable_image(args.output)
    if args.save_mask:
        check_writable_image(args.save_mask)
    image = load_image(args.image)
    mask = load_mask(args.mask, size=tuple(image.shape[-2:])) if args.mask else None
    pipe = load_pipeline(args)
    out = pipe.diffedit(image, args.source_prompt, args.target_prompt, mask, negative_prompt=args.negative_prompt,
                        t0=args.t0, steps=args.steps, mode=args.mode, guidance_scale=args.guidance_scale, seed=args.seed,
                        mask_threshold=args.mask_threshold, composite=not args.no_composite, output_type="pt",
                        progress=not args.quiet)
    save_image(out.images, args.output)
    print(args.output)
    if args.save_mask:
        save_image(out.mask, args.save_mask)
        print(args.save_mask)
    info(args, f"diffedit-{args.mode}: t0={args.t0} steps={out.steps} NFE={out.nfe}, "
                f"mask {'given' if mask is not None else 'automatic'} ({float(out.mask.mean()):.0%} of the image)")
    return 0
