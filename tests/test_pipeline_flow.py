"""Flow-matching diffusers models (tiny SD3 and FLUX.1, real transformers, random weights) through SDEditPipeline.

Parity: the engine's ``ddim`` on the pipeline's flow denoiser, on diffusers' own σ grid, from the same
noised latent, equals ``StableDiffusion3Img2ImgPipeline`` / ``FluxImg2ImgPipeline`` (FlowMatchEuler) at
equal model calls; DDIM in S = s/(1 − s) is exactly the flow Euler step.
"""

import pytest
import torch

from sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas
from sdedit_engine.core.flow import flow_to_ve
from sdedit_engine.core.sdedit import sdedit
from sdedit_engine.pipelines.flow import pack, unpack
from sdedit_engine.pipelines.loading import ModelLoadError
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from tests.fixtures.tiny_flow import tiny_flow_lora_path, tiny_flux_path, tiny_sd3_path

FAMILIES = {"sd3": lambda: tiny_sd3_path(), "flux": lambda: tiny_flux_path(), "flux-schnell": lambda: tiny_flux_path(True),
            "sd35": lambda: tiny_sd3_path("rms_norm")}


@pytest.fixture(scope="module", params=["sd3", "flux"])
def pipe(request):
    return SDEditPipeline.from_pretrained(FAMILIES[request.param]())


def _image(size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, size)
    img = torch.stack([base[None, :].expand(size, size), base[:, None].expand(size, size), 0.4 * torch.ones(size, size)])
    return (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(0, 1)[None]


def _reference(sp):
    from diffusers import FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline

    cls = StableDiffusion3Img2ImgPipeline if sp.family == "sd3" else FluxImg2ImgPipeline
    keys = cls._get_signature_keys(cls)[0]
    ref = cls(**{k: v for k, v in sp.pipe.components.items() if k in keys})
    ref.set_progress_bar_config(disable=True)
    return ref


def test_pack_unpack_roundtrip():
    x = torch.randn(2, 16, 6, 10)
    assert torch.equal(unpack(pack(x), 6, 10), x)
    from diffusers import FluxPipeline

    assert torch.equal(pack(x), FluxPipeline._pack_latents(x, 2, 16, 6, 10))


def _diffusers_img2img(sp, ref, img, x0, noise, prompt, g, strength, steps):
    """diffusers' flow img2img from the noised start (1 − s0)·x0 + s0·noise: its output latent, σ grid, calls."""
    import numpy as np

    calls = [0]
    hook = ref.transformer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    kw = dict(strength=strength, num_inference_steps=steps, guidance_scale=g, output_type="latent")
    try:
        if sp.family == "sd3":  # a latent "image" is used as is; the noise is drawn from this generator
            out = ref(prompt, image=x0, generator=torch.Generator().manual_seed(5), negative_prompt="", **kw).images
        else:  # Flux: pass the noised, packed start (its s0 is the first σ diffusers' grid keeps)
            ref.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=sp.flow.mu(64, 64))
            s0 = float(ref.scheduler.sigmas[int(max(steps - min(steps * strength, steps), 0))])
            out = ref(prompt, image=img, latents=pack((1 - s0) * x0 + s0 * noise), height=64, width=64, **kw).images
            out = unpack(out, *x0.shape[-2:])
    finally:
        hook.remove()
    sched = ref.scheduler
    return out, sched.sigmas[sched.begin_index:].double(), calls[0]


@pytest.mark.parametrize("strength,steps", [(0.6, 10), (0.8, 7)])  # strength 1 starts at s = 1: S = inf
def test_ddim_equals_diffusers_flow_img2img_at_equal_calls(pipe, strength, steps):
    img = _image(64, 1)
    x0 = pipe.encode(img)  # posterior mode, shift and scaling applied
    g = 4.0 if pipe.family == "sd3" else 3.5
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    out, grid, calls = _diffusers_img2img(pipe, _reference(pipe), img, x0, noise, "a red house", g, strength, steps)
    den = pipe.make_denoiser(g)
    cond = pipe.encode_prompt("a red house", "" if pipe.family == "sd3" else None, 1, g, 64, 64).as_extra_args()
    ours_calls = [0]
    hook = pipe.unet.register_forward_hook(lambda *_: ours_calls.__setitem__(0, ours_calls[0] + 1))
    try:
        with torch.no_grad():
            ours = sdedit(den, x0, sigmas=flow_to_ve(grid), sampler="ddim", init_noise=noise, extra_args=cond)
    finally:
        hook.remove()
    assert ours_calls[0] == calls == len(grid) - 1
    assert float((ours - out).abs().max()) <= 1e-4


