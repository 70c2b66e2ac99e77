"""The ComfyUI backend: ComfyUI's own guider is the engine's σ-space denoiser.

Sampling goes through ``comfy.samplers.CFGGuider`` so that everything ComfyUI attaches to a model —
LoRA weight patches, ControlNet inside the conditioning, CFG, hooks, model patches and wrappers, ε or
v prediction — applies exactly as in the core samplers. The guider hands our :class:`SDEditKSampler`
a callable ``model_wrap(x, sigma, model_options=…, seed=…)`` that returns the denoised latent in the
k-diffusion convention, which is precisely the engine's denoiser interface; the sampling math itself
is ``sdedit_engine.core.sdedit``.
"""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..sdedit_engine.core.noise import NoiseSource, normalize_seeds
from ..sdedit_engine.core.samplers import get_sampler
from ..sdedit_engine.core.schedules import DiscreteSchedule
from ..sdedit_engine.core.sdedit import KNOWN_NOISE_MODES, sdedit


def model_schedule(model) -> DiscreteSchedule:
    """The σ table of a ComfyUI MODEL as an engine schedule; flow-matching models are refused clearly."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.CONST) or not hasattr(sampling, "sigmas"):
        raise ValueError(
            "model: this model is a flow-matching model (e.g. SD3, Flux); SDEdit here supports discrete "
            "ε- or v-prediction models (SD1.x, SD2.x, SDXL and their fine-tunes)"
        )
    return DiscreteSchedule.from_sigmas(sampling.sigmas.detach().float().cpu())


class SDEditKSampler(comfy.samplers.KSAMPLER):
    """A ComfyUI SAMPLER running the engine's SDEdit: its samplers, K repeats and masked re-noising.

    In ``SamplerCustomAdvanced`` the latent is the guide and the NOISE node's tensor perturbs it to
    σ(t0) = ``sigmas[0]``. A ``noise_mask`` on the latent (SetLatentNoiseMask) selects the editable area:
    there the engine's rule applies (kept area re-noised to the current σ at every call, its estimate
    replaced by the guide), instead of ComfyUI's inpainting blend.
    """

    def __init__(self, sampler_name: str, repeats: int = 1, known_noise: str = "fresh"):
        get_sampler(sampler_name)
        if known_noise not in KNOWN_NOISE_MODES:
            raise ValueError(f"known_noise must be one of {KNOWN_NOISE_MODES}, got {known_noise!r}")
        if int(repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats!r}")
        super().__init__(None)
        self.sampler_name = sampler_name
        self.repeats = int(repeats)
        self.known_noise = known_noise

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        guide = latent_image if latent_image is not None else torch.zeros_like(noise)
        args = {k: v for k, v in extra_args.items() if k != "denoise_mask"}
        mask = denoise_mask.to(guide.dtype) if denoise_mask is not None else None

        def report(info):
            if callback is not None:  # progress bar, latent preview and the interrupt check
                callback(info.step, info.denoised, info.x, info.total)

        x = sdedit(
            model_wrap,
            guide,
            sigmas=sigmas,
            sampler=self.sampler_name,
            mask=mask,
            repeats=self.repeats,
            seed=int(args.get("seed") or 0),
            known_noise=self.known_noise,
            init_noise=noise.to(guide.dtype),
            extra_args=args,
            callback=report,
        )
        return model_wrap.inner_model.model_sampling.inverse_noise_scaling(sigmas[-1], x)


def sdedit_latent(
    model,
    positive,
    negative,
    latent: torch.Tensor,
    *,
    cfg: float,
    t0: float,
    steps: int,
    sampler_name: str,
    repeats: int,
    seed: int,
    mask: torch.Tensor | None = None,
    spacing: str = "uniform",
    known_noise: str = "fresh",
) -> torch.Tensor:
    """SDEdit one batch of VAE latents (ComfyUI's latent space) with a ComfyUI MODEL and conditioning.

    ``mask`` is a pixel- or latent-resolution editable mask (B or 1, 1, H, W); ComfyUI resizes it to the
    latent grid bilinearly. Noise comes from the engine's per-item seeded CPU generators, so the
    same seed gives the same result as the Python engine and whatever the batch.
    """
    sigmas = model_schedule(model).sigma_grid(t0, steps, spacing)
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    seeds = normalize_seeds(seed, latent.shape[0])
    noise = NoiseSource(seeds, latent.shape, stream="init/0").draw()
    guider = _guider(model, positive, negative, cfg)
    return _sample(guider, model, noise, latent, SDEditKSampler(sampler_name, repeats, known_noise), sigmas,
                   repeats * (len(sigmas) - 1), seed, mask)


class PromptSwitchGuider(comfy.samplers.CFGGuider):
    """A CFG guider holding extra named conditionings (e.g. a DiffEdit source prompt) next to
    positive/negative; ``positive_key`` picks which one acts as the positive at each call. All of them
    go through ComfyUI's own cond processing (ControlNet, areas, hooks)."""

    def __init__(self, model_patcher):
        super().__init__(model_patcher)
        self.positive_key = "positive"

    def set_named_conds(self, positive, negative, **extra):
        self.inner_set_conds({"positive": positive, "negative": negative, **extra})

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                                self.conds.get(self.positive_key), self.cfg,
                                                model_options=model_options, seed=seed)


