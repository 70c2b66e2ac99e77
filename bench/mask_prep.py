"""Full-resolution mask handling in the crop_to_mask path, without the model: what each step of
`nodes/editing.py` costs on a large image with a 512² mask, and the two bit-identical speed-ups proposed in
BENCHMARKS.md §3 (grow/feather only a window around the mask; separable grow).

    .venv/bin/python bench/mask_prep.py [--size 4096]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
from bench._common import RESULTS, machine, md_table, median, write_csv  # noqa: E402

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

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


def windowed_grow_feather(mask, grow, feather):
    x0, y0, x1, y1 = imaging.mask_bbox(mask)
    r = 2 * (grow + math.ceil(3 * feather / 2) + 2)
    h, w = mask.shape[-2:]
    X0, Y0, X1, Y1 = max(0, x0 - r), max(0, y0 - r), min(w, x1 + r), min(h, y1 + r)
    out = torch.zeros_like(mask)
    out[..., Y0:Y1, X0:X1] = imaging.feather_mask(imaging.grow_mask(mask[..., Y0:Y1, X0:X1], grow), feather)
    return out


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
    rows.append({"step": "imaging.grow_mask(mask, 8)", "seconds": t, "note": "17x17 max_pool2d, whole image"})
    t, sep = timed(lambda: separable_grow(m, 8))
    rows.append({"step": "separable grow (1x17 then 17x1)", "seconds": t, "note": f"bit-identical: {torch.equal(sep, grown)}"})
    t, full = timed(lambda: imaging.feather_mask(grown, 8.0))
    rows.append({"step": "imaging.feather_mask(grown, 8)", "seconds": t, "note": "whole image"})
    t_both, full = timed(lambda: imaging.feather_mask(imaging.grow_mask(m, 8), 8.0))
    rows.append({"step": "grow + feather, whole image", "seconds": t_both, "note": "what edit_images does"})
    t, win = timed(lambda: windowed_grow_feather(m, 8, 8.0))
    rows.append({"step": "grow + feather, window around the mask", "seconds": t, "note": f"bit-identical: {torch.equal(win, full)}"})
    t, res = timed(lambda: imaging.crop_to_mask(g, full, padding=64, multiple_of=8))
    rows.append({"step": "imaging.crop_to_mask(padding 64)", "seconds": t, "note": ""})
    ci, cm, box = res
    t, _ = timed(lambda: imaging.stitch(g, ci, box, cm))
    rows.append({"step": "imaging.stitch", "seconds": t, "note": ""})
    t, _ = timed(lambda: imaging.from_bhwc(imaging.to_bhwc(g)).contiguous())
    rows.append({"step": "BCHW -> BHWC -> BCHW", "seconds": t, "note": ""})
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
