"""SDE inpainting and DiffEdit-SDE (Nie et al., ICLR 2024, Sec. 5), each with its ODE (DDIM) twin.

- **Inpainting**: start the masked area from pure noise (t0 = 1) and solve with the kept area
  re-noised from the image at every step. ``mode="sde"`` uses DDPM (η = 1), ``mode="ode"`` DDIM (η = 0);
  the paper finds the SDE better at every step count (Table 2).
- **DiffEdit** (image-to-image with source and target prompts inside a mask): the ODE version inverts
  the image with DDIM under the source prompt and decodes with DDIM under the target prompt; the SDE
  version forward-noises instead and decodes with Cycle-SDE, whose recorded noise is computed with the
  source prompt and replayed under the target prompt. Outside the mask both restore the stored
  chain after every step, so those latents return exactly.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch

from .cycle import CycleTrajectory, cycle_decode, cycle_encode, cycle_sigmas
from .noise import NoiseSource, normalize_seeds
from .samplers import Callback, Stepper, offset_callback
from .schedules import check_steps
from .sdedit import sdedit
from .validation import check_finite_tensor, check_mask

Mode = Literal["sde", "ode"]


def _check_mode(mode: str) -> None:
    if mode not in ("sde", "ode"):
        raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")


def sde_inpaint(
    denoiser,
    latent: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int = 50,
    mode: Mode = "sde",
    seed: int | Sequence[int] = 0,
    extra_args: Optional[dict] = None,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Fill the masked area (1 = fill) from pure noise with the SDE (DDPM) or its ODE twin (DDIM)."""
    _check_mode(mode)
    if mask is None:
        raise ValueError("mask is required: it marks the area to fill (1 = fill, 0 = keep)")
    return sdedit(denoiser, latent, t0=1.0, steps=steps, sampler="ddpm" if mode == "sde" else "ddim", mask=mask,
                  seed=seed, known_noise="fixed", extra_args=extra_args, callback=callback)


def ddim_invert(
    denoiser,
    x0: torch.Tensor,
    sigmas,
    *,
    extra_args: Optional[dict] = None,
    callback: Optional[Callback] = None,
) -> CycleTrajectory:
    """DDIM inversion up the (descending) levels: each step re-uses D at the lower level (the usual
    approximation, whose error is why the ODE twin does not reconstruct exactly)."""
    run = Stepper(denoiser, torch.as_tensor(sigmas).flatten().flip(0), callback, extra_args, what="DDIM inversion")
    states = [x0]
    for k, lo, hi in run.steps():  # ascending: σ_k → σ_{k+1} > σ_k
        z = states[-1]
        d = run.denoise(z, lo, k)
        run.report(k, z, d, lo, hi)
        states.append(d + (hi / lo) * (z - d))
    return CycleTrajectory(run.sigmas[::-1], states[::-1])


def _ddim_decode(denoiser, z, traj: CycleTrajectory, mask, extra_args, callback):
    run = Stepper(denoiser, traj.sigmas, callback, extra_args, what="DDIM")
    for i, s, s_next in run.steps():
        d = run.denoise(z, s, i)
        run.report(i, z, d, s, s_next)
        z = d + (s_next / s) * (z - d)
        if mask is not None:
            z = mask * z + (1 - mask) * traj.states[i + 1]
    return z


