"""Full-resolution mask handling without the model: what each step costs on a large image with a 512²
mask, the two bit-identical speed-ups of BENCHMARKS.md §3 (grow/feather only a window around the mask;
separable grow), and the whole pre-model framing of the diffusers pipeline before (whole-image grow and
feather, as `SDEditPipeline._prepare_mask` did) and now (`sdedit_engine.core.framing`, shared with the
ComfyUI nodes, windowed).

    .venv/bin/python bench/mask_prep.py [--size 4096]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._common import RESULTS, machine, md_table, median, write_csv  # noqa: E402
from sdedit_engine.core import framing  # noqa: E402
from sdedit_engine.io import imaging  # noqa: E402


def timed(fn, reps=3):
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return median(ts), out


def separable_grow(mask, pixels):
    k = 2 * pixels + 1
    x = F.max_pool2d(F.pad(mask, (k // 2, k // 2, 0, 0), mode="replicate"), (1, k), stride=1)
    return F.max_pool2d(F.pad(x, (0, 0, k // 2, k // 2), mode="replicate"), (k, 1), stride=1)


def pipeline_before(g, m, grow, feather, padding):
    """What SDEditPipeline.__call__ did before core.framing: whole-image grow + feather, crop, pad, max-pool."""
    pm = imaging.feather_mask(imaging.grow_mask(m, grow), feather)
    if padding is not None:
        g, pm, _ = imaging.crop_to_mask(g, pm, padding, 8)
    padded, _ = imaging.pad_to_multiple(g, 8)
    pm, _ = imaging.pad_to_multiple(pm, 8)
    return imaging.latent_mask(pm, (padded.shape[-2] // 8, padded.shape[-1] // 8), mode="max")


def pipeline_now(g, m, grow, feather, padding):
    fr = framing.frame(g, m, factor=8, grow=grow, feather=feather,
                       crop=framing.Crop(padding) if padding is not None else None)
    return fr.latent_mask_for((fr.padded.shape[-2] // 8, fr.padded.shape[-1] // 8))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    n = args.size
    g = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(1, 1, n, n)
    a = n // 2
    m[..., a:a + 512, a:a + 512] = 1
    rows = []
    t, _ = timed(lambda: bool(torch.isfinite(g).all()))
    rows.append({"step": "isfinite(guide)", "seconds": t, "note": ""})
    t, grown = timed(lambda: imaging.grow_mask(m, 8))
    rows.append({"step": "imaging.grow_mask(mask, 8)", "seconds": t, "note": "whole image (separable since the §3 fix)"})
    t, sep = timed(lambda: separable_grow(m, 8))
    rows.append({"step": "separable grow (1x17 then 17x1)", "seconds": t, "note": f"bit-identical: {torch.equal(sep, grown)}"})
    t, full = timed(lambda: imaging.feather_mask(grown, 8.0))
    rows.append({"step": "imaging.feather_mask(grown, 8)", "seconds": t, "note": "whole image"})
    t_both, full = timed(lambda: imaging.feather_mask(imaging.grow_mask(m, 8), 8.0))
    rows.append({"step": "grow + feather, whole image", "seconds": t_both, "note": "what edit_images did before the §3 fix"})
    t, win = timed(lambda: imaging.grow_and_feather(m, 8, 8.0))
    rows.append({"step": "grow + feather, window around the mask (masks.grow_and_feather)", "seconds": t,
                 "note": f"bit-identical: {torch.equal(win, full)}"})
    t, res = timed(lambda: imaging.crop_to_mask(g, full, padding=64, multiple_of=8))
    rows.append({"step": "imaging.crop_to_mask(padding 64)", "seconds": t, "note": ""})
    ci, cm, box = res
    t, _ = timed(lambda: imaging.stitch(g, ci, box, cm))
    rows.append({"step": "imaging.stitch", "seconds": t, "note": ""})
    t, _ = timed(lambda: imaging.from_bhwc(imaging.to_bhwc(g)).contiguous())
    rows.append({"step": "BCHW -> BHWC -> BCHW", "seconds": t, "note": ""})
    for label, padding in (("crop_padding 64", 64), ("no crop", None)):
        t, before = timed(lambda: pipeline_before(g, m, 8, 8.0, padding))  # noqa: B023 (runs now)
        rows.append({"step": f"pipeline framing before ({label}): whole-image grow + feather", "seconds": t, "note": ""})
        t, now = timed(lambda: pipeline_now(g, m, 8, 8.0, padding))  # noqa: B023 (runs now)
        rows.append({"step": f"pipeline framing now ({label}): core.framing, windowed", "seconds": t,
                     "note": f"same latent mask: {torch.equal(before, now)}"})
    out = _Path(args.out)
    write_csv(out / "mask_prep.csv", rows)
    (out / "mask_prep.md").write_text(f"# Mask handling at {n}² (no model)\n\nMachine: {machine()}\n\n"
                                      f"Command: `.venv/bin/python bench/mask_prep.py --size {n}`\n\n"
                                      f"Median of 3; a 512² mask, grow 8, feather 8, crop padding 64 (node defaults).\n\n"
                                      + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
