#!/usr/bin/env python
"""Draw the stroke paintings shipped in ``sdedit_engine/builtin/paintings/`` (64×64 PNGs).

What a person paints in a few seconds with a fat brush: flat colour bands for sky and water, a
disc for the sun, wobbly triangles for mountains — no shading, no reflections, no texture.
``edit_sun.png`` is a rendered landscape whose sun was "moved" with the brush (sky colour over the
old disc, a flat disc elsewhere) and ``edit_sun_mask.png`` the painted region, for masked editing. Deterministic; rerun to regenerate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdedit_engine.builtin.domain import render_batch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "sdedit_engine" / "builtin" / "paintings"
S = 64


def wobbly(points, rng, amount=1.2):
    return [(x + rng.uniform(-amount, amount), y + rng.uniform(-amount, amount)) for x, y in points]


def painting(sky, water, sun, sun_xy, r, ridges, horizon, shore=None, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (S, S), sky)
    d = ImageDraw.Draw(im)
    d.ellipse([sun_xy[0] - r, sun_xy[1] - r, sun_xy[0] + r, sun_xy[1] + r], fill=sun)
    for color, peaks in ridges:
        pts = [(0, horizon)] + [(x, y) for x, y in peaks] + [(S, horizon)]
        d.polygon(wobbly(pts, rng), fill=color)
    d.rectangle([0, horizon, S, S], fill=water)
    if shore is not None:
        color, top = shore
        d.polygon(wobbly([(0, S), (0, top + 2), (S * 0.4, top - 1), (S * 0.8, top + 1), (S, top - 2), (S, S)], rng), fill=color)
    return im


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    paintings = {
        "day": painting((90, 150, 225), (40, 95, 150), (255, 245, 200), (46, 14), 6,
                        [((120, 135, 170), [(10, 24), (22, 30), (34, 20), (52, 31)]),
                         ((45, 90, 55), [(6, 34), (18, 30), (30, 37), (44, 32), (60, 36)])], 40,
                        shore=((60, 95, 40), 56), seed=1),
        "sunset": painting((235, 140, 80), (80, 40, 70), (255, 235, 140), (18, 16), 7,
                           [((120, 60, 100), [(8, 30), (28, 18), (46, 28), (58, 24)]),
                            ((40, 20, 45), [(14, 36), (36, 31), (52, 37)])], 42, seed=2),
        "night": painting((15, 25, 60), (10, 15, 35), (235, 235, 215), (40, 12), 5,
                          [((35, 40, 70), [(4, 28), (20, 22), (36, 30), (56, 26)])], 38,
                          shore=((25, 22, 20), 58), seed=3),
    }
    for name, im in paintings.items():
        im.save(OUT / f"{name}.png", optimize=True)
    # masked editing: "move the sun" by painting — sky colour over the old disc, a flat disc elsewhere
    x, infos = render_batch(1, seed=424242)
    info = infos[0]
    base = Image.fromarray((x[0].transpose(1, 2, 0) * 255).round().astype(np.uint8))
    ox, oy = info.sun_center
    r = info.sun_radius
    nx = ox - 24 if ox > 32 else ox + 24
    sky = tuple(int(v) for v in np.asarray(base)[int(oy), int(max(ox - r - 4, 1))])
    sun = tuple(int(round(v * 255)) for v in info.sun_color)
    d = ImageDraw.Draw(base)
    d.ellipse([ox - r - 2, oy - r - 2, ox + r + 2, oy + r + 2], fill=sky)
    d.ellipse([nx - r, oy - r, nx + r, oy + r], fill=sun)
    base.save(OUT / "edit_sun.png", optimize=True)
    mask = Image.new("L", (S, S), 0)
    md = ImageDraw.Draw(mask)
    for cx in (ox, nx):
        md.ellipse([cx - r - 4, oy - r - 4, cx + r + 4, oy + r + 4], fill=255)
    mask.save(OUT / "edit_sun_mask.png", optimize=True)
    print("wrote", sorted(p.name for p in OUT.iterdir()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
