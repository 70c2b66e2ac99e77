"""Pixel values of every PIL mode and array dtype (sdedit_engine.io.values via imaging): 16-bit and
float files load at full scale, and float data outside [0, 1] is an error naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.io import imaging as im

H, W = 12, 16
HALF16 = 32768  # 50 % grey in 16 bits


def _grey16(value=HALF16) -> np.ndarray:
    a = np.full((H, W), value, np.uint16)
    a[:, : W // 2] = 0  # left half black, right half `value`
    return a


def _saved(tmp_path, pil: Image.Image, name: str) -> Image.Image:
    path = tmp_path / name
    pil.save(path)
    with Image.open(path) as reread:
        reread.load()
        return path, reread.mode


def test_16_bit_grey_png_guide_loads_at_half_not_white(tmp_path):
    path, mode = _saved(tmp_path, Image.fromarray(_grey16()), "grey16.png")
    assert mode.startswith("I;16")  # a real 16-bit PNG on disk
    x = im.load_image(path)
    assert x.shape == (1, 3, H, W)
    assert float(x[..., W // 2 :].mean()) == pytest.approx(HALF16 / 65535, abs=1e-6)
    assert float(x[..., : W // 2].max()) == 0.0


def test_16_bit_grey_png_mask_at_half_is_half_editable(tmp_path):
    path, _ = _saved(tmp_path, Image.fromarray(_grey16()), "mask16.png")
    m = im.load_mask(path, size=(H, W))
    assert float(m[..., W // 2 :].mean()) == pytest.approx(0.5, abs=1e-4)
    assert float(m[..., : W // 2].max()) == 0.0


def test_32_bit_int_and_float_tiffs(tmp_path):
    ints = _grey16().astype(np.int32)
    path, mode = _saved(tmp_path, Image.fromarray(ints, "I"), "grey32.tif")
    assert mode == "I"
    assert float(im.load_image(path)[..., W // 2 :].mean()) == pytest.approx(0.5, abs=1e-4)
    assert float(im.load_mask(path)[..., W // 2 :].mean()) == pytest.approx(0.5, abs=1e-4)
    floats = np.zeros((H, W), np.float32)
    floats[:, W // 2 :] = 0.25
    path, mode = _saved(tmp_path, Image.fromarray(floats, "F"), "float.tif")
    assert mode == "F"
    assert float(im.load_image(path)[..., W // 2 :].mean()) == pytest.approx(0.25, abs=1e-6)
    assert float(im.load_mask(path)[..., W // 2 :].mean()) == pytest.approx(0.25, abs=1e-6)


def test_out_of_range_high_bit_files_are_refused_naming_the_path(tmp_path):
    path, _ = _saved(tmp_path, Image.fromarray(np.full((H, W), 200.0, np.float32), "F"), "f255.tif")
    with pytest.raises(im.ImageError, match=r"cannot read image .*f255.tif: .*values must be in \[0, 1\].*0…255"):
        im.load_image(path)
    path, _ = _saved(tmp_path, Image.fromarray(np.full((H, W), 1 << 20, np.int32), "I"), "i32.tif")
    with pytest.raises(im.ImageError, match=r"i32.tif: .*only 0…65535"):
        im.load_mask(path)


def test_la_p_and_cmyk_modes(tmp_path):
    grey = np.full((H, W), 128, np.uint8)
    la = Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA")
    path, mode = _saved(tmp_path, la, "la.png")
    assert mode == "LA"
    assert float(im.load_image(path).mean()) == pytest.approx(128 / 255, abs=1e-6)
    assert float(im.load_mask(path).mean()) == pytest.approx(128 / 255, abs=1e-6)  # opaque: the grey value
    la_t = np.stack([grey, np.full_like(grey, 255)], -1)
    la_t[: H // 2, :, 1] = 0  # transparent top half = edit
    path, _ = _saved(tmp_path, Image.fromarray(la_t, "LA"), "la_alpha.png")
    m = im.load_mask(path)
    assert float(m[..., : H // 2, :].min()) == 1.0 and float(m[..., H // 2 :, :].max()) == 0.0

    pal = Image.new("P", (W, H), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    pal.paste(1, (W // 2, 0, W, H))
    path, mode = _saved(tmp_path, pal, "pal.png")
    assert mode == "P"
    x = im.load_image(path)
    assert torch.allclose(x[0, :, 0, -1], torch.tensor([1.0, 0.0, 0.0])) and float(x[..., : W // 2].max()) == 0.0
    pal.info["transparency"] = 1  # the red entry is transparent: it is the editable area of a mask
    path, _ = _saved(tmp_path, pal, "pal_t.png")
    m = im.load_mask(path)
    assert float(m[..., W // 2 :].min()) == 1.0 and float(m[..., : W // 2].max()) == 0.0

    cmyk = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # no black, full magenta + yellow = red
    path, mode = _saved(tmp_path, cmyk, "cmyk.tif")
    assert mode == "CMYK"
    assert torch.allclose(im.load_image(path)[0, :, 3, 3], torch.tensor([1.0, 0.0, 0.0]))


def test_uint16_arrays_and_tensors_use_their_own_scale():
    x = im.to_tensor(np.stack([_grey16()] * 3, -1))
    assert float(x[..., W // 2 :].mean()) == pytest.approx(0.5, abs=1e-4)
    assert float(im.mask_to_tensor(_grey16())[..., W // 2 :].mean()) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("convert, arg", [
    (lambda a: a * 255.0, "image"),
    (lambda a: torch.from_numpy(a * 255.0), "image"),
    (lambda a: a * 2.0 - 1.0, "image"),
])
def test_float_images_outside_0_1_raise_naming_the_argument(convert, arg):
    rgb = np.random.default_rng(0).random((H, W, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=rf"^{arg}: values must be in \[0, 1\]"):
        im.to_tensor(convert(rgb))
    with pytest.raises(ValueError, match=r"^mask: values must be in \[0, 1\]"):
        im.mask_to_tensor(convert(rgb[..., 0]))
    with pytest.raises(ValueError, match="^control_image: "):
        im.to_tensor(convert(rgb), "control_image")
    assert torch.equal(im.to_tensor(rgb), torch.from_numpy(rgb).permute(2, 0, 1)[None])  # in range: unchanged


def test_nan_in_float_images_raises_naming_the_argument():
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="^image: contains NaN"):
        im.to_tensor(rgb)
