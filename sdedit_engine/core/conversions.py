"""Converting the paper's t0 to and from diffusers ``strength`` and ComfyUI ``denoise``.

The three numbers are different things:

- **t0** (this engine, the paper): a noise level. σ(t0) is the σ of timestep round(t0·T) − 1, whatever
  the number of steps or the sampler; the solver then takes ``steps`` steps from there to 0.
- **diffusers strength s**: a fraction of the scheduler's N inference timesteps. img2img keeps the last
  ⌊N·s⌋ of them, so the start timestep is quantised to the N-grid and the step count shrinks with s.
- **ComfyUI denoise d**: KSampler builds a schedule of ⌊S/d⌋ steps and runs its last S, so the start σ
  depends on the scheduler: "denoise 0.5" starts near t = 500 with ``simple`` but near t = 405 with
  ``karras`` (a much weaker edit) on SD1.5.

The helpers below return the *effective* t0 of a strength/denoise setting and the setting closest to a
wanted t0; they reproduce the libraries' truncation rules without importing either library.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .schedules import DiscreteSchedule, check_steps, check_t0

COMFY_SCHEDULERS: tuple[str, ...] = ("simple", "normal", "sgm_uniform", "karras")


# -- diffusers --------------------------------------------------------------------------------------
def strength_to_t0(strength: float, timesteps: Sequence[float], num_train_timesteps: int = 1000, order: int = 1) -> float:
    """Effective t0 of diffusers img2img at ``strength`` for a scheduler's full ``timesteps`` list.

    diffusers keeps ``timesteps[(N − min(⌊N·s⌋, N))·order:]``; the first kept timestep t gives
    t0 = (t + 1)/T. Returns 0.0 when the truncation keeps no step (diffusers then does nothing).
    """
    ts = [float(t) for t in timesteps]
    n = len(ts) // max(int(order), 1)
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    init = min(int(n * float(strength)), n)
    if init == 0:
        return 0.0
    return (ts[(n - init) * order] + 1.0) / num_train_timesteps


def t0_to_strength(t0: float, timesteps: Sequence[float], num_train_timesteps: int = 1000, order: int = 1) -> float:
    """The diffusers ``strength`` whose first kept timestep is closest to the paper's t0 start index."""
    target = round(check_t0(t0) * num_train_timesteps) - 1
    ts = [float(t) for t in timesteps]
    n = len(ts) // max(int(order), 1)
    if n == 0:
        raise ValueError("timesteps is empty; call scheduler.set_timesteps(N) first")
    best = min(range(1, n + 1), key=lambda k: (abs(ts[(n - k) * order] - target), k))
    strength = best / n
    while int(n * strength) < best:  # guard against float truncation in diffusers' int(N * s)
        strength = math.nextafter(strength, 2.0)
    return min(strength, 1.0)


# -- ComfyUI ----------------------------------------------------------------------------------------
def comfy_scheduler_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int) -> torch.Tensor:
    """σ lists of ComfyUI's timestep schedulers (``steps + 1`` values ending at 0), rebuilt from their
    definitions: ``simple`` takes every (T/S)-th table σ from the top, ``normal``/``sgm_uniform`` space
    timesteps evenly from T − 1 to 0, ``karras`` uses ρ = 7 between σ_min and σ_max."""
    steps = check_steps(steps)
    table = schedule.sigmas
    T = schedule.num_timesteps
    if scheduler == "simple":
        stride = T / steps
        sig = torch.stack([table[-(1 + int(i * stride))] for i in range(steps)])
    elif scheduler == "normal":
        sig = schedule.t_to_sigma(torch.linspace(T - 1, 0, steps, dtype=torch.float64))
    elif scheduler == "sgm_uniform":
        sig = schedule.t_to_sigma(torch.linspace(T - 1, 0, steps + 1, dtype=torch.float64)[:-1])
    elif scheduler == "karras":
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        hi, lo = schedule.sigma_max ** (1 / 7), schedule.sigma_min ** (1 / 7)
        sig = (hi + ramp * (lo - hi)) ** 7
    else:
        raise ValueError(f"scheduler must be one of {COMFY_SCHEDULERS}, got {scheduler!r}")
    return torch.cat([sig.to(torch.float64), sig.new_zeros(1, dtype=torch.float64)])


def comfy_denoise_sigmas(schedule: DiscreteSchedule, denoise: float, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """The σ list ComfyUI's KSampler runs for (steps, denoise): the last steps + 1 of a ⌊S/d⌋-step schedule."""
    steps = check_steps(steps)
    if not 0.0 < float(denoise) <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise!r}")
    total = int(steps / float(denoise)) if denoise < 1.0 else steps
    return comfy_scheduler_sigmas(schedule, scheduler, total)[-(steps + 1):]


def comfy_denoise_to_t0(schedule: DiscreteSchedule, denoise: float, steps: int, scheduler: str = "simple") -> float:
    """Effective paper t0 of ComfyUI ``KSampler(steps, denoise, scheduler)``: (t(σ_start) + 1)/T."""
    return schedule.sigma_to_t0(float(comfy_denoise_sigmas(schedule, denoise, steps, scheduler)[0]))


def t0_to_comfy_denoise(schedule: DiscreteSchedule, t0: float, steps: int, scheduler: str = "simple") -> float:
    """The ComfyUI ``denoise`` whose start σ is closest (in log σ) to σ(t0) for this scheduler and steps.

    Searches the schedule lengths KSampler can build (⌊S/d⌋ ∈ [S, 100·S]) and returns d = S/length.
    """
    steps = check_steps(steps)
    target = math.log(schedule.t0_to_sigma(t0))
    best_total, best_err = steps, math.inf
    for total in range(steps, 100 * steps + 1):
        err = abs(math.log(_comfy_start_sigma(schedule, scheduler, total, total - steps)) - target)
        if err < best_err:
            best_total, best_err = total, err
    denoise = steps / best_total
    while denoise < 1.0 and int(steps / denoise) > best_total:
        denoise = math.nextafter(denoise, 2.0)
    return denoise


def _comfy_start_sigma(schedule: DiscreteSchedule, scheduler: str, total: int, index: int) -> float:
    """Entry ``index`` of :func:`comfy_scheduler_sigmas` without building the whole list."""
    T = schedule.num_timesteps
    if scheduler == "simple":
        return float(schedule.sigmas[-(1 + int(index * (T / total)))])
    if scheduler in ("normal", "sgm_uniform"):
        n = total - 1 if scheduler == "normal" else total
        t = (T - 1) * (1.0 - index / n) if n > 0 else T - 1
        return float(schedule.t_to_sigma(torch.tensor(t, dtype=torch.float64)))
    if scheduler == "karras":
        frac = index / (total - 1) if total > 1 else 0.0
        hi, lo = schedule.sigma_max ** (1 / 7), schedule.sigma_min ** (1 / 7)
        return (hi + frac * (lo - hi)) ** 7
    raise ValueError(f"scheduler must be one of {COMFY_SCHEDULERS}, got {scheduler!r}")
