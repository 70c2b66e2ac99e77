"""The ComfyUI backend: ComfyUI's own guider is the engine's σ-space denoiser.

Sampling goes through ``comfy.samplers.CFGGuider`` so that everything ComfyUI attaches to a model —
LoRA weight patches, ControlNet inside the conditioning, CFG, hooks, model patches and wrappers, ε or
v prediction — applies exactly as in the core samplers. The guider hands our :class:`SDEditKSampler`
a callable ``model_wrap(x, sigma, model_options=…, seed=…)`` that returns the denoised latent in the
k-diffusion convention, which is precisely the engine's denoiser interface; the sampling math itself
is ``sdedit_engine.core.sdedit``.

**Flow-matching models** (ComfyUI ``CONST``: SD3/SD3.5, Flux, AuraFlow, Qwen-Image, Chroma, HiDream, a
model patched by ``ModelSamplingSD3/Flux/AuraFlow``, …) keep ComfyUI's own coordinates on the outside:
SIGMAS are flow s ∈ [0, 1] and the guider sees s. Inside the sampler the guider is wrapped by
:class:`~sdedit_engine.core.flow.FlowDenoiser` (S = s/(1 − s), x̃ = x/(1 − s)) and the engine runs in
S. That change of variables *is* ComfyUI's ``noise_scaling`` (x = s·noise + (1 − s)·latent ⇔
x̃ = latent + S·noise) and ``inverse_noise_scaling`` (x/(1 − s) = x̃); the kept area of a mask is
re-noised by the same rule. A SIGMAS list that starts at s = 1 (pure noise, S = ∞) starts at
``percent_to_sigma(1e-4)`` instead, as ComfyUI's own SDE samplers do; one that does not end at 0 is
refused (the engine's output is the clean latent).
"""

from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..sdedit_engine.core.flow import PURE_NOISE_OFFSET, FlowDenoiser, FlowSchedule, check_t0_scale, flow_to_ve, is_flow
from ..sdedit_engine.core.noise import NoiseSource, normalize_seeds
from ..sdedit_engine.core.samplers import get_sampler
from ..sdedit_engine.core.schedules import DEFAULT_SPACING, DiscreteSchedule
from ..sdedit_engine.core.sdedit import KNOWN_NOISE_MODES, sdedit


def is_flow_sampling(sampling) -> bool:
    return isinstance(sampling, comfy.model_sampling.CONST)


def model_schedule(model, t0_scale: str = "model"):
    """The noise schedule of a ComfyUI MODEL: a :class:`DiscreteSchedule` from its σ table, or for a
    flow-matching (CONST) model a :class:`FlowSchedule` with the model's own shift (SD3/AuraFlow-style
    ``ModelSamplingDiscreteFlow``, Flux-style ``ModelSamplingFlux``, otherwise its s table).
    ``t0_scale`` ('model' or 'sd15_snr') says how t0 reads on a flow model; a discrete model's t0 is
    its own timestep either way."""
    check_t0_scale(t0_scale)
    sampling = model.get_model_object("model_sampling")
    if is_flow_sampling(sampling):
        return _flow_schedule(sampling, t0_scale)
    if not hasattr(sampling, "sigmas"):
        raise ValueError(f"model: its noise schedule ({type(sampling).__name__}) has no sigma table SDEdit can read")
    return DiscreteSchedule.from_sigmas(sampling.sigmas.detach().float().cpu())


def _flow_schedule(sampling, t0_scale: str) -> FlowSchedule:
    table = getattr(sampling, "sigmas", None)
    n = int(table.numel()) if isinstance(table, torch.Tensor) else 1000
    if isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow):
        shift = float(sampling.shift)
        if not shift > 0:
            raise ValueError(f"model: its flow shift is {shift:g}; a shift must be > 0 (ModelSamplingSD3 / "
                             "ModelSamplingAuraFlow 'shift': 1 = none, SD3 3.0, AuraFlow 1.73)")
        return FlowSchedule.sd3(shift, num_timesteps=n, t0_scale=t0_scale)
    if isinstance(sampling, comfy.model_sampling.ModelSamplingFlux):
        return FlowSchedule.flux(float(sampling.shift), num_timesteps=n, t0_scale=t0_scale)
    if table is None:
        raise ValueError(f"model: flow model with a schedule SDEdit cannot read ({type(sampling).__name__}, no sigma table)")
    try:
        return FlowSchedule.from_sigmas(table.detach().double().cpu(), t0_scale=t0_scale)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None


def native_sigma_grid(schedule, t0: float, steps: int, spacing: str = DEFAULT_SPACING) -> torch.Tensor:
    """The σ grid in the model's own coordinates (what ComfyUI SIGMAS carry): flow s on flow models."""
    return schedule.flow_sigma_grid(t0, steps, spacing) if is_flow(schedule) else schedule.sigma_grid(t0, steps, spacing)


def native_sigmas(model, engine_sigmas: torch.Tensor) -> torch.Tensor:
    """Engine σ (S) → the model's SIGMAS coordinates."""
    if is_flow_sampling(model.get_model_object("model_sampling")):
        s = torch.as_tensor(engine_sigmas, dtype=torch.float64)
        return s / (1.0 + s)
    return engine_sigmas


