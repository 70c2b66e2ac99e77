"""Tests of the paper's stroke simulation (median filter + adaptive flat palette)."""

from __future__ import annotations

import torch

from sdedit_engine.io.strokes import count_colors, median_kernel_for, simulate_strokes


def _photo(h=64, w=64):
    # smooth gradients plus fine texture: a "photo" with thousands of colours
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    tex = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 0.2
    img = torch.stack([xx, yy, (xx + yy) / 2]) * 0.8 + tex
    return img.clamp(0, 1)[None]


def test_strokes_are_flat_colours():
    x = _photo()
    assert count_colors(x) > 1000
    s = simulate_strokes(x, colors=6)
    assert s.shape == x.shape and s.dtype == torch.float32
    assert 2 <= count_colors(s) <= 6
    # flat: most pixels equal their right neighbour (large uniform regions)
    same = (s[..., :, 1:] == s[..., :, :-1]).all(dim=1).float().mean()
    assert float(same) > 0.9
    # still a faithful coarse version of the photo
    assert float((s - x).abs().mean()) < 0.15


def test_strokes_batch_and_kernel_scaling():
    x = torch.cat([_photo(), 1 - _photo()])
    s = simulate_strokes(x, colors=3)
    assert s.shape == x.shape and all(count_colors(s[i:i + 1]) <= 3 for i in range(2))
    assert median_kernel_for(256, 256) == 23 and median_kernel_for(512, 768) == 47
    assert median_kernel_for(64, 64) % 2 == 1
