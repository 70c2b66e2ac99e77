"""The one pixel ↔ latent framing (sdedit_engine.core.framing): the latent-mask rule, the padding rule,
the windowed grow/feather, crops (native and resized) and the exact composite-back. The VAE is the
reference 8×8 average-pool encoder / nearest decoder (what tests/fixtures/tiny_sd15.py's VAE computes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdedit_engine.core import framing, masks


def encode(px):  # (B, 3, H, W) → (B, 3, H/8, W/8)
    return F.avg_pool2d(px * 2 - 1, 8)


def decode(z):
    return (F.interpolate(z, scale_factor=8, mode="nearest") + 1) / 2


def _img(h=64, w=64, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_thin_stroke_between_bilinear_sample_rows_edits_its_cell():
    """Issue 14 item 2: a 2-px stroke on rows 8i+5, 8i+6 is invisible to ComfyUI's bilinear resize
    (it samples rows 8i+3 and 8i+4) — the max rule edits its cells."""
    m = torch.zeros(1, 1, 64, 64)
    m[..., 21:23, 8:40] = 1  # rows 21, 22 = 8·2 + 5, 8·2 + 6
    bilinear = F.interpolate(m, size=(8, 8), mode="bilinear")
    assert float(bilinear.max()) == 0.0  # the old SDEdit-node rule drops the stroke
    assert not bool((F.interpolate(m, size=(8, 8), mode="area") > 0.5).any())  # the old drag/DiffEdit rule too
    fr = framing.frame(_img(), m, factor=8, encode=encode)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 2, 1:5] = 1
    assert torch.equal(fr.latent_mask, expected)


def test_every_painted_pixel_edits_its_cell_and_soft_values_take_the_cell_maximum():
    g = torch.Generator().manual_seed(3)
    m = (torch.rand(1, 1, 61, 75, generator=g) > 0.995).float() * torch.rand(1, 1, 61, 75, generator=g)
    fr = framing.frame(_img(61, 75), m, factor=8, encode=encode)
    lm = fr.latent_mask
    assert lm.shape == (1, 1, 8, 10)
    for y, x in torch.nonzero(m[0, 0] > 0).tolist():
        assert float(lm[0, 0, y // 8, x // 8]) == float(m[0, 0, y // 8 * 8:(y // 8 + 1) * 8, x // 8 * 8:(x // 8 + 1) * 8].max())
    assert int((lm > 0).sum()) == len({(y // 8, x // 8) for y, x in torch.nonzero(m[0, 0] > 0).tolist()})


def test_padding_rule_replicates_and_pad_pixels_decide_nothing():
    """Replicate padding (it won over the zero padding of the drag/DiffEdit/node copies): under the max
    rule a border cell's value is that of its real pixels, whatever the padding."""
    img = _img(60, 67)
    m = torch.zeros(1, 1, 60, 67)
    m[..., 59, 30:34] = 0.6  # last row: its cell is half padding
    m[..., 10:12, 66] = 1.0  # last column
    fr = framing.frame(img, m, factor=8, encode=encode)
    assert fr.padded.shape[-2:] == (64, 72) and fr.size == (60, 67)
    assert torch.equal(fr.padded[..., 60:, :67], img[..., 59:60, :].expand(-1, -1, 4, -1))  # edge rows repeated
    zero_padded = masks.latent_mask(F.pad(m, (0, 5, 0, 4)), (8, 9), "max")
    assert torch.equal(fr.latent_mask, zero_padded)
    assert float(fr.latent_mask[0, 0, 7, 3]) == pytest.approx(0.6) and float(fr.latent_mask[0, 0, 1, 8]) == 1.0


@pytest.mark.parametrize("grow, feather", [(0, 0.0), (8, 8.0), (20, 3.0), (-3, 2.0), (5, 0.0)])
def test_windowed_grow_and_feather_equals_the_whole_image(grow, feather):
    m = torch.zeros(1, 1, 300, 400)
    m[..., 100:140, 250:330] = 1.0
    m[..., 120:125, 200:210] = 0.4
    m[..., 290:, 390:] = 1.0  # touching the border
    full = masks.feather_mask(masks.grow_mask(m, grow), feather)
    win = masks.grow_and_feather(m, grow, feather)
    assert torch.equal(win == 0, full == 0) and torch.equal(win == 1, full == 1)
    assert float((win - full).abs().max()) < 1e-6


