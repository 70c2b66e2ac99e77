"""Tests of sdedit_engine.io.imaging: conversions, files, mask ops, exact compositing, crops, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.io import imaging as im


def _img(h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


def test_conversions_roundtrip_uint8_exact():
    arr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for src in (arr, Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1)):
        t = im.to_tensor(src)
        assert t.shape == (1, 3, 20, 24) and t.dtype == torch.float32
        assert np.array_equal(im.to_uint8(t)[0], arr)
        assert np.array_equal(np.asarray(im.to_pil(t)[0]), arr)
    gray = im.to_tensor(Image.fromarray(arr[..., 0]))
    assert gray.shape == (1, 3, 20, 24)
    bhwc = torch.rand(2, 5, 6, 3)
    assert torch.equal(im.to_bhwc(im.from_bhwc(bhwc)), bhwc)


def test_mask_to_tensor_shapes_and_range():
    assert im.mask_to_tensor(np.ones((4, 5), dtype=np.uint8) * 255).shape == (1, 1, 4, 5)
    m = im.mask_to_tensor(torch.full((2, 4, 5), 1.004))  # float rounding above 1 is clamped
    assert m.shape == (2, 1, 4, 5) and float(m.max()) == 1.0
    with pytest.raises(im.ImageError):
        im.mask_to_tensor(torch.zeros(1, 3, 4, 5))


def test_load_save_and_errors_name_the_path(tmp_path):
    x = _img()
    p = im.save_image(x, tmp_path / "sub" / "a.png")
    y = im.load_image(p)
    assert y.shape == x.shape and float((y - x).abs().max()) <= 0.5 / 255 + 1e-6
    with pytest.raises(im.ImageError, match="not found: .*missing.png"):
        im.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(im.ImageError, match="cannot read image .*bad.png"):
        im.load_image(bad)
    Image.new("L", (10, 10), 255).save(tmp_path / "m.png")
    with pytest.raises(im.ImageError, match="m.png is 10x10 but the image is 48x32"):
        im.load_mask(tmp_path / "m.png", size=(32, 48))
    assert float(im.load_mask(tmp_path / "m.png").min()) == 1.0


def test_load_mask_uses_inverted_alpha(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0  # transparent top half = edit
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    m = im.load_mask(tmp_path / "a.png")
    assert float(m[..., :4, :].min()) == 1.0 and float(m[..., 4:, :].max()) == 0.0


def test_grow_and_feather():
    m = torch.zeros(1, 1, 21, 21)
    m[..., 10, 10] = 1
    g = im.grow_mask(m, 3)
    assert int(g.sum()) == 49 and im.mask_bbox(g) == (7, 7, 14, 14)
    assert torch.equal(im.grow_mask(g, -3), m)
    big = torch.zeros(1, 1, 40, 40)
    big[..., 10:30, 10:30] = 1
    f = im.feather_mask(big, 4)
    assert f.shape == big.shape
    assert float(f[..., 20, 20]) == 1.0 and float(f[..., 0, 0]) == 0.0  # far pixels keep exact 0/1
    edge = f[0, 0, 20, 6:14]
    assert bool((edge[1:] >= edge[:-1]).all()) and 0 < float(f[0, 0, 20, 10]) < 1


def test_composite_unmasked_pixels_bit_identical():
    orig, res = _img(seed=1), _img(seed=2)
    block = torch.zeros(1, 1, 32, 48)
    block[..., 8:24, 10:30] = 1
    m = im.feather_mask(block, 3)
    out = im.composite(res, orig, m)
    keep, edit = (m == 0).expand_as(orig), (m == 1).expand_as(orig)
    assert keep.any() and edit.any()
    assert torch.equal(out[keep], orig[keep]) and torch.equal(out[edit], res[edit])
    soft = ((m > 0) & (m < 1)).expand_as(orig)
    assert torch.allclose(out[soft], (orig * (1 - m) + res * m)[soft])
    with pytest.raises(im.ImageError, match="mask is"):
        im.composite(res, orig, torch.zeros(1, 1, 8, 8))


def test_crop_to_mask_and_stitch():
    x = _img(64, 80)
    m = torch.zeros(1, 1, 64, 80)
    m[..., 20:30, 50:61] = 1
    assert im.mask_bbox(m) == (50, 20, 61, 30)
    crop, mcrop, box = im.crop_to_mask(x, m, padding=4, multiple_of=8)
    x0, y0, x1, y1 = box
    assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
    assert x0 <= 46 and x1 >= 65 and y0 <= 16 and y1 >= 34 and x1 <= 80 and y1 <= 64
    assert torch.equal(crop, x[..., y0:y1, x0:x1]) and float(mcrop.sum()) == float(m.sum())
    out = im.stitch(x, torch.zeros_like(crop), box, mcrop)
    assert torch.equal(out[(m == 0).expand_as(x)], x[(m == 0).expand_as(x)])
    assert float(out[(m == 1).expand_as(x)].abs().max()) == 0.0
    # mask touching the border: box is shifted inside the image
    m2 = torch.zeros(1, 1, 64, 80)
    m2[..., 60:, 75:] = 1
    _, _, b2 = im.crop_to_mask(x, m2, padding=8, multiple_of=16)
    assert b2[2] == 80 and b2[3] == 64 and (b2[2] - b2[0]) % 16 == 0


def test_paste_patch_builds_guide_and_mask():
    base, patch = _img(32, 32, 1), _img(8, 12, 2)
    guide, mask = im.paste_patch(base, patch, None, x=5, y=10)
    assert torch.equal(guide[..., 10:18, 5:17], patch)
    assert float(mask.sum()) == 96 and im.mask_bbox(mask) == (5, 10, 17, 18)
    outside = (mask == 0).expand_as(base)
    assert torch.equal(guide[outside], base[outside])
    with pytest.raises(im.ImageError, match="does not fit"):
        im.paste_patch(base, patch, None, x=25, y=0)


def test_sizes_helpers():
    x = _img(30, 45)
    p, size = im.pad_to_multiple(x, 8)
    assert p.shape[-2:] == (32, 48) and torch.equal(im.unpad(p, size), x)
    assert im.resize_to_multiple(x, 8).shape[-2:] == (32, 48)
    assert im.resize_to_multiple(_img(300, 200), 8, max_side=128).shape[-2:] == (128, 88)
    lm = im.latent_mask(torch.ones(1, 1, 32, 48), (4, 6))
    assert lm.shape == (1, 1, 4, 6) and float(lm.min()) == 1.0


def test_labelled_grid_and_l2(tmp_path):
    ims = [_img(16, 16, i) for i in range(5)]
    g = im.labelled_grid(ims, [f"t0={i/10}" for i in range(5)], columns=3)
    assert g.size[0] >= 3 * 18 + 2 and g.size[1] >= 2 * (16 + 14 + 2) + 2  # cells widen to fit "t0=0.1"
    with pytest.raises(im.ImageError):
        im.labelled_grid(ims, ["a"])
    d = im.faithfulness_l2(ims[0], ims[0] + 0.1)
    assert torch.allclose(d, torch.tensor([0.1 * (3 * 16 * 16) ** 0.5]), rtol=1e-4)
