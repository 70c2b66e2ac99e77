"""Cycle-SDE (Nie et al., ICLR 2024): noise an image with the forward SDE, record the noise the reverse
SDE would need to come back, and replay it — exact reconstruction without an ODE inversion.

In σ-space with levels σ_0 > σ_1 > … > σ_N > 0 (descending, as the reverse walks them):

- forward (fresh noise, Markov between levels): ``z(σ_i) = z(σ_{i+1}) + sqrt(σ_i² − σ_{i+1}²)·n``,
  starting from the clean latent, which is identified with the lowest level σ_N (never σ = 0: the
  recorded noise would divide by zero there);
- reverse ancestral step σ_t → σ_s with D = D(z_t): ``z_s = D + ρ²(z_t − D) + ρ·sqrt(σ_t² − σ_s²)·w``,
  ρ = σ_s/σ_t (the ``ddpm`` sampler's step);
- recorded noise: ``w_i`` solves that step on the stored unedited pair (z_t^f, z_s^f) with the same
  denoiser and conditioning, so replaying it on the unedited state gives z_s^f exactly, whatever the
  model, CFG or prompt. After an edit the recorded noise ties the trajectory to the input while the
  SDE contracts the edit back toward the data.

``extra_args_fn(i)`` gives per-step conditioning overrides (SDE-Drag's guidance ramp); recording and
replay use the same ones, which exactness requires.

Precision: the chain (states, recorded noise, the replayed state) is kept in float64 while the model
runs in its own dtype (the denoiser casts its input). Replaying computes ``mean + std·w`` with
``w = (z_s − mean)/std``; in float32 that round trip is off by ~1e-7·σ_t per step, which is large at
σ_max = 14.6 and is amplified by the next model call (CFG 7.5 at t0 = 1: 1.7e-4 relative, CFG 30:
O(1)). In float64 the replayed state agrees with the stored one to ~1e-16, so it is cast to the same
model input and gets the same D: the reconstruction is exact to float64 rounding whatever t0, CFG or
model dtype, and the result comes back in the input's dtype. (On devices without float64, e.g. MPS,
the chain stays in the input's dtype.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .noise import NoiseSource, normalize_seeds
from .samplers import Callback, ExtraArgsFn, Stepper, ancestral_mean, ancestral_std
from .schedules import check_steps, check_t0
from .validation import check_finite_tensor, check_mask


@dataclass
class CycleTrajectory:
    """A recorded forward chain: ``states[i]`` is the unedited latent at ``sigmas[i]`` (descending;
    ``states[-1]`` is the clean input) and ``noises[i]`` the noise that takes ``states[i]`` to
    ``states[i + 1]`` under the reverse step."""

    sigmas: list[float]
    states: list[torch.Tensor]
    noises: list[torch.Tensor] = field(default_factory=list)
    dtype: Optional[torch.dtype] = None  # the clean input's dtype, which decoding returns (None: the states')

    @property
    def output_dtype(self) -> torch.dtype:
        return self.dtype if self.dtype is not None else self.states[-1].dtype

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def start(self) -> torch.Tensor:
        """The noisy latent at σ(t0), to edit before :func:`cycle_decode`."""
        return self.states[0]


def cycle_sigmas(schedule, t0: float = 0.6, steps: int = 120) -> torch.Tensor:
    """``steps + 1`` descending levels from σ(t0) to the table's lowest σ (> 0), uniform in timestep.

    The clean input sits at the lowest level, so σ(t0) must lie above it: t0 ≥ 1.5/T (no repeated σ,
    see :meth:`DiscreteSchedule.sigma_grid`).
    """
    levels = schedule.sigma_grid(check_t0(t0), check_steps(steps) + 1, "uniform")[:-1]  # the paper's grid
    if levels.numel() < 2:
        T = getattr(schedule, "num_timesteps", None)
        least = f"; use t0 >= {2 / T:g}" if T else ""
        raise ValueError(
            f"t0 = {t0:g} is the schedule's lowest noise level, where the clean input already sits: "
            f"Cycle-SDE (SDE-Drag, SDE inpainting, DiffEdit) needs at least one step above it{least}"
        )
    return levels


def _check_levels(sigmas) -> list[float]:
    levels = [float(s) for s in torch.as_tensor(sigmas).flatten().tolist()]
    if len(levels) < 2:
        raise ValueError(f"sigmas must hold at least 2 levels (one step), got {len(levels)}")
    if any(not math.isfinite(s) for s in levels) or levels[-1] <= 0:
        raise ValueError("sigmas for Cycle-SDE must be finite and end above 0 (the clean input sits at the last level)")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError("sigmas must be strictly decreasing")
    return levels


def chain_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a Cycle-SDE chain over ``x``: float64, unless ``x``'s device has none (MPS)."""
    return x.dtype if x.device.type == "mps" else torch.float64