def test_a_mask_feathered_away_is_refused_not_dropped():
    m = torch.zeros(1, 1, 64, 64)
    m[..., 30, 30] = 1
    with pytest.raises(ValueError, match="mask_feather: .*leaves no editable pixel"):
        framing.frame(_img(), m, factor=8, feather=128, name="mask_feather")
    assert bool((framing.frame(_img(), m, factor=8, feather=4).mask > 0).any())
    assert framing.frame(_img(), torch.zeros(1, 1, 64, 64), factor=8, feather=4).mask.sum() == 0  # empty stays empty


def test_finish_keeps_unmasked_pixels_bit_for_bit_and_stitches_crops():
    img = _img(96, 128)
    m = torch.zeros(1, 1, 96, 128)
    m[..., 40:52, 70:90] = 1
    for crop in (None, framing.Crop(8), framing.Crop(8, 64), framing.Crop(0, 200)):
        fr = framing.frame(img, m, factor=8, encode=encode, grow=2, feather=2.0, crop=crop)
        edited = fr.latent + 0.5  # any edit
        out = framing.finish(fr, decode(edited))
        keep = (fr.mask == 0).expand_as(img)
        assert out.shape == img.shape and torch.equal(out[keep], img[keep])
        raw = framing.finish(fr, decode(edited), composite=False)
        edit = (fr.mask == 1).expand_as(img)
        assert edit.any() and torch.equal(out[edit], raw[edit]) and not torch.equal(raw[edit], img[edit])
        if fr.box is not None:
            x0, y0, x1, y1 = fr.box
            outside = torch.ones_like(img, dtype=torch.bool)
            outside[..., y0:y1, x0:x1] = False
            assert torch.equal(raw[outside], img[outside])  # the crop's outside is never touched


def test_resized_crop_keeps_a_one_pixel_dot():
    img = _img(512, 512)
    m = torch.zeros(1, 1, 512, 512)
    m[..., 301, 203] = 1.0
    m[..., 100:102, 100:102] = 1.0
    fr = framing.frame(img, m, factor=8, encode=encode, crop=framing.Crop(0, 64))
    x0, y0, x1, y1 = fr.box
    assert fr.resized and max(fr.size) == 64 and (y1 - y0) > 3 * fr.size[0]  # shrunk more than 3x
    r, c = (301 - y0) * fr.size[0] // (y1 - y0) // 8, (203 - x0) * fr.size[1] // (x1 - x0) // 8
    lm = fr.latent_mask[0, 0]
    assert float(lm[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].max()) == 1.0 and float(lm[0, 0]) == 1.0
    assert float(F.interpolate(fr.region_mask, size=fr.size, mode="bilinear", antialias=True).max()) < 0.5  # resize dims it


def test_a_latent_mask_comes_back_from_its_pixel_mask():
    """DiffEdit's automatic mask: the pixel mask adopted from a latent mask maps back onto it."""
    img = _img(60, 70)
    fr = framing.frame(img, None, factor=8, encode=encode)
    lm = (torch.rand(1, 1, 8, 9, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    fr2 = fr.with_latent_mask(lm)
    assert fr2.mask.shape == (1, 1, 60, 70) and torch.equal(fr2.latent_mask_for((8, 9)), lm)
    out = framing.finish(fr2, decode(fr.latent + 0.5))
    assert torch.equal(out[(fr2.mask == 0).expand_as(img)], img[(fr2.mask == 0).expand_as(img)])


def test_bad_framing_arguments():
    with pytest.raises(ValueError, match="crop padding"):
        framing.Crop(-1)
    with pytest.raises(ValueError, match="crop resolution"):
        framing.Crop(8, 4)
    with pytest.raises(ValueError, match="crop needs a mask"):
        framing.frame(_img(), None, factor=8, crop=framing.Crop())
    with pytest.raises(ValueError, match="factor"):
        framing.frame(_img(), None, factor=0)
    with pytest.raises(masks.ImageError, match="mask is 32x32 but the image is 64x64"):
        framing.frame(_img(), torch.ones(1, 1, 32, 32), factor=8)
    fr = framing.frame(_img(), torch.zeros(1, 1, 64, 64), factor=8, encode=encode)
    with pytest.raises(ValueError, match="nothing to drag"):
        framing.require_editable(fr, "drag")


def test_a_control_image_is_framed_like_the_pixels():
    img = _img(96, 128)
    m = torch.zeros(1, 1, 96, 128)
    m[..., 40:52, 70:90] = 1
    for crop in (None, framing.Crop(8), framing.Crop(8, 64)):
        fr = framing.frame(img, m, factor=8, crop=crop)
        assert torch.equal(fr.map_image(img), fr.padded)  # the same box, size and padding as the image
    other = _img(30, 40)
    assert fr.map_image(other).shape[-2:] == fr.padded.shape[-2:]  # another size: resized as a whole
