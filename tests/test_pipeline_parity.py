"""Parity with diffusers itself: our ``ddpm`` sampler on the pipeline's σ-space denoiser reproduces
``StableDiffusionImg2ImgPipeline`` + ``DDPMScheduler`` (custom timesteps, same noise) to 1e-4."""

from __future__ import annotations

import pytest
import torch

from sdedit_engine.core.samplers import get_sampler  # noqa: E402
from sdedit_engine.pipelines.pipeline import SDEditPipeline  # noqa: E402
from tests.fixtures.tiny_diffusers import tiny_sd_path  # noqa: E402

PARITY_TOL = 1e-4


def _diffusers_run(path, latents, timesteps, seed, prompt, negative, guidance):
    from diffusers import DDPMScheduler, StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, clip_sample=False, thresholding=False,
                                               variance_type="fixed_small")
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    # A 4-channel `image` is taken as the initial latents (no VAE sampling); strength=1 keeps every timestep.
    out = pipe(prompt, image=latents, strength=1.0, timesteps=list(timesteps), guidance_scale=guidance,
               negative_prompt=negative, generator=g, output_type="latent")
    return out.images


@torch.no_grad()
def _ours(path, latents, timesteps, seed, prompt, negative, guidance):
    sp = SDEditPipeline.from_pretrained(path)
    cond = sp.encode_prompt(prompt, negative, 1, guidance, 64, 64)
    den = sp.make_denoiser(guidance)
    sig = torch.cat([sp.schedule.sigmas[list(timesteps)], torch.zeros(1, dtype=torch.float64)])
    g = torch.Generator().manual_seed(seed)
    # diffusers draws the img2img noise first, then one variance noise per scheduler step, all from `g`.
    n0 = torch.randn(latents.shape, generator=g)
    x = latents + float(sig[0]) * n0
    fn = get_sampler("ddpm").fn
    return fn(den, x, sig, noise_sampler=lambda s, sn: torch.randn(latents.shape, generator=g),
              extra_args=cond.as_extra_args())


@pytest.mark.parametrize(
    "prediction,timesteps,guidance",
    [
        ("epsilon", list(range(499, -1, -50)), 7.5),  # t0 = 0.5 on a 10-step integer grid, CFG on
        ("epsilon", list(range(99, -1, -1)), 1.0),  # every timestep below t0 = 0.1 (the official loop), no CFG
        ("v_prediction", [699, 550, 401, 250, 120, 30, 0], 5.0),
    ],
)
def test_ddpm_matches_diffusers_img2img(prediction, timesteps, guidance):
    path = tiny_sd_path(prediction)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11)) * 0.8
    ref = _diffusers_run(path, latents, timesteps, 123, "a red church", "blurry", guidance)
    ours = _ours(path, latents, timesteps, 123, "a red church", "blurry", guidance)
    diff = float((ours.float() - ref.float()).abs().max())
    print(f"parity {prediction} steps={len(timesteps)} cfg={guidance}: max|diff| = {diff:.3e}")
    assert ref.abs().max() > 0.1  # a real, non-trivial output
    assert diff < PARITY_TOL