def forward_noise(x0: torch.Tensor, sigmas, seed: int | Sequence[int] = 0, stream: str = "cycle/forward") -> list[torch.Tensor]:
    """Forward-noise the clean latent up the levels with fresh noise; returns states aligned with ``sigmas``
    (in ``x0``'s dtype; :func:`cycle_encode` passes a float64 ``x0``)."""
    levels = _check_levels(sigmas)
    noise = NoiseSource.like(x0, normalize_seeds(seed, x0.shape[0]), stream=stream)
    states = [x0]
    for hi, lo in zip(reversed(levels[:-1]), reversed(levels[1:])):
        states.append(states[-1] + math.sqrt(hi * hi - lo * lo) * noise())
    return states[::-1]


def cycle_encode(
    denoiser,
    x0: torch.Tensor,
    sigmas,
    *,
    seed: int | Sequence[int] = 0,
    extra_args: Optional[dict] = None,
    extra_args_fn: Optional[ExtraArgsFn] = None,
    callback: Optional[Callback] = None,
    stream: str = "cycle/forward",
) -> CycleTrajectory:
    """Noise ``x0`` to ``sigmas[0]`` and record the reverse noise (one denoiser call per step).

    The trajectory's states and noises are float64 (see the module notes); ``stream`` names the forward
    noise's sub-stream of the seed (a new name gives new noise)."""
    x0 = check_finite_tensor("x0", x0, min_ndim=2)
    levels = _check_levels(sigmas)
    dtype = chain_dtype(x0)
    states = forward_noise(x0.to(dtype), levels, seed, stream)
    run = Stepper(denoiser, levels, callback, extra_args, extra_args_fn=extra_args_fn, what="Cycle-SDE recording")
    noises = []
    for i, s, s_next in run.steps():
        d = run.denoise(states[i], s, i).to(dtype)
        run.report(i, states[i], d, s, s_next)
        noises.append((states[i + 1] - ancestral_mean(d, states[i], s, s_next)) / ancestral_std(s, s_next))
    return CycleTrajectory(levels, states, noises, x0.dtype)


def cycle_decode(
    denoiser,
    z: torch.Tensor,
    trajectory: CycleTrajectory,
    *,
    mask: Optional[torch.Tensor] = None,
    extra_args: Optional[dict] = None,
    extra_args_fn: Optional[ExtraArgsFn] = None,
    callback: Optional[Callback] = None,
    fresh_noise_in_mask: Optional[NoiseSource] = None,
) -> torch.Tensor:
    """Run the reverse SDE from ``z`` (an edited ``trajectory.start``) with the recorded noise.

    With ``mask`` (1 = editable) the area outside is reset to the recorded chain after every step, so
    it ends exactly at the input; ``fresh_noise_in_mask`` draws fresh noise inside the mask instead of
    the recorded one (SDE-Drag's choice for the dragged content).
    """
    z = check_finite_tensor("z", z, min_ndim=2)
    if z.shape != trajectory.start.shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but the trajectory holds {tuple(trajectory.start.shape)}")
    out_dtype = trajectory.output_dtype
    mask = check_mask(mask, z.to(out_dtype))  # a mask in the input's dtype (exact in the float64 chain)
    dtype = trajectory.start.dtype
    z = z.to(dtype)
    mask = mask.to(dtype) if mask is not None else None
    run = Stepper(denoiser, trajectory.sigmas, callback, extra_args, extra_args_fn=extra_args_fn, what="Cycle-SDE")
    for i, s, s_next in run.steps():
        d = run.denoise(z, s, i).to(dtype)
        run.report(i, z, d, s, s_next)
        w = trajectory.noises[i]
        if fresh_noise_in_mask is not None and mask is not None:
            w = mask * fresh_noise_in_mask().to(dtype) + (1 - mask) * w
        z = ancestral_mean(d, z, s, s_next) + ancestral_std(s, s_next) * w
        if mask is not None:
            z = torch.where(mask > 0, mask * z + (1 - mask) * trajectory.states[i + 1], trajectory.states[i + 1])
    return z.to(out_dtype)


def cycle_reconstruct(denoiser, x0, sigmas, **kwargs) -> torch.Tensor:
    """Encode then decode with no edit: returns ``x0`` up to floating point (a self-check)."""
    encode_keys = ("seed", "extra_args", "extra_args_fn")
    traj = cycle_encode(denoiser, x0, sigmas, **{k: v for k, v in kwargs.items() if k in encode_keys})
    return cycle_decode(denoiser, traj.start, traj, **{k: v for k, v in kwargs.items() if k in ("extra_args", "extra_args_fn")})
