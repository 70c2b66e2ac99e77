"""DragBench (the SDE-Drag paper's 100-image benchmark) folder layout: loading, checking, drawing.

Each sample is a folder holding ``origin_image.png`` (RGB), ``mask.png`` (L, 255 = editable; all-255
when there is no mask) and ``prompt.json`` = ``{"source": [[x, y], …], "target": [[x, y], …],
"prompt": "…"}`` in pixels (x = column). Samples may sit directly in the root or one level of
category folders deeper (any depth is walked). :func:`load_sample` raises :class:`SampleError` with
a one-line reason for a broken sample, so a runner can skip and report it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, ImageDraw

from ..core.drag import DragPair, parse_points
from ..io import imaging

IMAGE_FILE, MASK_FILE, PROMPT_FILE = "origin_image.png", "mask.png", "prompt.json"


class SampleError(ValueError):
    """A broken DragBench sample (missing file, bad JSON, bad points, size mismatch)."""


@dataclass
class Sample:
    name: str  # output name: the sample folder's path under the root, '/' → '_'
    folder: Path
    image: torch.Tensor  # (1,3,H,W) in [0,1]
    mask: Optional[torch.Tensor]  # (1,1,H,W), 1 = editable; None when the mask is all-editable or absent
    pairs: list[DragPair]
    prompt: str


def find_samples(root) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every sample folder under ``root``, sorted by path.

    A sample folder is one that holds any of the three DragBench files, or a leaf folder (no
    subfolders; reported later as missing its files). Other folders are walked into."""
    root = Path(root)
    if not root.is_dir():
        raise SampleError(f"DragBench folder not found: {root}")
    found = []

    def walk(d: Path) -> None:
        subdirs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        has_files = any((d / f).exists() for f in (IMAGE_FILE, MASK_FILE, PROMPT_FILE))
        if d != root and (has_files or not subdirs):
            found.append(("_".join(d.relative_to(root).parts), d))
            return
        for s in subdirs:
            walk(s)

    walk(root)
    return found


def load_sample(name: str, folder: Path) -> Sample:
    """Read and check one sample; :class:`SampleError` names what is wrong."""
    missing = [f for f in (IMAGE_FILE, PROMPT_FILE) if not (folder / f).is_file()]
    if missing:
        raise SampleError(f"missing {' and '.join(missing)}")
    try:
        image = imaging.load_image(folder / IMAGE_FILE)
    except imaging.ImageError as e:
        raise SampleError(f"{IMAGE_FILE}: {_short(e)}") from None
    h, w = image.shape[-2:]
    try:
        spec = json.loads((folder / PROMPT_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SampleError(f"{PROMPT_FILE} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SampleError(f"cannot read {PROMPT_FILE}: {_short(e)}") from None
    if not isinstance(spec, dict):
        raise SampleError(f'{PROMPT_FILE} must be an object {{"source": …, "target": …, "prompt": …}}')
    prompt = spec.get("prompt", "")
    if not isinstance(prompt, str):
        raise SampleError(f'{PROMPT_FILE}: "prompt" must be a string, got {type(prompt).__name__}')
    try:
        pairs = parse_points({k: spec.get(k) for k in ("source", "target") if k in spec}, w, h)
    except ValueError as e:
        raise SampleError(f"{PROMPT_FILE}: {_short(e)}") from None
    mask = None
    if (folder / MASK_FILE).is_file():
        try:
            mask = imaging.load_mask(folder / MASK_FILE, size=(h, w))
        except imaging.ImageError as e:
            raise SampleError(f"{MASK_FILE}: {_short(e)}") from None
        mask = (mask > 128 / 255).float()  # the paper: values > 128 are editable
        if not bool(mask.any()):
            raise SampleError(f"{MASK_FILE} is all black: nothing may change")
        if bool(mask.all()):
            mask = None
    return Sample(name, folder, image, mask, pairs, prompt)


def _short(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# --------------------------------------------------------------------------- drawing
def draw_points(image: torch.Tensor, pairs: list[DragPair], mask: Optional[torch.Tensor] = None) -> Image.Image:
    """The image with each drag drawn as an arrow (red source dot → blue target dot); the area
    outside ``mask`` is dimmed."""
    base = imaging.to_pil(image[:1])[0]
    if mask is not None:
        dim = imaging.to_pil((image[:1] * (0.45 + 0.55 * mask[:1])).clamp(0, 1))[0]
        base = dim
    draw = ImageDraw.Draw(base)
    scale = max(1, min(base.size) // 128)
    r, width = 2 * scale, max(1, scale)
    for p in pairs:
        (sx, sy), (tx, ty) = p.source, p.target
        draw.line([(sx, sy), (tx, ty)], fill=(255, 255, 255), width=width)
        _arrow_head(draw, (sx, sy), (tx, ty), 4 * scale)
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(230, 30, 30))
        draw.ellipse([tx - r, ty - r, tx + r, ty + r], fill=(30, 80, 240))
    return base


def _arrow_head(draw: ImageDraw.ImageDraw, src, tgt, size: float) -> None:
    import math

    dx, dy = tgt[0] - src[0], tgt[1] - src[1]
    n = math.hypot(dx, dy)
    if n == 0:
        return
    ux, uy = dx / n, dy / n
    bx, by = tgt[0] - ux * size, tgt[1] - uy * size
    draw.polygon([tgt, (bx - uy * size / 2, by + ux * size / 2), (bx + uy * size / 2, by - ux * size / 2)],
                 fill=(255, 255, 255))


def contact_row(original: torch.Tensor, pairs: list[DragPair], result: torch.Tensor,
                mask: Optional[torch.Tensor] = None, title: str = "") -> Image.Image:
    """original | points drawn | result, side by side, labelled."""
    lab = f"{title}: " if title else ""
    return imaging.labelled_grid([imaging.to_pil(original[:1])[0], draw_points(original, pairs, mask),
                                  imaging.to_pil(result[:1])[0]],
                                 [f"{lab}original", "points", "result"], columns=3)


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    """Rows (PIL) stacked vertically on white, left-aligned."""
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet
