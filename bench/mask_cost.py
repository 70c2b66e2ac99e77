"""Cost follows the mask: a masked edit of a 512² region in images of 1024², 2048², 4096² with `crop_to_mask`
vs a plain 512² edit (no mask) and vs the full-image path — the in-process `SDEdit.execute` node with the tiny
SD1.5 checkpoint (ComfyUI imported in this process, CPU).

The crop runs are interleaved with the plain 512² edit round by round (plain, crop 1024², crop 2048²,
crop 4096², then reversed); ratio = median of per-round ratios to the plain run of the same round. The tiny
checkpoint's UNet has SD1.5's width (320 channels, attention at the latent resolution), so a model call at
512² costs seconds on a CPU: the default is 2 steps (the ratio then *over*-weights the per-image overhead:
with 20 steps the model share grows and the ratio moves toward 1). The full-image path is measured once
at 1024² with 1 step by default (per-call cost), and 2048²/4096² are extrapolated from it by the latent
area (a lower bound: attention grows with its square) — labelled as extrapolated.

    .venv/bin/python bench/mask_cost.py [--steps 2] [--rounds 2] [--full-sizes 1024] [--quick]
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

from tests.comfy import harness  # noqa: E402

REGION = 512


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048,4096")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full-sizes", default="1024", help="image sizes for the full-image path ('' to skip)")
    ap.add_argument("--full-steps", type=int, default=1)
    ap.add_argument("--ckpt", help="checkpoint file (default: tiny SD1.5 fixture)")
    ap.add_argument("--comfy-dir")
    ap.add_argument("--quick", action="store_true", help="1 round, sizes 1024,4096, no full-image run")
    ap.add_argument("--profile", action="store_true", help="cProfile the 4096² crop run")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="mask_cost", help="result file stem under --out")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.sizes, args.full_sizes = 1, "1024,4096", ""
    sizes = [int(s) for s in args.sizes.split(",")]

    harness.add_comfyui_to_sys_path(args.comfy_dir)
    harness.import_pack()
    import comfy.sd
    from comfyui_sdedit.nodes import sdedit_nodes

    if args.ckpt:
        ckpt = args.ckpt
    else:
        from tests.fixtures import tiny_sd15

        ckpt = str(tiny_sd15.checkpoint_path())
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))

    def image(n):
        return torch.rand((1, n, n, 3), generator=torch.Generator().manual_seed(n))

    def box_mask(n):
        m = torch.zeros(1, n, n)
        a = (n - REGION) // 2 + (n // 8 if n > REGION else 0)  # off-centre 512² square
        a = min(a, n - REGION)
        m[:, a:a + REGION, a:a + REGION] = 1.0
        return m

    imgs = {n: image(n) for n in set(sizes) | {REGION}}
    masks = {n: box_mask(n) for n in sizes}

    def run(kind, n, steps):
        kw = dict(t0=0.5, steps=steps, cfg=4.0, sampler="ddpm", repeats=1, seed=0)
        t = time.perf_counter()
        if kind == "plain":
            sdedit_nodes.SDEdit.execute(model, pos, neg, vae, imgs[REGION], **kw)
        elif kind == "crop":  # node defaults: grow 8, feather 8, padding 64, working resolution 512
            sdedit_nodes.SDEdit.execute(model, pos, neg, vae, imgs[n], mask=masks[n], crop_to_mask=True,
                                        crop_resolution=REGION, **kw)
        else:
            im = imgs.get(n) if n in imgs else image(n)
            mk = masks.get(n) if n in masks else box_mask(n)
            sdedit_nodes.SDEdit.execute(model, pos, neg, vae, im, mask=mk, crop_to_mask=False, **kw)
        return time.perf_counter() - t

    run("plain", REGION, 1)  # warm-up
    plain, crop = [], {n: [] for n in sizes}
    for r in range(args.rounds):
        order = [("plain", REGION)] + [("crop", n) for n in sizes]
        if r % 2:
            order = order[::-1]
        got = {}
        for kind, n in order:
            got[(kind, n)] = run(kind, n, args.steps)
            log(f"round {r} {kind} {n}²: {got[(kind, n)]:.2f} s")
        plain.append(got[("plain", REGION)])
        for n in sizes:
            crop[n].append(got[("crop", n)] / got[("plain", REGION)])
    rows = [{"image": f"{REGION}²", "path": "plain (no mask)", "steps": args.steps, "seconds": median(plain),
             "ratio_to_plain_512": 1.0, "note": "measured"}]
    for n in sizes:
        rows.append({"image": f"{n}²", "path": "crop_to_mask", "steps": args.steps,
                     "seconds": median(crop[n]) * median(plain), "ratio_to_plain_512": median(crop[n]),
                     "note": f"measured, median of {args.rounds} rounds"})
    per_call_full = None
    for n in [int(s) for s in args.full_sizes.split(",") if s]:
        t1 = run("full", n, args.full_steps)
        tp = run("plain", REGION, args.full_steps)
        rows.append({"image": f"{n}²", "path": "full image (masked)", "steps": args.full_steps, "seconds": t1,
                     "ratio_to_plain_512": t1 / tp, "note": f"measured vs plain 512² at {args.full_steps} step(s) ({tp:.1f} s)"})
        per_call_full = (n, t1, tp)
    if per_call_full:
        n0, t1, tp = per_call_full
        for n in sizes:
            if n > n0:
                est = t1 * (n / n0) ** 2
                rows.append({"image": f"{n}²", "path": "full image (masked)", "steps": args.full_steps, "seconds": est,
                             "ratio_to_plain_512": est / tp,
                             "note": f"EXTRAPOLATED from {n0}² by area (lower bound)"})
    prof = ""
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        run("crop", max(sizes), args.steps)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40)
        prof = "\n\n## Profile: crop_to_mask at " + f"{max(sizes)}²\n\n```\n" + s.getvalue().strip() + "\n```\n"
    out = Path(args.out)
    write_csv(out / f"{args.name}.csv", rows)
    cmd = ".venv/bin/python bench/mask_cost.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    body = (f"Node `SDEdit` in-process, tiny SD1.5 checkpoint, ddpm, cfg 4, t0 0.5; mask = a {REGION}² square, "
            f"grow 8 / feather 8 / crop padding 64 (node defaults) → a 640² box worked at 512².\n\n" + md_table(rows) + prof)
    (out / f"{args.name}.md").write_text(f"# Cost follows the mask\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n{body}\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