def diffedit(
    denoiser,
    latent: torch.Tensor,
    mask: Optional[torch.Tensor],
    *,
    source_args: dict,
    target_args: dict,
    t0: float = 0.7,
    steps: int = 35,
    mode: Mode = "sde",
    seed: int | Sequence[int] = 0,
    sigmas=None,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Edit ``latent`` from the source prompt's content to the target prompt's, inside ``mask``.

    ``source_args`` / ``target_args`` are the denoiser's keyword arguments for each prompt. Costs
    2·steps denoiser calls either way (record or invert, then decode).
    """
    _check_mode(mode)
    latent = check_finite_tensor("latent", latent, min_ndim=2)
    mask = check_mask(mask, latent)
    if sigmas is None:
        schedule = getattr(denoiser, "schedule", None)
        if schedule is None:
            raise ValueError("the denoiser has no schedule to turn t0 into sigma; pass `sigmas=` explicitly")
        sigmas = cycle_sigmas(schedule, t0, steps)
    total = 2 * (len(torch.as_tensor(sigmas).flatten()) - 1)
    first, second = offset_callback(callback, 0, total), offset_callback(callback, total // 2, total)
    if mode == "ode":
        traj = ddim_invert(denoiser, latent, sigmas, extra_args=source_args, callback=first)
        out = _ddim_decode(denoiser, traj.start, traj, mask, target_args, second)
    else:
        traj = cycle_encode(denoiser, latent, sigmas, seed=seed, extra_args=source_args, callback=first)
        out = cycle_decode(denoiser, traj.start, traj, mask=mask, extra_args=target_args, callback=second)
    return out if mask is None else torch.where(mask == 0, latent, out)


def diffedit_mask(
    denoiser,
    latent: torch.Tensor,
    *,
    source_args: dict,
    target_args: dict,
    t0: float = 0.5,
    repeats: int = 10,
    threshold: float = 0.5,
    seed: int | Sequence[int] = 0,
    callback: Optional[Callback] = None,
    schedule=None,
) -> torch.Tensor:
    """DiffEdit's automatic mask: where the two prompts' denoised estimates disagree, averaged over
    ``repeats`` noise draws at σ(t0), normalised per image and thresholded. Shape (B, 1, h, w).
    Costs 2·repeats denoiser calls; ``callback`` sees one step per draw. ``schedule`` (default: the
    denoiser's) turns t0 into σ."""
    latent = check_finite_tensor("latent", latent, min_ndim=3)
    schedule = schedule if schedule is not None else getattr(denoiser, "schedule", None)
    if schedule is None:
        raise ValueError("the denoiser has no schedule to turn t0 into sigma")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer (noise draws), got {repeats!r}")
    sigma = schedule.t0_to_sigma(t0)
    noise = NoiseSource.like(latent, normalize_seeds(seed, latent.shape[0]), stream="diffedit/mask")
    run = Stepper(denoiser, [sigma] * (repeats + 1), callback, what="DiffEdit mask", unit="draw")
    diff = torch.zeros_like(latent[:, :1])
    for k, _, _ in run.steps():  # one draw per "step", all at σ(t0)
        z = latent + sigma * noise()
        d_src = run.denoise(z, sigma, extra_args=source_args)
        d_tgt = run.denoise(z, sigma, extra_args=target_args)
        run.report(k, z, d_tgt, sigma, sigma)
        diff += (d_src - d_tgt).abs().mean(dim=1, keepdim=True)
    flat = diff.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    norm = ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(diff.shape)
    return (norm > threshold).to(latent.dtype)


def diffedit_steps(steps: int, mask_given: bool, mask_repeats: int = 10) -> int:
    """Total callback steps of :func:`auto_diffedit`: the mask draws (none with a given mask), then
    the record/inversion pass and the decoding pass of ``steps`` each."""
    return 2 * check_steps(steps) + (0 if mask_given else check_steps(mask_repeats, "mask_repeats"))


def auto_diffedit(
    denoiser,
    latent: torch.Tensor,
    mask: Optional[torch.Tensor],
    *,
    source_args: dict,
    target_args: dict,
    sigmas,
    mode: Mode = "sde",
    seed: int | Sequence[int] = 0,
    mask_t0: float = 0.5,
    mask_repeats: int = 10,
    mask_threshold: float = 0.5,
    schedule=None,
    callback: Optional[Callback] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffEdit as one run: without a ``mask``, first DiffEdit's automatic mask (:func:`diffedit_mask`,
    ``mask_repeats`` draws at ``mask_t0``, threshold ``mask_threshold``), then :func:`diffedit` on the
    ``sigmas`` levels. ``callback`` sees the steps numbered over the whole run (0 …
    :func:`diffedit_steps` − 1: mask draws, then record/invert, then decode). Returns
    ``(edited latent, the latent mask used)``. ``schedule`` (default: the denoiser's) maps ``mask_t0``
    to σ."""
    _check_mode(mode)
    if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, float)) or not 0.0 <= mask_threshold <= 1.0:
        raise ValueError(f"mask_threshold must be a number in [0, 1], got {mask_threshold!r}")
    if isinstance(mask_t0, bool) or not isinstance(mask_t0, (int, float)) or not 0.0 < mask_t0 <= 1.0:
        raise ValueError(f"mask_t0 must be a number in (0, 1], got {mask_t0!r}")
    steps = len(torch.as_tensor(sigmas).flatten()) - 1
    draws = 0 if mask is not None else check_steps(mask_repeats, "mask_repeats")
    total = diffedit_steps(steps, mask is not None, draws)
    if mask is None:
        mask = diffedit_mask(denoiser, latent, source_args=source_args, target_args=target_args, t0=float(mask_t0),
                             repeats=draws, threshold=float(mask_threshold), seed=seed, schedule=schedule,
                             callback=offset_callback(callback, 0, total))
    out = diffedit(denoiser, latent, mask, source_args=source_args, target_args=target_args, sigmas=sigmas, mode=mode,
                   seed=seed, callback=offset_callback(callback, draws, total))
    return out, mask
