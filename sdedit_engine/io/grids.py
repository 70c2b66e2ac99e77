"""Labelled image grids (t0 sweeps, drag contact sheets): layout that never lets labels overlap.

Each cell is a label band above its image. A label is wrapped at spaces to the width of the widest
image; a word wider than that widens every cell to fit it, and the band is as tall as the longest
wrapped label. So for every cell ``i`` the text box lies inside ``[x_i, x_i + w)`` with ``w`` the
cell width, columns are separated by at least ``LABEL_GUTTER`` white pixels, and no label box meets another label or
an image, at any image size (before, a 16-64 px image had labels of 40-120 px running into the
next cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

LABEL_GUTTER = 8  # px between the columns of a labelled grid
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass
class Cell:
    image_box: Box
    label_box: Box  # the text's own extent (empty label: zero width)
    lines: list[str]


@dataclass
class GridLayout:
    size: tuple[int, int]  # width, height of the whole grid
    cells: list[Cell]
    line_height: int


def _font():
    return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    if not text:
        return 0
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
    return int(x1 - min(x0, 0))


def _wrap(draw, text: str, width: int, font) -> list[str]:
    """Greedy word wrap of ``text`` (explicit newlines kept) to ``width`` pixels."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split(" "):
            cand = f"{line} {word}" if line else word
            if line and _text_width(draw, cand, font) > width:
                lines.append(line)
                line = word
            else:
                line = cand
        lines.append(line)
    return lines if any(lines) else []


def grid_layout(sizes: Sequence[tuple[int, int]], labels: Sequence[str], columns: int, label_height: int = 14,
                pad: int = 2, font=None) -> GridLayout:
    """Positions of images (``sizes`` = (width, height) each) and their wrapped labels."""
    font = font or _font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, top, _, bottom = draw.textbbox((0, 0), "Ag|", font=font)
    line_h = int(bottom - min(top, 0)) + 2
    words = [w for lab in labels for w in str(lab).replace("\n", " ").split(" ")]
    width = max([w for w, _ in sizes] + [_text_width(draw, w, font) for w in words])
    wrapped = [_wrap(draw, lab, width, font) for lab in labels]
    band = max([label_height] + [len(ls) * line_h + 2 for ls in wrapped])
    gutter = max(pad, LABEL_GUTTER) if any(wrapped) else pad  # text needs more air than images
    cw, ch = width + gutter, max(h for _, h in sizes) + band + pad
    rows = -(-len(sizes) // columns)
    cells = []
    for i, ((w, h), lines) in enumerate(zip(sizes, wrapped)):
        x, y = pad + (i % columns) * cw, pad + (i // columns) * ch
        text_w = max([_text_width(draw, ln, font) for ln in lines] + [0])
        cells.append(Cell((x, y + band, x + w, y + band + h), (x, y, x + text_w, y + len(lines) * line_h), lines))
    return GridLayout((columns * cw - gutter + 2 * pad, rows * ch + pad), cells, line_h)


def labelled_grid(images: Sequence, labels: Sequence[str] | None = None, columns: int | None = None,
                  label_height: int = 14, pad: int = 2) -> Image.Image:
    """Images (tensors ``(B,C,H,W)`` or PIL) in a grid, each with its label above it, as one PIL RGB image."""
    from .imaging import ImageError, to_pil

    pils: list[Image.Image] = []
    for im in images:
        pils.extend(to_pil(im) if isinstance(im, torch.Tensor) else [im.convert("RGB")])
    if not pils:
        raise ImageError("labelled_grid needs at least one image")
    labels = [str(s) for s in labels] if labels is not None else [""] * len(pils)
    if len(labels) != len(pils):
        raise ImageError(f"{len(labels)} labels for {len(pils)} images")
    font = _font()
    layout = grid_layout([p.size for p in pils], labels, columns or len(pils), label_height, pad, font)
    grid = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(grid)
    for p, cell in zip(pils, layout.cells):
        x, y = cell.label_box[:2]
        for k, line in enumerate(cell.lines):
            draw.text((x, y + k * layout.line_height), line, fill="black", font=font)
        grid.paste(p, cell.image_box[:2])
    return grid
