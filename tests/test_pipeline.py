"""SDEditPipeline on tiny random diffusers models (CPU, offline): outputs, determinism, CFG,
ControlNet, LoRA, SDXL, exact composite-back, progress/cancel, and loading errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.core.samplers import SamplingCancelled  # noqa: E402
from sdedit_engine.io.imaging import ImageError  # noqa: E402
from sdedit_engine.pipelines.loading import ModelLoadError, PickleCheckpointError  # noqa: E402
from sdedit_engine.pipelines.pipeline import SDEditOutput, SDEditPipeline  # noqa: E402
from tests.fixtures.tiny_diffusers import (  # noqa: E402
    pickle_checkpoint,
    tiny_controlnet_path,
    tiny_lora_path,
    tiny_sd_path,
    tiny_sdxl_path,
    tiny_single_file_path,
)

KW = dict(t0=0.6, steps=4, progress=False)


def _image(h=64, w=64, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path())


def _pt(p, img, **kw):
    args = dict(KW, prompt="a red barn", output_type="pt", seed=0)
    args.update(kw)
    return p(img, **args).images


def test_output_types_shapes_dtypes(pipe):
    img = _image()
    out = pipe(img, prompt="x", output_type="pil", seed=0, **KW)
    assert isinstance(out, SDEditOutput) and len(out.images) == 1
    assert out.images[0].size == (64, 64) and out.images[0].mode == "RGB"
    np_out = pipe(img, prompt="x", output_type="np", seed=0, **KW).images
    assert np_out.shape == (1, 64, 64, 3) and np_out.dtype == np.float32 and 0 <= np_out.min() <= np_out.max() <= 1
    lat = pipe(img, prompt="x", output_type="latent", seed=0, **KW)
    assert lat.images.shape == (1, 4, 8, 8) and lat.images.dtype == torch.float32
    assert out.steps == 4 and out.nfe == 4 and abs(out.sigma0 - pipe.schedule.t0_to_sigma(0.6)) < 1e-9
    # PIL / numpy uint8 inputs and sizes that are not multiples of 8 (padded, then cropped back)
    odd = Image.fromarray((np.random.default_rng(0).random((44, 60, 3)) * 255).astype(np.uint8))
    assert pipe(odd, prompt="x", output_type="pil", seed=0, **KW).images[0].size == (60, 44)
    assert _pt(pipe, np.asarray(odd)).shape == (1, 3, 44, 60)
    many = _pt(pipe, img, num_images=3)
    assert many.shape == (1 * 3, 3, 64, 64) and not torch.equal(many[0], many[1])


def test_determinism_by_seed(pipe):
    img = _image()
    a, b = _pt(pipe, img, seed=5), _pt(pipe, img, seed=5)
    assert torch.equal(a, b)
    assert float((a - _pt(pipe, img, seed=6)).abs().max()) > 1e-3
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(_pt(pipe, img, seed=None, generator=g1), _pt(pipe, img, seed=None, generator=g2))
    # a batch of two equals two single runs with the same per-item seeds
    two = _pt(pipe, torch.cat([img, _image(seed=1)]), seed=[5, 9])
    assert torch.allclose(two[1:], _pt(pipe, _image(seed=1), seed=9), atol=1e-5)
    assert torch.allclose(two[:1], a, atol=1e-5)


def test_cfg_and_prompt_change_output(pipe):
    img = _image()
    base = _pt(pipe, img, guidance_scale=1.0)
    cfg = _pt(pipe, img, guidance_scale=7.5)
    other = _pt(pipe, img, guidance_scale=7.5, prompt="a blue ocean at night")
    neg = _pt(pipe, img, guidance_scale=7.5, negative_prompt="blurry, grey")
    for o in (cfg, other, neg):
        assert float((o - base).abs().max()) > 1e-3
    assert float((other - cfg).abs().max()) > 1e-3 and float((neg - cfg).abs().max()) > 1e-3


def test_t0_controls_faithfulness(pipe):
    # (measured in latent space: the random tiny VAE's round trip would swamp pixel distances)
    img = _image()
    z = pipe.encode(img)
    d = [float((_pt(pipe, img, t0=t, steps=6, output_type="latent") - z).abs().mean()) for t in (0.05, 0.3, 0.9)]
    assert d[0] < d[1] < d[2]


def test_masked_pixels_exact(pipe):
    img = _image()
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:40, 20:52] = 1
    out = _pt(pipe, img, mask=m)
    keep, edit = (m == 0).expand_as(img), (m == 1).expand_as(img)
    assert torch.equal(out[keep], img[keep])
    assert float((out[edit] - img[edit]).abs().mean()) > 1e-2
    # uint8 PIL in -> PIL out: unmasked pixels are the same bytes
    u8 = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    pil = pipe(Image.fromarray(u8), mask=Image.fromarray((m[0, 0].numpy() * 255).astype(np.uint8)), prompt="x",
               seed=0, output_type="pil", mask_blur=4, **KW).images[0]
    arr = np.asarray(pil)
    from sdedit_engine.io.imaging import feather_mask

    fm = feather_mask(m, 4)[0, 0].numpy()
    assert np.array_equal(arr[fm == 0], u8[fm == 0]) and (fm == 0).sum() > 1000
    # empty mask: nothing changes at all
    assert torch.equal(_pt(pipe, img, mask=torch.zeros(1, 1, 64, 64)), img)
    # no composite: the VAE round trip shows outside the mask
    raw = _pt(pipe, img, mask=m, composite=False)
    assert float((raw[keep] - img[keep]).abs().max()) > 1e-3


def test_bad_inputs(pipe):
    img = _image()
    with pytest.raises(ImageError, match="mask is 32x32 but the image is 64x64"):
        _pt(pipe, img, mask=torch.ones(1, 1, 32, 32))
    for bad in (0.0, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="t0"):
            _pt(pipe, img, t0=bad)
    with pytest.raises(ValueError, match="sampler"):
        _pt(pipe, img, sampler="nope")
    with pytest.raises(ValueError, match="output_type"):
        _pt(pipe, img, output_type="jpeg")
    with pytest.raises(ValueError, match="ControlNet"):
        _pt(pipe, img, control_image=img)
    with pytest.raises(ValueError, match=r"^image: values must be in \[0, 1\].*0…255"):
        _pt(pipe, img * 255)  # float 0…255 was read as 0…1 (a white, clipped guide)
    with pytest.raises(ValueError, match=r"^mask: values must be in \[0, 1\]"):
        _pt(pipe, img, mask=torch.full((1, 1, 64, 64), 255.0))


def test_repeats_progress_and_cancel(pipe):
    img = _image()
    seen = []
    out = pipe(img, prompt="x", seed=0, repeats=3, callback=lambda info: seen.append((info.step, info.repeat)), **KW)
    assert out.nfe == 12 and [s for s, _ in seen] == list(range(12)) and {r for _, r in seen} == {0, 1, 2}
    with pytest.raises(SamplingCancelled):
        pipe(img, prompt="x", seed=0, callback=lambda info: info.step == 1, **KW)


def test_controlnet_changes_output():
    p = SDEditPipeline.from_pretrained(tiny_sd_path(), controlnet=tiny_controlnet_path())
    img = _image()
    ctrl_a, ctrl_b = _image(seed=10), torch.zeros(1, 3, 64, 64)
    no_ctrl = _pt(p, img)
    a, a2, b = _pt(p, img, control_image=ctrl_a), _pt(p, img, control_image=ctrl_a), _pt(p, img, control_image=ctrl_b)
    assert torch.equal(a, a2)
    assert float((a - no_ctrl).abs().max()) > 1e-3 and float((a - b).abs().max()) > 1e-3
    weak = _pt(p, img, control_image=ctrl_a, controlnet_conditioning_scale=0.0)
    assert float((weak - no_ctrl).abs().max()) < 1e-3  # scale 0 = no control (up to float rounding)


def test_lora_changes_output_and_unloads():
    p = SDEditPipeline.from_pretrained(tiny_sd_path())
    img = _image()
    base = _pt(p, img)
    p.load_lora_weights(tiny_lora_path())
    with_lora = _pt(p, img)
    assert float((with_lora - base).abs().max()) > 1e-3
    p.lora_scale = 0.0
    assert torch.allclose(_pt(p, img), base, atol=1e-5)
    p.unload_lora_weights()
    assert torch.allclose(_pt(p, img), base, atol=1e-5)


def test_lora_file_and_refusals(tmp_path):
    p = SDEditPipeline.from_pretrained(tiny_sd_path())
    f = tiny_lora_path() / "pytorch_lora_weights.safetensors"
    p.load_lora_weights(f, scale=0.5)
    assert p.lora_scale == 0.5
    pk = pickle_checkpoint(tmp_path)
    with pytest.raises(PickleCheckpointError, match="refusing pickle"):
        p.load_lora_weights(pk)
    with pytest.raises(ModelLoadError, match="LoRA not found"):
        p.load_lora_weights(tmp_path / "nope.safetensors")


def test_sdxl_and_v_prediction():
    xl = SDEditPipeline.from_pretrained(tiny_sdxl_path())
    assert xl.is_xl
    img = _image()
    a = _pt(xl, img)
    b = _pt(xl, img, prompt="a completely different prompt")
    assert a.shape == (1, 3, 64, 64) and float((a - b).abs().max()) > 1e-3
    m = torch.zeros(1, 1, 64, 64)
    m[..., :32, :] = 1
    keep = (m == 0).expand_as(img)
    assert torch.equal(_pt(xl, img, mask=m)[keep], img[keep])
    v = SDEditPipeline.from_pretrained(tiny_sd_path("v_prediction"))
    assert v.prediction_type == "v_prediction" and torch.isfinite(_pt(v, img)).all()


def test_vae_tiling_large_image():
    p = SDEditPipeline.from_pretrained(tiny_sd_path())
    big = _image(160, 136)
    p.enable_vae_tiling()
    assert p.vae_tiling == (32, 8) and not p.vae.use_tiling  # 256-px tiles (the tiny VAE says 64), ¼ overlap
    out = _pt(p, big, steps=2)
    assert out.shape == (1, 3, 160, 136) and torch.isfinite(out).all()


def test_loading_errors(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model not found: .*no/such/model"):
        SDEditPipeline.from_pretrained(tmp_path / "no" / "such" / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        SDEditPipeline.from_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="downloads are disabled"):
        SDEditPipeline.from_pretrained("sdedit-test-nobody/not-a-cached-model")
    # a diffusers folder whose UNet weights are pickle only
    pk = tmp_path / "pickled"
    shutil.copytree(tiny_sd_path(), pk)
    unet = pk / "unet"
    for f in unet.glob("*.safetensors"):
        f.unlink()
    torch.save({"w": torch.zeros(1)}, unet / "diffusion_pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match=r"refusing pickle checkpoint .*diffusion_pytorch_model.bin"):
        SDEditPipeline.from_pretrained(pk)
    with pytest.raises(ModelLoadError, match="controlnet not found"):
        SDEditPipeline.from_pretrained(tiny_sd_path(), controlnet=tmp_path / "nocn")


def test_single_file_refusals(tmp_path):
    ck = pickle_checkpoint(tmp_path)
    with pytest.raises(PickleCheckpointError, match=r"refusing pickle checkpoint .*model.ckpt"):
        SDEditPipeline.from_single_file(ck)
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        SDEditPipeline.from_single_file(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read safetensors checkpoint"):
        SDEditPipeline.from_single_file(junk)


def test_from_single_file_matches_folder(pipe):
    f = tiny_single_file_path()
    sf = SDEditPipeline.from_single_file(f, config=tiny_sd_path())
    img = _image()
    assert torch.equal(_pt(sf, img), _pt(pipe, img))
    assert torch.equal(SDEditPipeline.load(f, config=tiny_sd_path()).unet.conv_in.weight, pipe.unet.conv_in.weight)
    # offline without a config: diffusers would fetch the default SD config from the hub -> clear error
    with pytest.raises(ModelLoadError, match=r"cannot load single-file checkpoint .*tiny-sd.safetensors .*config="):
        SDEditPipeline.from_single_file(f)


def test_crop_to_mask_edits_only_the_box(pipe):
    img = _image(96, 128)
    m = torch.zeros(1, 1, 96, 128)
    m[..., 40:52, 70:90] = 1
    out = _pt(pipe, img, mask=m, crop_padding=8)
    assert out.shape == img.shape
    keep, edit = (m == 0).expand_as(img), (m == 1).expand_as(img)
    assert torch.equal(out[keep], img[keep]) and float((out[edit] - img[edit]).abs().mean()) > 1e-2
    with pytest.raises(ValueError, match="crop_padding needs a mask"):
        _pt(pipe, img, crop_padding=8)


@pytest.mark.parametrize("sampler", ["ddpm", "euler_maruyama", "dpmpp_2m_sde", "ddim", "dpmpp_2m"])
def test_every_sampler_runs_deterministically_with_masks_and_copies(pipe, sampler):
    img = _image()
    m = torch.zeros(1, 1, 64, 64)
    m[..., 8:56, 8:40] = 1
    a = _pt(pipe, img, mask=m, sampler=sampler, num_images=2, spacing="karras", known_noise="fixed")
    b = _pt(pipe, img, mask=m, sampler=sampler, num_images=2, spacing="karras", known_noise="fixed")
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b)
    keep = (m == 0).expand(2, 3, 64, 64)
    assert torch.equal(a[keep], img.expand(2, -1, -1, -1)[keep])
    if sampler in ("ddim", "dpmpp_2m"):  # ODE twins: the noise only enters at the start
        assert not torch.equal(a[0], a[1])


def test_half_precision_weights_match_float32(pipe):
    half = SDEditPipeline.from_pretrained(tiny_sd_path(), torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16
    img = _image()
    out = _pt(half, img)
    assert out.dtype == torch.float32 and half.vae.dtype == torch.float32  # force_upcast VAE
    assert float((out - _pt(pipe, img)).abs().max()) < 2e-2


def test_sdxl_controlnet_with_added_conditioning():
    from diffusers import ControlNetModel

    xl = SDEditPipeline.from_pretrained(tiny_sdxl_path())
    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(xl.unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():  # a fresh ControlNet is a no-op (zero convs); make it act
        for name, p in cn.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.2)
    xl.set_controlnet(cn)
    img = _image()
    a = _pt(xl, img, control_image=_image(seed=3))
    xl.set_controlnet(None)
    assert float((a - _pt(xl, img)).abs().max()) > 1e-3


def test_batches_of_images_masks_and_copies(pipe):
    imgs = torch.cat([_image(seed=1), _image(seed=2)])
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, :32] = 1
    masks[1, :, 32:] = 1
    out = _pt(pipe, imgs, mask=masks, num_images=2)  # items: img1, img1, img2, img2
    assert out.shape == (4, 3, 64, 64)
    per_item = masks.repeat_interleave(2, dim=0)
    src = imgs.repeat_interleave(2, dim=0)
    keep = (per_item == 0).expand_as(out)
    assert torch.equal(out[keep], src[keep])
    with pytest.raises(ValueError, match="mask batch 3"):
        _pt(pipe, imgs, mask=torch.zeros(3, 1, 64, 64))
    with pytest.raises(ValueError, match="num_images"):
        _pt(pipe, imgs, num_images=0)


def test_official_recipe_grid_visits_every_timestep(pipe):
    # steps = round(t0·T): the official loop's grid (every discrete timestep below τ, then 0)
    out = pipe(_image(), prompt="x", t0=0.05, steps=50, sampler="ddpm", spacing="uniform", repeats=2, seed=0,
               output_type="latent", progress=False)
    expected = torch.cat([pipe.schedule.sigmas[:50].flip(0), torch.zeros(1, dtype=torch.float64)])
    assert out.nfe == 100 and torch.allclose(out.sigmas.double(), expected, rtol=1e-9, atol=0)
    assert abs(out.sigma0 - float(pipe.schedule.sigmas[49])) < 1e-12
