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

**Flow schedules** (:class:`~sdedit_engine.core.flow.FlowSchedule`): the ComfyUI helpers accept them and
then speak ComfyUI's own coordinates for CONST models (flow s ∈ [0, 1], shift included), and t0 is
read under the schedule's ``t0_scale``. diffusers' flow img2img (SD3, Flux, …) truncates differently
from the UNet pipelines — ``t_start = int(N − min(N·strength, N))`` with a float product — so it has its
own pair, :func:`flow_strength_to_t0` / :func:`t0_to_flow_strength`, on the scheduler's ``sigmas``.
Side by side on SD3 (shift 3), 20 steps, "0.5": engine t0 = 0.5 starts at s = 0.75 (model time 0.5);
ComfyUI denoise 0.5 starts at s = 0.750 with ``simple``, 0.741 with ``normal``, 0.751 with ``beta`` but
0.092 with ``karras`` (ρ = 7 spacing of s: model time 0.03, almost no edit); diffusers strength 0.5
(default FlowMatchEuler grid) at s = 0.731 (model time 0.475).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from .flow import is_flow
from .schedules import check_steps, check_t0

COMFY_SCHEDULERS: tuple[str, ...] = ("simple", "normal", "sgm_uniform", "karras", "beta")


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
def comfy_scheduler_sigmas(schedule, scheduler: str, steps: int) -> torch.Tensor:
    """σ lists of ComfyUI's schedulers (``steps + 1`` values ending at 0), rebuilt from their definitions.

    On a discrete table: ``simple`` takes every (T/S)-th table σ from the top, ``normal``/``sgm_uniform``
    space timesteps evenly from T − 1 to 0, ``karras`` uses ρ = 7 between σ_min and σ_max, ``beta``
    puts Beta(0.6, 0.6) quantiles on the table (duplicates dropped). On a flow schedule the values are
    flow s (ComfyUI's CONST coordinates) on the table s(i/T), i = 1…T: ``simple`` as above,
    ``normal``/``sgm_uniform`` space the model's timestep (= s) evenly and shift it again, ``karras``
    spaces s^(1/7) over [s(1/T), 1], ``beta`` as above.
    """
    steps = check_steps(steps)
    if scheduler not in COMFY_SCHEDULERS:
        raise ValueError(f"scheduler must be one of {COMFY_SCHEDULERS}, got {scheduler!r}")
    if scheduler == "beta":
        T = schedule.num_timesteps
        q = 1.0 - torch.arange(steps, dtype=torch.float64) / steps
        idx = torch.unique_consecutive(_beta_table_index(q, T))
        sig = _table_sigma(schedule, idx)
    else:
        sig = torch.tensor([_comfy_start_sigma(schedule, scheduler, steps, i) for i in range(steps)], dtype=torch.float64)
    return torch.cat([sig.to(torch.float64), sig.new_zeros(1, dtype=torch.float64)])


def comfy_denoise_sigmas(schedule, denoise: float, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """The σ list ComfyUI's KSampler runs for (steps, denoise): the last steps + 1 of a ⌊S/d⌋-step schedule."""
    steps = check_steps(steps)
    if not 0.0 < float(denoise) <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise!r}")
    total = int(steps / float(denoise)) if denoise < 1.0 else steps
    return comfy_scheduler_sigmas(schedule, scheduler, total)[-(steps + 1):]


def comfy_denoise_to_t0(schedule, denoise: float, steps: int, scheduler: str = "simple") -> float:
    """Effective t0 of ComfyUI ``KSampler(steps, denoise, scheduler)``: (t(σ_start) + 1)/T on a discrete
    table; on a flow schedule the t0 (under its ``t0_scale``) whose start is that flow s."""
    start = float(comfy_denoise_sigmas(schedule, denoise, steps, scheduler)[0])
    return schedule.flow_sigma_to_t0(start) if is_flow(schedule) else schedule.sigma_to_t0(start)


def t0_to_comfy_denoise(schedule, t0: float, steps: int, scheduler: str = "simple") -> float:
    """The ComfyUI ``denoise`` whose start is closest to the start of t0 (in log σ; in model time on a
    flow schedule) for this scheduler and steps.

    Searches the schedule lengths KSampler can build (⌊S/d⌋ ∈ [S, 100·S]) and returns d = S/length.
    """
    steps = check_steps(steps)
    flow = is_flow(schedule)
    key = (lambda s: float(schedule.model_time(s))) if flow else (lambda s: math.log(s))
    target = key(schedule.t0_to_flow_sigma(t0) if flow else schedule.t0_to_sigma(t0))
    best_total, best_err = steps, math.inf
    for total in range(steps, 100 * steps + 1):
        if scheduler == "beta":
            start = float(comfy_scheduler_sigmas(schedule, "beta", total)[-(steps + 1)]) if total >= steps else math.inf
        else:
            start = _comfy_start_sigma(schedule, scheduler, total, total - steps)
        err = abs(key(start) - target)
        if err < best_err:
            best_total, best_err = total, err
    denoise = steps / best_total
    while denoise < 1.0 and int(steps / denoise) > best_total:
        denoise = math.nextafter(denoise, 2.0)
    return denoise