def describe_start(schedule, t0: float) -> str:
    """One line for a node's output: where t0 starts (σ, and for flow models s, S and log-SNR)."""
    if is_flow(schedule):
        d = schedule.describe_t0(t0)
        return (f"t0 {t0:g} ({d['t0_scale']} scale): flow sigma {d['flow_sigma']:.4f} (model time "
                f"{d['model_time']:.4f}), engine sigma S = s/(1-s) {d['sigma']:.4f}, log-SNR {d['log_snr']:.3f}")
    sigma = schedule.t0_to_sigma(t0)
    return f"t0 {t0:g}: sigma {sigma:.4f}, log-SNR {-2.0 * math.log(sigma):.3f}"


def guidance_distilled(model) -> bool:
    """True for guidance-distilled models (Flux-dev: guidance is a model input; Flux-schnell), which have
    no true CFG: cfg > 1 then doubles the cost and leaves the distribution the model was distilled for."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    unet = getattr(config, "unet_config", None) or {}
    return bool(unet.get("guidance_embed")) or type(config).__name__ == "FluxSchnell"


def cfg_note(model, cfg: float) -> str:
    """A warning line when cfg > 1 is used on a guidance-distilled model ('' otherwise)."""
    if cfg > 1.0 and guidance_distilled(model):
        msg = (f"cfg {cfg:g} on a guidance-distilled model (Flux-dev/schnell): it has no true CFG, so cfg > 1 doubles "
               "the model calls and pushes it off what it was distilled for; set cfg 1 and use FluxGuidance for the "
               "guidance strength")
        logging.warning("SDEdit: %s", msg)
        return msg
    return ""


def engine_view(model_wrap, sigmas, fn=None):
    """(denoiser, engine σ) for ComfyUI's model wrapper and native SIGMAS: flow models get the
    :class:`FlowDenoiser` bridge, with the exact SIGMAS values handed to the guider."""
    fn = model_wrap if fn is None else fn
    sampling = model_wrap.inner_model.model_sampling
    if not is_flow_sampling(sampling):
        return fn, sigmas
    s = torch.as_tensor(sigmas).detach().flatten().to(torch.float64).cpu()
    if s.numel() < 2 or float(s[-1]) != 0.0:
        raise ValueError("sigmas: on a flow-matching model the SDEdit sampler needs sigmas that end at 0 (the clean "
                         "latent); use the full list of SDEdit Sigmas / a scheduler, not the high half of SplitSigmas")
    if bool((s > 1).any()) or bool((s < 0).any()):
        raise ValueError("sigmas: flow-matching sigmas must lie in [0, 1]")
    if float(s[0]) >= 1.0:  # pure noise: S = ∞; start just below, as ComfyUI's SDE samplers do
        s[0] = float(sampling.percent_to_sigma(PURE_NOISE_OFFSET))
    native = s.to(torch.float32)
    return FlowDenoiser(fn, levels=native), flow_to_ve(native.to(torch.float64))


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
        denoiser, engine_sigmas = engine_view(model_wrap, sigmas)

        def report(info):
            if callback is not None:  # progress bar, latent preview and the interrupt check
                callback(info.step, info.denoised, info.x, info.total)

        x = sdedit(
            denoiser,
            guide,
            sigmas=engine_sigmas,
            sampler=self.sampler_name,
            mask=mask,
            repeats=self.repeats,
            seed=int(args.get("seed") or 0),
            known_noise=self.known_noise,
            init_noise=noise.to(guide.dtype),
            extra_args=args,
            callback=report,
        )
        if denoiser is not model_wrap:  # flow: x̃ at S = 0 is the clean latent (= inverse_noise_scaling(0, x))
            return x
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
    spacing: str = DEFAULT_SPACING,
    known_noise: str = "fresh",
    t0_scale: str = "model",
) -> torch.Tensor:
    """SDEdit one batch of VAE latents (ComfyUI's latent space) with a ComfyUI MODEL and conditioning.

    ``mask`` is a pixel- or latent-resolution editable mask (B or 1, 1, H, W); ComfyUI resizes it to the
    latent grid bilinearly. Noise comes from the engine's per-item seeded CPU generators, so the
    same seed gives the same result as the Python engine and whatever the batch.
    """
    sigmas = native_sigma_grid(model_schedule(model, t0_scale), t0, steps, spacing)
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

        def guided(x, sigma, cfg=None, prompt=None):
            # ComfyUI works on float32 latents: a float64 chain (Cycle-SDE) feeds the model float32 and
            # gets D back in its own dtype
            model_wrap.cfg = base_cfg if cfg is None else cfg
            model_wrap.positive_key = prompt or "positive"
            work = latent_image.dtype
            return model_wrap(x.to(work), sigma.to(torch.float32), **args).to(x.dtype)

        denoiser = guided
        if is_flow_sampling(model_wrap.inner_model.model_sampling):  # the algorithm walks engine σ (S) levels
            denoiser = FlowDenoiser(guided, levels=torch.as_tensor(sigmas).detach().flatten().float().cpu())

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
    return _sample(guider, model, torch.zeros_like(latent), latent, EngineLoopSampler(algorithm, total_steps),
                   native_sigmas(model, sigmas), total_steps, seed)


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
