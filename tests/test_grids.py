"""Labelled grids and the dragbench contact sheet: labels never overlap each other or the images,
at any image size (sdedit_engine.io.grids)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sdedit_engine.cli.dragbench import contact_row
from sdedit_engine.core.drag import DragPair
from sdedit_engine.io import grids


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _black_pixels_outside_labels(sheet, layout) -> int:
    dark = (np.asarray(sheet).astype(int).sum(-1) < 60)
    inside = np.zeros_like(dark)
    for c in layout.cells:
        x0, y0, x1, y1 = c.label_box
        inside[y0:y1, x0:x1 + 1] = True  # +1: antialiasing of the last glyph
    return int((dark & ~inside).sum())


@pytest.mark.parametrize("size", [16, 32, 64, 256])
def test_dragbench_contact_row_labels_do_not_overlap_at_any_size(size):
    grey = torch.full((1, 3, size, size), 0.6)  # no black pixels of its own: every black pixel is text
    pairs = [DragPair((size // 4, size // 2), (3 * size // 4, size // 2))]
    title = "animals/cat_with_a_long_name_001"
    sheet = contact_row(grey, pairs, grey, title=title)
    labels = [f"{title}: original", "points", "result"]
    layout = grids.grid_layout([(size, size)] * 3, labels, columns=3)
    assert sheet.size == layout.size
    boxes = [c.label_box for c in layout.cells] + [c.image_box for c in layout.cells]
    for a, b in itertools.combinations(boxes, 2):
        assert not _intersect(a, b), (a, b)
    for c in layout.cells:  # each label stays in its own cell column
        assert c.label_box[2] <= c.image_box[0] + (layout.size[0] - 4) // 3
    assert _black_pixels_outside_labels(sheet, layout) == 0
    # the pad column between cells is white in the label band: no text runs from one cell into the next
    arr = np.asarray(sheet)
    for left, right in zip(layout.cells, layout.cells[1:]):
        gap = arr[left.label_box[1]:left.label_box[3], left.image_box[0] + (right.image_box[0] - left.image_box[0]) - grids.LABEL_GUTTER:right.image_box[0]]
        assert (gap > 200).all() and gap.shape[1] >= grids.LABEL_GUTTER
    assert all(c.lines for c in layout.cells)  # every label is drawn


def test_sweep_grid_keeps_small_images_compact_and_wraps_long_labels():
    labels = [f"t0={t:.2f} L2={t * 40:.2f}" for t in (0.2, 0.3, 0.4, 0.5)]
    layout = grids.grid_layout([(64, 64)] * 4, labels, columns=4)
    assert all(len(c.lines) == 2 for c in layout.cells)  # "t0=0.20" / "L2=8.00" on two lines
    lefts = [c.image_box[0] for c in layout.cells]
    assert np.diff(lefts).tolist() == [64 + grids.LABEL_GUTTER] * 3  # the words fit a 64 px image: no widening
    for a, b in itertools.combinations([c.label_box for c in layout.cells], 2):
        assert not _intersect(a, b)