def _table_sigma(schedule, index) -> torch.Tensor:
    """ComfyUI's ``model_sampling.sigmas[index]`` (ascending table; on flow schedules s((index + 1)/T))."""
    index = torch.as_tensor(index)
    if is_flow(schedule):
        return schedule.flow_sigma((index.to(torch.float64) + 1.0) / schedule.num_timesteps)
    return schedule.sigmas[index.long()]


def _comfy_start_sigma(schedule, scheduler: str, total: int, index: int) -> float:
    """Entry ``index`` of :func:`comfy_scheduler_sigmas` (not ``beta``) without building the whole list."""
    T = schedule.num_timesteps
    flow = is_flow(schedule)
    if scheduler == "simple":
        return float(_table_sigma(schedule, T - 1 - int(index * (T / total))))
    if scheduler in ("normal", "sgm_uniform"):
        n = total - 1 if scheduler == "normal" else total
        frac = index / n if n > 0 else 0.0
        if flow:  # timestep(s) = s·multiplier, sigma(ts) = shift(ts/multiplier): spaced in s, shifted again
            hi, lo = float(_table_sigma(schedule, T - 1)), float(_table_sigma(schedule, 0))
            return float(schedule.flow_sigma(hi + frac * (lo - hi)))
        return float(schedule.t_to_sigma(torch.tensor((T - 1) * (1.0 - frac), dtype=torch.float64)))
    if scheduler == "karras":
        frac = index / (total - 1) if total > 1 else 0.0
        hi_s, lo_s = (float(_table_sigma(schedule, T - 1)), float(_table_sigma(schedule, 0))) if flow else (
            schedule.sigma_max, schedule.sigma_min)
        hi, lo = hi_s ** (1 / 7), lo_s ** (1 / 7)
        return (hi + frac * (lo - hi)) ** 7
    raise ValueError(f"scheduler must be one of {COMFY_SCHEDULERS}, got {scheduler!r}")


def _beta_table_index(q: torch.Tensor, T: int, a: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """``rint(BetaDist(a, b).ppf(q)·(T − 1))`` as ComfyUI's ``beta`` scheduler computes it with scipy:
    index i is chosen when q lies between the CDF at (i ∓ ½)/(T − 1)."""
    cdf = _beta_cdf_half_points(T, a, b)
    return torch.searchsorted(cdf, q.to(torch.float64).contiguous(), right=False).clamp(0, T - 1)


@functools.lru_cache(maxsize=8)
def _beta_cdf_half_points(T: int, a: float, b: float) -> torch.Tensor:
    xs = [(i + 0.5) / (T - 1) for i in range(T - 1)]
    return torch.tensor([_betainc(a, b, min(x, 1.0)) for x in xs], dtype=torch.float64)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by the Lentz continued fraction (Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * f / a


# -- diffusers flow img2img (SD3, Flux, Chroma, Qwen-Image, …) ----------------------------------------
def flow_strength_to_t0(schedule, strength: float, sigmas: Sequence[float]) -> float:
    """Effective t0 (under the schedule's ``t0_scale``) of diffusers' flow img2img at ``strength``.

    ``sigmas`` is the FlowMatchEuler scheduler's list after ``set_timesteps(N, mu=…)`` (N values, a
    trailing 0 is ignored); the pipeline starts at index ``int(max(N − min(N·strength, N), 0))``.
    Returns 0.0 when no step is kept.
    """
    if not is_flow(schedule):
        raise ValueError("schedule must be a FlowSchedule (use strength_to_t0 for discrete UNet schedules)")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    sig = _flow_inference_sigmas(sigmas)
    n = len(sig)
    start = int(max(n - min(n * float(strength), n), 0))
    if start >= n:
        return 0.0
    return schedule.flow_sigma_to_t0(sig[start])


def t0_to_flow_strength(schedule, t0: float, sigmas: Sequence[float]) -> float:
    """The diffusers flow-img2img ``strength`` whose start is closest (in model time) to the start of t0."""
    if not is_flow(schedule):
        raise ValueError("schedule must be a FlowSchedule (use t0_to_strength for discrete UNet schedules)")
    sig = _flow_inference_sigmas(sigmas)
    n = len(sig)
    target = float(schedule.model_time(schedule.t0_to_flow_sigma(t0)))
    best = min(range(1, n + 1), key=lambda k: (abs(float(schedule.model_time(sig[n - k])) - target), k))
    strength = best / n
    while int(max(n - min(n * strength, n), 0)) != n - best:  # the pipeline's float product, exactly
        strength = math.nextafter(strength, 2.0 if int(max(n - n * strength, 0)) > n - best else -1.0)
    return min(strength, 1.0)


def _flow_inference_sigmas(sigmas) -> list[float]:
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]
    if sig and sig[-1] == 0.0:
        sig = sig[:-1]
    if not sig:
        raise ValueError("sigmas is empty; call scheduler.set_timesteps(N) first and pass scheduler.sigmas")
    if any(not (0.0 < s <= 1.0) for s in sig):
        raise ValueError("sigmas of a flow scheduler must lie in (0, 1]")
    return sig
