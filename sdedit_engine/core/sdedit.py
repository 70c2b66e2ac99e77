"""SDEdit (Meng et al., ICLR 2022) over any σ-space denoiser.

Perturb the guide to the noise level σ(t0), then solve the reverse SDE down to 0 with the diffusion
prior. t0 trades realism (large t0) against faithfulness (small t0). With a mask (1 = editable,
0 = keep, soft values honoured) the kept area is the guide re-noised to the current σ at every model
call, so both areas carry the same noise level and the edit harmonises with its surroundings; the
model's estimate there is replaced by the guide, and the result equals the guide exactly where the
mask is 0. K repeats re-noise the previous result to σ(t0) with fresh noise and solve again.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch

from .noise import NoiseSource, normalize_seeds
from .samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, Callback, get_sampler, offset_callback
from .schedules import DEFAULT_SPACING, check_steps, check_t0
from .validation import check_finite_tensor, check_mask, check_sigmas

KnownNoise = Literal["fresh", "fixed"]
KNOWN_NOISE_MODES: tuple[str, ...] = ("fresh", "fixed")


class MaskedDenoiser:
    """The masked-SDEdit rule as a denoiser wrapper, so it works under any sampler (multistep too).

    At every call with current σ the kept area of the input is replaced by ``guide + σ·n`` and the
    kept area of the output by ``guide``. ``n`` is fresh noise per call (``known_noise`` a callable)
    or one fixed tensor per repeat (the official code's and ComfyUI's behaviour).
    """

    def __init__(self, denoiser, guide: torch.Tensor, mask: torch.Tensor, known_noise):
        self.denoiser = denoiser
        self.guide = guide
        self.mask = mask
        self.known_noise = known_noise
        self.schedule = getattr(denoiser, "schedule", None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        n = self.known_noise() if callable(self.known_noise) else self.known_noise
        known = self.guide + s * n
        x_in = self.mask * x + (1.0 - self.mask) * known
        d = self.denoiser(x_in, sigma, **cond)
        return self.mask * d + (1.0 - self.mask) * self.guide


def sdedit_sigmas(denoiser_or_schedule, t0: float = 0.5, steps: int = DEFAULT_STEPS, spacing: str = DEFAULT_SPACING) -> torch.Tensor:
    """The σ grid SDEdit walks: from σ(t0) down to 0 in ``steps`` solver steps."""
    schedule = getattr(denoiser_or_schedule, "schedule", denoiser_or_schedule)
    if not hasattr(schedule, "sigma_grid"):
        raise ValueError(
            "the denoiser has no schedule to turn t0 into sigma; pass `sigmas=` explicitly or a denoiser with `.schedule`"
        )
    return check_sigmas(schedule.sigma_grid(check_t0(t0), check_steps(steps), spacing))


def sdedit(
    denoiser,
    guide: torch.Tensor,
    *,
    t0: float = 0.5,
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    mask: Optional[torch.Tensor] = None,
    repeats: int = 1,
    seed: int | Sequence[int] = 0,
    spacing: str = DEFAULT_SPACING,
    known_noise: KnownNoise = "fresh",
    callback: Optional[Callback] = None,
    extra_args: Optional[dict] = None,
    sigmas: Optional[torch.Tensor] = None,
    init_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Edit ``guide`` (a batch of latents, shape (B, …)) with SDEdit and return the result.

    Args:
        denoiser: ``denoiser(x, sigma, **extra_args) -> x0 estimate`` with a ``.schedule`` (unless
            ``sigmas`` is given).
        guide: the guide latent(s): strokes, a composite, a photo with strokes — VAE-encoded.
        t0: noise level in (0, 1] as in the paper: σ(t0) is the σ of timestep round(t0·T) − 1.
        steps: solver steps from σ(t0) to 0 (model calls per repeat for first-order samplers).
        sampler: ``ddpm``, ``euler_maruyama``, ``dpmpp_2m_sde`` or the ODE twins ``ddim``, ``dpmpp_2m``.
        mask: optional editable region, broadcastable to ``guide``; 1 = edit, 0 = keep exactly.
        repeats: K; each repeat re-noises the previous result to σ(t0) with fresh noise.
        seed: int (item i uses seed + i) or one int per item; noise is drawn on per-item CPU generators.
        spacing: ``exponential`` (default: even in log σ), ``uniform`` in timestep (the paper) or ``karras``.
        known_noise: ``fresh`` noise for the kept area at every call, or ``fixed`` (one tensor per repeat).
        callback: ``callback(StepInfo)``; returning True cancels (raises ``SamplingCancelled``).
        extra_args: keyword arguments passed to every denoiser call (conditioning).
        sigmas: an explicit descending σ grid (overrides t0, steps and spacing).
        init_noise: the noise of the first repeat's perturbation (e.g. from ComfyUI's NOISE object).
    """
    spec = get_sampler(sampler)
    guide = check_finite_tensor("guide", guide, min_ndim=2)
    if known_noise not in KNOWN_NOISE_MODES:
        raise ValueError(f"known_noise must be one of {KNOWN_NOISE_MODES}, got {known_noise!r}")
    repeats = check_steps(repeats, "repeats")
    if sigmas is None:
        sigmas = sdedit_sigmas(denoiser, t0, steps, spacing)
    else:
        sigmas = check_sigmas(sigmas)
    mask = check_mask(mask, guide)
    if init_noise is not None:
        init_noise = check_finite_tensor("init_noise", init_noise)
        if init_noise.shape != guide.shape:
            raise ValueError(f"init_noise has shape {tuple(init_noise.shape)}, expected {tuple(guide.shape)}")
    if mask is not None and not bool(mask.any()):
        return guide.clone()  # nothing is editable: the model is never called

    seeds = normalize_seeds(seed, guide.shape[0])
    n_steps = sigmas.numel() - 1
    sigma0 = float(sigmas[0])
    x = guide
    for r in range(repeats):
        start_noise = NoiseSource.like(guide, seeds, stream=f"init/{r}").draw()
        if r == 0 and init_noise is not None:
            start_noise = init_noise.to(device=guide.device, dtype=guide.dtype)
        x = x + sigma0 * start_noise
        den = denoiser
        if mask is not None:
            known = NoiseSource.like(guide, seeds, stream=f"known/{r}") if known_noise == "fresh" else start_noise
            den = MaskedDenoiser(denoiser, guide, mask, known)
        x = spec.fn(
            den,
            x,
            sigmas,
            noise_sampler=NoiseSource.like(guide, seeds, stream=f"step/{r}"),
            callback=offset_callback(callback, r * n_steps, repeats * n_steps, r),
            extra_args=extra_args,
        )
        if mask is not None:
            x = torch.where(mask == 0, guide, x)
    return x