def test_masked_edit_keeps_pixels_and_seeds(pipe):
    img = _image(64, 2)
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:40, 20:44] = 1
    kw = dict(prompt="a cat", t0=0.7, steps=5, output_type="pt", progress=False)
    a = pipe(img, mask=m, seed=3, **kw)
    b = pipe(img, mask=m, seed=3, **kw)
    c = pipe(img, mask=m, seed=4, **kw)
    keep = (m == 0).expand_as(img)
    assert torch.equal(a.images[keep], img[keep])
    assert torch.equal(a.images, b.images)
    assert float((a.images - c.images).abs().max()) > 1e-3
    assert a.nfe == 5
    assert torch.isfinite(a.latents).all()


def test_odd_sizes_are_padded_to_16_and_cropped_back(pipe):
    img = _image(72, 3)[..., :70]  # 72 x 70: pads to 80 x 80 for the 2x2 patches
    out = pipe(img, prompt="x", t0=0.5, steps=3, output_type="pt", progress=False, seed=0)
    assert out.images.shape == img.shape
    assert out.latents.shape[-2:] == (10, 10)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_cycle_sde_reconstructs_through_the_transformer(pipe, guidance):
    den = pipe.make_denoiser(guidance)
    cond = pipe.encode_prompt("a bowl of fruits", None, 1, guidance, 64, 64).as_extra_args()
    x0 = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = cycle_reconstruct(den, x0, cycle_sigmas(den.schedule, 0.6, 25), seed=3, extra_args=cond)
    assert rec.dtype == torch.float32
    assert float((rec - x0).norm() / x0.norm()) <= 1e-4


def test_flux_dynamic_shift_follows_the_image_size():
    sp = SDEditPipeline.from_pretrained(tiny_flux_path())
    sp.encode(_image(64))
    small = sp.schedule.t0_to_sigma(0.5)
    sp.encode(torch.rand(1, 3, 256, 256))
    assert sp.flow.mu() > sp.flow.mu(64, 64)
    assert sp.schedule.t0_to_sigma(0.5) > small
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert abs(sp.flow.mu(256, 256) - calculate_shift(256)) < 1e-12


def test_t0_scale_sd15_snr_starts_lower_than_model_time():
    sp = SDEditPipeline.from_pretrained(tiny_sd3_path())
    model = sp.schedule.t0_to_sigma(0.5)
    sp.t0_scale = "sd15_snr"
    from sdedit_engine.core.schedules import DiscreteSchedule

    assert abs(sp.schedule.t0_to_sigma(0.5) - DiscreteSchedule.scaled_linear().t0_to_sigma(0.5)) < 1e-9
    assert sp.schedule.t0_to_sigma(0.5) < model


@pytest.mark.parametrize("family", ["flux-schnell", "sd35"])
def test_schnell_and_sd35_variants_run(family):
    sp = SDEditPipeline.from_pretrained(FAMILIES[family]())
    assert sp.family == ("flux-schnell" if family == "flux-schnell" else "sd3")
    out = sp(_image(64), prompt="a dog", t0=0.6, steps=3, output_type="pt", progress=False, seed=0)
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_lora_loads_and_changes_the_result(family):
    sp = SDEditPipeline.from_pretrained(FAMILIES[family]())
    kw = dict(prompt="a dog", t0=0.6, steps=3, output_type="latent", progress=False, seed=0)
    base = sp(_image(64), **kw).latents
    sp.load_lora_weights(tiny_flow_lora_path(family), scale=1.0)
    lora = sp(_image(64), **kw).latents
    sp.lora_scale = 0.0
    off = sp(_image(64), **kw).latents
    sp.unload_lora_weights()
    assert float((lora - base).abs().max()) > 1e-3
    assert float((off - base).abs().max()) < 1e-5