class EngineLoopSampler(comfy.samplers.KSAMPLER):
    """Runs an engine algorithm (SDE-Drag, Cycle-SDE edits…) inside the guider's prepared sampling
    context, with the guider as the denoiser. ``algorithm(denoiser, latent, callback) -> latent``;
    the denoiser accepts ``cfg=`` and ``prompt=`` overrides per call (guidance ramps, prompt pairs)."""

    def __init__(self, algorithm, total_steps: int):
        super().__init__(None)
        self.algorithm = algorithm
        self.total_steps = total_steps

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        args = {k: v for k, v in extra_args.items() if k != "denoise_mask"}
        base_cfg = model_wrap.cfg

        def denoiser(x, sigma, cfg=None, prompt=None):
            model_wrap.cfg = base_cfg if cfg is None else cfg
            model_wrap.positive_key = prompt or "positive"
            return model_wrap(x, sigma, **args)

        def report(info):
            if callback is not None:
                callback(info.step, info.denoised, info.x, self.total_steps)

        try:
            return self.algorithm(denoiser, latent_image, report)
        finally:
            model_wrap.cfg, model_wrap.positive_key = base_cfg, "positive"


def run_engine_loop(model, positive, negative, latent: torch.Tensor, *, cfg: float, sigmas: torch.Tensor,
                    algorithm, total_steps: int, seed: int, extra_conds: dict | None = None) -> torch.Tensor:
    """Run ``algorithm`` (see :class:`EngineLoopSampler`) on a ComfyUI MODEL with progress, previews
    and the interrupt check at every step; returns the latent in ComfyUI's latent space."""
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    guider = _guider(model, positive, negative, cfg, **(extra_conds or {}))
    return _sample(guider, model, torch.zeros_like(latent), latent, EngineLoopSampler(algorithm, total_steps), sigmas,
                   total_steps, seed)


def _guider(model, positive, negative, cfg: float, **extra_conds) -> "PromptSwitchGuider":
    guider = PromptSwitchGuider(model)
    guider.set_named_conds(positive, negative, **extra_conds)
    guider.set_cfg(cfg)
    return guider


def _sample(guider, model, noise, latent, sampler, sigmas, total_steps: int, seed: int, mask=None) -> torch.Tensor:
    """Sample through ComfyUI's guider with its progress bar, latent previews and interrupt check."""
    out = guider.sample(noise, latent, sampler, sigmas.to(torch.float32), denoise_mask=mask,
                        callback=latent_preview.prepare_callback(model, total_steps),
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return out.to(comfy.model_management.intermediate_device())
