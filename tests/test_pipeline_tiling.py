"""Tiled VAE and tiled UNet in SDEditPipeline (tiny random models, CPU): a single tile is exactly the
untiled run, many tiles stay close to it, masks stay exact, ControlNet images and SDXL crop coordinates
follow each tile, and bad settings are refused by name."""

from __future__ import annotations

import pytest
import torch

from sdedit_engine.core.tiling import tile_regions, tile_starts
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from sdedit_engine.pipelines.text import tile_time_ids
from tests.cli_helpers import one_error_line, run
from tests.fixtures.tiny_diffusers import tiny_controlnet_path, tiny_sd_path, tiny_sdxl_path

KW = dict(prompt="a red barn", t0=0.5, steps=3, seed=0, progress=False, output_type="pt")


def _image(h, w, seed=0):
    """A smooth picture (low frequencies), so tile seams would show as outliers."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g), size=(h, w), mode="bilinear")


@pytest.fixture()
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path())


def test_vae_tiling_one_tile_is_exact_and_many_tiles_stay_close(pipe):
    img = _image(160, 136)
    lat = pipe.encode(img)
    dec = pipe.decode(lat)
    pipe.enable_vae_tiling(tile_size=256)  # one tile covers the image: the same computation
    assert not pipe.vae.use_tiling and pipe.vae_tiling == (32, 8)
    assert torch.equal(pipe.encode(img), lat) and torch.equal(pipe.decode(lat), dec)
    pipe.enable_vae_tiling(tile_size=64, overlap=16)  # 3×3 tiles of 64 px
    lat_t, dec_t = pipe.encode(img), pipe.decode(lat)
    assert lat_t.shape == lat.shape and dec_t.shape == dec.shape == (1, 3, 160, 136)
    assert 0 <= float(dec_t.min()) and float(dec_t.max()) <= 1
    # where one tile is alone the output is that tile's own decode, bit for bit (tile 0: latent 0..8,
    # alone until the next tile starts)
    ay, ax = tile_starts(20, 8, 2)[1] * 8, tile_starts(17, 8, 2)[1] * 8
    assert (ay, ax) == (48, 32)
    pipe.enable_vae_tiling(False)
    own = pipe.decode(lat[..., :8, :8])
    assert torch.equal(dec_t[..., :ay, :ax], own[..., :ay, :ax])
    # a tile lacks its neighbours' context (and, with random weights, their GroupNorm statistics), so
    # tiled ≠ untiled; blending keeps it no further off than diffusers' own tiling with the same tiles
    pipe.vae.enable_tiling()
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 64, 8
    lat_d, dec_d = pipe.encode(img), pipe.decode(lat)
    assert float((dec_t - dec).abs().mean()) <= float((dec_d - dec).abs().mean())
    assert float((lat_t - lat).abs().mean()) <= float((lat_d - lat).abs().mean())
    pipe.enable_vae_tiling(tile_size=64, overlap=16)
    out = pipe(img, **KW).images
    assert out.shape == (1, 3, 160, 136) and torch.isfinite(out).all()
    pipe.enable_vae_tiling(False)
    assert pipe.vae_tiling is None and torch.equal(pipe.decode(lat), dec)


def test_unet_tiling_one_tile_is_exact_many_tiles_close_and_masks_exact(pipe):
    img = _image(128, 96)
    whole = pipe(img, **KW).images
    pipe.enable_unet_tiling(tile_size=128)  # 16×12 latent in one 16×16 tile
    assert torch.equal(pipe(img, **KW).images, whole)
    pipe.enable_unet_tiling(tile_size=64, overlap=16)  # 2×2 latent tiles of 8 cells
    calls = []
    out = pipe(img, **KW, callback=lambda info: calls.append(info.step))
    assert out.nfe == 3 and calls == [0, 1, 2]  # one denoiser evaluation per step, tiles inside it
    tiled = out.images
    # tiles lose some context, but tiling changes the edit less than drawing another seed does
    other_seed = pipe.enable_unet_tiling(False) or pipe(img, **dict(KW, seed=1)).images
    diff, seed_diff = float((tiled - whole).abs().mean()), float((other_seed - whole).abs().mean())
    print(f"tiled vs whole {diff:.4f}, seed 1 vs seed 0 {seed_diff:.4f}")
    assert 0 < diff < 0.5 * seed_diff
    pipe.enable_unet_tiling(tile_size=64, overlap=16)
    m = torch.zeros(1, 1, 128, 96)
    m[..., 40:100, 20:70] = 1
    masked = pipe(img, mask=m, **KW).images
    keep = (m == 0).expand_as(img)
    assert torch.equal(masked[keep], img[keep])
    pipe.enable_unet_tiling(False)
    assert torch.equal(pipe(img, **KW).images, whole)


def test_unet_tiling_counts_tiles_and_crops_controlnet_images():
    p = SDEditPipeline.from_pretrained(tiny_sd_path(), controlnet=tiny_controlnet_path())
    img, ctrl = _image(96, 128), _image(96, 128, seed=1)
    seen = []
    p.controlnet.register_forward_pre_hook(lambda mod, args, kw: seen.append(tuple(kw["controlnet_cond"].shape[-2:])),
                                           with_kwargs=True)
    p.enable_unet_tiling(tile_size=64, overlap=16)
    out = p(img, control_image=ctrl, **KW).images
    regions = tile_regions(12, 16, 8, 2)
    assert torch.isfinite(out).all() and len(seen) == 3 * len(regions)
    assert seen[:len(regions)] == [((y1 - y0) * 8, (x1 - x0) * 8) for y0, y1, x0, x1 in regions]
    # the crop matters: a control image that differs only inside one tile changes that tile's output most
    ctrl2 = ctrl.clone()
    ctrl2[..., :32, :32] = 1 - ctrl2[..., :32, :32]
    out2 = p(img, control_image=ctrl2, **KW).images
    d = (out2 - out).abs().mean(dim=(0, 1))
    assert float(d[:32, :32].mean()) > 3 * float(d[64:, 96:].mean())


def test_sdxl_tiles_get_their_crop_coordinates():
    ids = torch.tensor([[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0]] * 2)
    t = tile_time_ids(ids, 256, 768, 128, 640)
    assert t.tolist()[0] == [1024.0, 768.0, 256.0, 128.0, 512.0, 512.0] and ids[0, 2] == 0  # a copy
    assert tile_time_ids(torch.tensor([[64.0, 64.0, 0.0, 0.0, 6.0]]), 8, 24, 0, 16).tolist() == [[64.0, 64.0, 8.0, 0.0, 6.0]]
    assert tile_time_ids(None, 0, 1, 0, 1) is None
    xl = SDEditPipeline.from_pretrained(tiny_sdxl_path())
    seen = []
    xl.unet.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["added_cond_kwargs"]["time_ids"][-1].tolist()),
                                      with_kwargs=True)
    xl.enable_unet_tiling(tile_size=64, overlap=16)
    out = xl(_image(64, 96), **dict(KW, steps=1)).images
    assert torch.isfinite(out).all()
    assert seen == [[64.0, 96.0, 0.0, 0.0, 64.0, 64.0], [64.0, 96.0, 0.0, 32.0, 64.0, 64.0]]


def test_tiling_settings_are_checked_by_name(pipe, capsys, tmp_path):
    for bad, match in [(dict(tile_size=60), "tile_size must be a non-negative multiple of 8"),
                       (dict(tile_size=64, overlap=64), "overlap must be an integer in"),
                       (dict(tile_size=64, overlap=12), "overlap must be a non-negative multiple of 8"),
                       (dict(tile_size=8), "tile_size must be an integer of at least 2 latent cells")]:
        with pytest.raises(ValueError, match="UNet " + match):
            pipe.enable_unet_tiling(**bad)
        with pytest.raises(ValueError, match="VAE " + match):
            pipe.enable_vae_tiling(**bad)
    assert pipe.unet_tiling is None and pipe.vae_tiling is None  # a refused setting changes nothing
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray((_image(64, 64)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(src)
    rc, _, err = run(["edit", src, "-o", tmp_path / "o.png", "--model", tiny_sd_path(), "--unet-tiling", "60",
                      "--steps", "1"], capsys)
    assert rc != 0 and "--unet-tiling" in one_error_line(err) and "multiple of 8" in err
    rc, out, err = run(["edit", src, "-o", tmp_path / "o.png", "--model", tiny_sd_path(), "--unet-tiling", "32",
                        "--vae-tiling", "--steps", "1"], capsys)
    assert rc == 0 and (tmp_path / "o.png").exists(), err