def test_bf16_runs_and_returns_float32():
    sp = SDEditPipeline.from_pretrained(tiny_flux_path(), torch_dtype=torch.bfloat16)
    out = sp(_image(64), prompt="a dog", t0=0.6, steps=3, output_type="pt", progress=False, seed=0)
    assert out.images.dtype == torch.float32 and torch.isfinite(out.images).all()


def test_flux_refuses_a_negative_prompt():
    sp = SDEditPipeline.from_pretrained(tiny_flux_path())
    with pytest.raises(ValueError, match="negative prompt"):
        sp(_image(64), prompt="a", negative_prompt="blurry", t0=0.5, steps=2, progress=False)


def test_unsupported_flow_transformer_is_refused_by_name(tmp_path):
    import json
    import shutil

    src = tiny_sd3_path()
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    spec = json.loads((dst / "model_index.json").read_text())
    spec["_class_name"] = "ChromaPipeline"
    spec["transformer"] = ["diffusers", "ChromaTransformer2DModel"]
    (dst / "model_index.json").write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="ChromaTransformer2DModel"):
        SDEditPipeline.from_pretrained(dst)


def test_missing_text_encoder_is_a_clear_error(tmp_path):
    import json
    import shutil

    dst = tmp_path / "model"
    shutil.copytree(tiny_flux_path(), dst)
    spec = json.loads((dst / "model_index.json").read_text())
    spec["text_encoder_2"] = [None, None]
    spec["tokenizer_2"] = [None, None]
    (dst / "model_index.json").write_text(json.dumps(spec))
    shutil.rmtree(dst / "text_encoder_2")
    with pytest.raises(ModelLoadError, match="text_encoder_2"):
        SDEditPipeline.from_pretrained(dst)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_single_file_transformer_with_a_config_folder(family):
    from tests.fixtures.tiny_flow import tiny_flow_single_file_path

    path = tiny_flow_single_file_path(family)
    from sdedit_engine.pipelines.loading import single_file_family

    assert single_file_family(path) == family
    cfg = FAMILIES[family]()
    sp = SDEditPipeline.load(path, config=cfg)
    ref = SDEditPipeline.from_pretrained(cfg)
    assert sp.family == family
    a, b = sp.unet.state_dict(), ref.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ModelLoadError, match="config"):
        SDEditPipeline.load(path)


def test_bfl_named_flux_file_is_detected_and_a_bad_one_is_one_line(tmp_path):
    from safetensors.torch import save_file

    from sdedit_engine.pipelines.loading import single_file_family

    path = tmp_path / "flux1-dev.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 3), "img_in.weight": torch.zeros(3, 3)}, str(path))
    assert single_file_family(path) == "flux"
    with pytest.raises(ModelLoadError) as err:
        SDEditPipeline.load(path, config=tiny_flux_path())
    assert "\n" not in str(err.value) and "flux1-dev.safetensors" in str(err.value)


def test_vae_and_transformer_tiling_on_flow_models(pipe):
    """Tiled VAE + tiled transformer (Flux tiles keep their RoPE positions) on a 64x96 image; tiling off again
    gives the untiled result back."""
    img = _image(96, 4)[..., :64, :]
    kw = dict(prompt="a dog", t0=0.5, steps=2, output_type="pt", progress=False, seed=0)
    plain = pipe(img, **kw).images
    pipe.enable_vae_tiling(tile_size=32)
    pipe.enable_unet_tiling(tile_size=32)
    try:
        tiled = pipe(img, **kw).images
    finally:
        pipe.enable_vae_tiling(False)
        pipe.enable_unet_tiling(False)
    assert tiled.shape == img.shape and torch.isfinite(tiled).all()
    assert torch.equal(pipe(img, **kw).images, plain)
