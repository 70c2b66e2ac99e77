"""Flow-matching models (SD3/SD3.5, Flux, AuraFlow, Qwen-Image, Chroma, HiDream, …) as engine denoisers.

A flow model noises with ``x_s = (1 − s)·x0 + s·ε``, s ∈ [0, 1] (s = 1 is pure noise), and predicts a
velocity ``v ≈ ε − x0``, so its denoised estimate is ``D = x − s·v`` (ComfyUI ``CONST``, diffusers
``FlowMatch*``). With

    S = s / (1 − s)   and   x̃ = x / (1 − s) = x0 + S·ε

the same process is the VE process ``x̃ = x0 + S·ε`` that every engine algorithm speaks, and

    D̃(x̃, S) = D_flow((1 − s)·x̃, s),   s = S / (1 + S).

:class:`FlowDenoiser` is that change of variables; :class:`FlowSchedule` hands the samplers σ grids
in S. Samplers, the SDEdit mask rule (``guide + S·n`` ⇔ ``(1 − s)·guide + s·n``), repeats, Cycle-SDE,
SDE-Drag, SDE inpainting and DiffEdit-SDE therefore run on flow models without a second copy of their
math. Two identities follow: DDIM in S is exactly the flow Euler step ``x_{s'} = x_s + (s' − s)·v``,
and the ancestral step is the flow DDPM posterior. log-SNR = −2·log S in both coordinates.

**Model time and shifts.** A flow model is trained on a time t ∈ [0, 1] mapped to s by a shift:
``none`` (s = t), SD3-style ``time_snr_shift(a, t) = a·t / (1 + (a − 1)·t)`` (SD3 a = 3, AuraFlow 1.73,
Lumina2 6, HiDream 3) or Flux-style ``flux_time_shift(μ, t) = e^μ / (e^μ + 1/t − 1)`` (Flux-dev
μ = 1.15 at 1024², μ linear in the token count, :func:`flux_mu`). ComfyUI's ``percent_to_sigma(p)`` is
``shift(1 − p)``.

**t0.** Two scales, one per schedule (``t0_scale``):

- ``"model"`` (default, the paper's meaning): t0 is the model's own time, s(t0) = shift(t0), equal to
  ComfyUI's ``percent_to_sigma(1 − t0)``. t0 = 1 means pure noise; since S(1) = ∞ it starts at
  ``shift(1 − 1e-4)`` (ComfyUI's own offset for SDE solvers, ``percent_to_sigma(1e-4)``): the guide
  then weighs 1e-4 of the start, i.e. nothing a sampler can see.
- ``"sd15_snr"``: t0 gives the log-SNR that SD1.5's t0 gives (S = σ_SD1.5(t0) of the scaled-linear
  table), so t0 = 0.5 destroys as much structure on Flux as on SD1.5 — the fix for the flow img2img
  "denoise cliff" (nothing changes below strength ≈ 0.75, then a different image).

**Grids** (``sigma_grid``, engine S, ``steps + 1`` values ending at 0):

- ``uniform`` (default): model times evenly spaced from the start down to 1/T (T = the model's table
  length: 1000 for SD3/AuraFlow, 10000 for Flux, as in ComfyUI), then 0 — like the UNet's
  every-timestep grid, and close to diffusers' FlowMatchEuler grid (``linspace(1, 1/N, N)``).
- ``karras``: Karras ρ = 7 spacing in S between S(start) and S(1/T), then 0.
- ``exponential``: evenly spaced in log S between S(start) and S(1/T), then 0 (the engine's default
  spacing for the SDE samplers, see :meth:`DiscreteSchedule.sigma_grid`).

ComfyUI's own schedulers on a CONST model (``simple``, ``normal``, ``sgm_uniform``, ``karras``,
``beta``) are rebuilt in :mod:`~sdedit_engine.core.conversions` for comparison: ``simple`` and
``normal`` are near-uniform in model time over [1/T, 1], ``karras`` spaces s (not S) by ρ = 7 over
[s(1/T), 1], ``beta`` puts Beta(0.6, 0.6) quantiles of model time on the table.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Optional

import torch

from .schedules import DiscreteSchedule, check_steps, check_t0

ShiftKind = Literal["none", "sd3", "flux"]
SHIFT_KINDS: tuple[str, ...] = ("none", "sd3", "flux", "table")
T0Scale = Literal["model", "sd15_snr"]
T0_SCALES: tuple[str, ...] = ("model", "sd15_snr")
FLOW_PREDICTIONS: tuple[str, ...] = ("denoised", "velocity")
PURE_NOISE_OFFSET = 1e-4  # t0 = 1 starts at model time 1 − 1e-4 (ComfyUI's percent_to_sigma(1e-4))

_SD15 = DiscreteSchedule.scaled_linear()


def time_snr_shift(alpha: float, t):
    """SD3-style shift ``a·t / (1 + (a − 1)·t)`` (ComfyUI ``time_snr_shift``, diffusers ``shift``)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return alpha * t / (1.0 + (alpha - 1.0) * t)


def flux_time_shift(mu: float, t):
    """Flux-style shift ``e^μ / (e^μ + 1/t − 1)`` (ComfyUI ``flux_time_shift(μ, 1, t)``); 0 at t = 0."""
    t = torch.as_tensor(t, dtype=torch.float64)
    e = math.exp(mu)
    safe = torch.where(t > 0, t, torch.ones_like(t))
    return torch.where(t > 0, e / (e + (1.0 / safe - 1.0)), torch.zeros_like(t))  # ComfyUI's order of operations


def flux_mu(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Resolution-dependent Flux μ: linear in the token count ``W·H/256`` (pixels, 2×2 patches of the
    8× latent) from (256 tokens, base_shift) to (4096, max_shift) — ComfyUI's ``ModelSamplingFlux``
    node and diffusers' ``calculate_shift``. 1024² gives max_shift."""
    for name, v in (("width", width), ("height", height)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number of pixels, got {v!r}")
    slope = (max_shift - base_shift) / (4096 - 256)
    return float(width * height / 256.0 * slope + base_shift - slope * 256)


def check_shift(shift, name: str = "shift") -> float:
    """A finite shift > 0 (SD3 a or Flux μ-free multiplier); 0 or negative shifts collapse the schedule."""
    try:
        value = float(shift)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {shift!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 (1 = no shift; SD3 uses 3.0, AuraFlow 1.73), got {shift!r}")
    return value


def check_t0_scale(t0_scale: str) -> str:
    if t0_scale not in T0_SCALES:
        raise ValueError(
            f"t0_scale must be one of {T0_SCALES} ('model': the model's own time, ComfyUI percent_to_sigma(1 - t0); "
            f"'sd15_snr': the log-SNR SD1.5 has at the same t0), got {t0_scale!r}"
        )
    return t0_scale


def flow_to_ve(s):
    """S = s / (1 − s) (inf at s = 1)."""
    s = torch.as_tensor(s, dtype=torch.float64)
    return s / (1.0 - s)


def ve_to_flow(sigma):
    """s = S / (1 + S) (1 at S = inf)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1.0 + sigma))


class FlowSchedule:
    """A flow-matching noise schedule; engine-facing σ values (``t0_to_sigma``, ``sigma_grid``) are S.

    Build with :meth:`sd3`, :meth:`flux`, :meth:`flux_resolution`, :meth:`from_sigmas` (a ComfyUI
    ``model_sampling.sigmas`` table) or ``FlowSchedule()`` (no shift). ``flow_sigma(t)`` maps model
    time to s, ``model_time(s)`` back.
    """

    kind = "flow"

    def __init__(self, shift: float = 1.0, shift_kind: str = "sd3", *, table=None, num_timesteps: int = 1000,
                 t0_scale: T0Scale = "model"):
        self.t0_scale = check_t0_scale(t0_scale)
        if table is not None:
            tab = torch.as_tensor(table, dtype=torch.float64).flatten().cpu()
            if tab.numel() < 2 or not bool(torch.isfinite(tab).all()) or bool((tab <= 0).any()) or bool((tab > 1).any()):
                raise ValueError("sigmas table of a flow model must hold at least 2 values in (0, 1]")
            if bool((tab[1:] <= tab[:-1]).any()):
                raise ValueError("sigmas table of a flow model must be strictly increasing (model time 1/T … 1)")
            self.shift_kind, self.shift, self.table = "table", 1.0, tab
            self.num_timesteps = tab.numel()
            self._times = torch.arange(1, tab.numel() + 1, dtype=torch.float64) / tab.numel()
        else:
            if shift_kind not in ("none", "sd3", "flux"):
                raise ValueError(f"shift_kind must be one of ('none', 'sd3', 'flux'), got {shift_kind!r}")
            if shift_kind == "flux":
                try:
                    self.shift = float(shift)
                except (TypeError, ValueError):
                    raise ValueError(f"mu (Flux shift) must be a finite number, got {shift!r}") from None
                if not math.isfinite(self.shift):
                    raise ValueError(f"mu (Flux shift) must be a finite number, got {shift!r}")
            else:
                self.shift = check_shift(shift) if shift_kind == "sd3" else 1.0
            self.shift_kind, self.table = shift_kind, None
            self.num_timesteps = check_steps(num_timesteps, "num_timesteps")

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def sd3(cls, shift: float = 3.0, num_timesteps: int = 1000, t0_scale: T0Scale = "model") -> "FlowSchedule":
        return cls(shift, "sd3", num_timesteps=num_timesteps, t0_scale=t0_scale)

    @classmethod
    def flux(cls, mu: float = 1.15, num_timesteps: int = 10000, t0_scale: T0Scale = "model") -> "FlowSchedule":
        return cls(mu, "flux", num_timesteps=num_timesteps, t0_scale=t0_scale)

    @classmethod
    def flux_resolution(cls, width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15,
                        t0_scale: T0Scale = "model") -> "FlowSchedule":
        return cls.flux(flux_mu(width, height, base_shift, max_shift), t0_scale=t0_scale)

    @classmethod
    def from_sigmas(cls, sigmas, t0_scale: T0Scale = "model") -> "FlowSchedule":
        """From a table of s at model times i/T, i = 1…T (ComfyUI ``model_sampling.sigmas``)."""
        return cls(table=sigmas, t0_scale=t0_scale)

    def with_t0_scale(self, t0_scale: T0Scale) -> "FlowSchedule":
        clone = object.__new__(FlowSchedule)
        clone.__dict__.update(self.__dict__)
        clone.t0_scale = check_t0_scale(t0_scale)
        return clone

    def __repr__(self) -> str:
        what = "table" if self.table is not None else f"{self.shift_kind}, shift={self.shift:.4g}"
        return f"FlowSchedule({what}, T={self.num_timesteps}, t0_scale={self.t0_scale!r})"

    # -- model time ↔ s ---------------------------------------------------------------------------------
    def flow_sigma(self, t) -> torch.Tensor:
        """s of model time t ∈ [0, 1] (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
        if self.shift_kind == "sd3":
            return time_snr_shift(self.shift, t)
        if self.shift_kind == "flux":
            return flux_time_shift(self.shift, t)
        if self.shift_kind == "table":
            times = torch.cat([self._times.new_zeros(1), self._times])
            vals = torch.cat([self.table.new_zeros(1), self.table])
            return _interp(t, times, vals)
        return t

    def model_time(self, s) -> torch.Tensor:
        """Inverse of :meth:`flow_sigma`."""
        s = torch.as_tensor(s, dtype=torch.float64).clamp(0.0, 1.0)
        if self.shift_kind == "sd3":
            return s / (self.shift - (self.shift - 1.0) * s)
        if self.shift_kind == "flux":
            e = math.exp(self.shift)
            return s / (s + e * (1.0 - s))
        if self.shift_kind == "table":
            times = torch.cat([self._times.new_zeros(1), self._times])
            vals = torch.cat([self.table.new_zeros(1), self.table])
            return _interp(s, vals, times)
        return s

    # -- t0 --------------------------------------------------------------------------------------------
    def t0_to_flow_sigma(self, t0: float) -> float:
        """Flow s where SDEdit starts for this t0 under ``self.t0_scale`` (< 1, see the module doc)."""
        t0 = check_t0(t0)
        if self.t0_scale == "sd15_snr":
            sd = _SD15.t0_to_sigma(t0)
            return sd / (1.0 + sd)
        return float(self.flow_sigma(min(t0, 1.0 - PURE_NOISE_OFFSET)))

    def t0_to_sigma(self, t0: float) -> float:
        """Engine σ (S) of the start."""
        return float(flow_to_ve(self.t0_to_flow_sigma(t0)))

    def flow_sigma_to_t0(self, s: float) -> float:
        """The t0 (under ``self.t0_scale``) whose start is flow s."""
        if self.t0_scale == "sd15_snr":
            return min(max(_SD15.sigma_to_t0(float(flow_to_ve(s))), 0.0), 1.0)
        return float(self.model_time(s))

    def sigma_to_t0(self, sigma: float) -> float:
        """The t0 whose start is engine σ (S)."""
        return self.flow_sigma_to_t0(float(ve_to_flow(sigma)))

    def describe_t0(self, t0: float) -> dict:
        """Start of a t0: model time, flow s, engine S and log-SNR (for node output and docs)."""
        s = self.t0_to_flow_sigma(t0)
        big_s = float(flow_to_ve(s))
        return {"t0": float(t0), "t0_scale": self.t0_scale, "model_time": float(self.model_time(s)),
                "flow_sigma": s, "sigma": big_s, "log_snr": -2.0 * math.log(big_s)}

    # -- grids ------------------------------------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        """Lowest S > 0 of the table (model time 1/T)."""
        return float(flow_to_ve(self.flow_sigma(1.0 / self.num_timesteps)))

    @property
    def sigma_max(self) -> float:
        """Highest S a start can have (t0 = 1)."""
        return float(flow_to_ve(self.flow_sigma(1.0 - PURE_NOISE_OFFSET)))

    def flow_sigma_grid(self, t0: float, steps: int, spacing: str = "uniform", rho: float = 7.0) -> torch.Tensor:
        """Descending flow-s grid from s(t0) to 0 (``steps + 1`` values): what ComfyUI SIGMAS carry."""
        steps = check_steps(steps)
        s0 = self.t0_to_flow_sigma(t0)
        t_start = float(self.model_time(s0))
        t_end = min(1.0 / self.num_timesteps, t_start / steps)
        if spacing == "uniform":
            ts = torch.linspace(t_start, t_end, steps, dtype=torch.float64) if steps > 1 else torch.tensor([t_start], dtype=torch.float64)
            sig = self.flow_sigma(ts)
        elif spacing == "exponential":  # evenly spaced in log S (the engine's σ), as for the UNet tables
            hi, lo = math.log(float(flow_to_ve(s0))), math.log(float(flow_to_ve(self.flow_sigma(t_end))))
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            sig = ve_to_flow((hi + ramp * (lo - hi)).exp()) if steps > 1 else torch.tensor([s0], dtype=torch.float64)
        elif spacing == "karras":
            hi, lo = float(flow_to_ve(s0)) ** (1 / rho), float(flow_to_ve(self.flow_sigma(t_end))) ** (1 / rho)
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            sig = ve_to_flow((hi + ramp * (lo - hi)) ** rho) if steps > 1 else torch.tensor([s0], dtype=torch.float64)
        else:
            raise ValueError(f"spacing must be one of ('exponential', 'uniform', 'karras'), got {spacing!r}")
        sig[0] = s0  # the start exactly
        return torch.cat([sig, sig.new_zeros(1)])

    def sigma_grid(self, t0: float, steps: int, spacing: str = "uniform", rho: float = 7.0) -> torch.Tensor:
        """The same grid in engine σ (S), for the samplers."""
        return flow_to_ve(self.flow_sigma_grid(t0, steps, spacing, rho))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) for increasing ``xp``."""
    flat = x.flatten().cpu()
    hi = torch.searchsorted(xp, flat).clamp(1, xp.numel() - 1)
    lo = hi - 1
    w = ((flat - xp[lo]) / (xp[hi] - xp[lo])).clamp(0, 1)
    return (fp[lo] + w * (fp[hi] - fp[lo])).reshape(x.shape)


def is_flow(schedule: Any) -> bool:
    return getattr(schedule, "kind", None) == "flow"


class FlowDenoiser:
    """A flow model as an engine σ-space denoiser: ``D̃(x̃, S) = D_flow((1 − S/(1+S))·x̃, S/(1+S))``.

    ``model_fn(x_s, s, **cond)`` gets the flow sample and flow s (shape (B,)) and returns the denoised
    latent (``prediction="denoised"``, e.g. ComfyUI's model wrapper) or the velocity
    ``v = ε − x0`` (``"velocity"``, e.g. a diffusers transformer wrapped to take s; then D = x − s·v).
    The returned D is the same object in both coordinates (x0 is x0). ``model_dtype`` is what the
    network is fed; the result comes back in the dtype of ``x``.
    """

    def __init__(self, model_fn: Callable[..., torch.Tensor], schedule: Optional[FlowSchedule] = None,
                 prediction: str = "denoised", model_dtype: Optional[torch.dtype] = None, levels=None):
        if prediction not in FLOW_PREDICTIONS:
            raise ValueError(f"prediction must be one of {FLOW_PREDICTIONS}, got {prediction!r}")
        if schedule is not None and not is_flow(schedule):
            raise ValueError(f"schedule must be a FlowSchedule, got {type(schedule).__name__}")
        self.model_fn = model_fn
        self.schedule = schedule
        self.prediction = prediction
        self.model_dtype = model_dtype
        # exact flow levels (e.g. a ComfyUI SIGMAS tensor): an engine σ that is the float32/float64
        # image of one of them hands the model that level bit for bit, not a rounded round trip
        self._snap: dict[float, float] = {}
        if levels is not None:
            for s_level in torch.as_tensor(levels).flatten().tolist():
                if 0.0 <= s_level < 1.0:
                    big = float(flow_to_ve(s_level))
                    self._snap[big] = s_level
                    self._snap[float(torch.tensor(big, dtype=torch.float32))] = s_level

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        big = sigma.to(torch.float64)
        if bool(torch.isinf(big).any()):
            raise ValueError("sigma = inf (flow s = 1) cannot be represented in engine coordinates; start below "
                             "pure noise (FlowSchedule.t0_to_sigma(1.0) does)")
        s = big / (1.0 + big)
        if self._snap:
            s = torch.tensor([self._snap.get(v, float(w)) for v, w in zip(big.tolist(), s.tolist())],
                             dtype=torch.float64, device=big.device)
        keep = (1.0 / (1.0 + big)).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # 1 − s, exactly at S = 0
        x_flow = x * keep
        s_in = s.to(sigma.dtype if sigma.is_floating_point() else torch.float32)
        out = self.model_fn(x_flow if self.model_dtype is None else x_flow.to(self.model_dtype), s_in, **cond).to(x.dtype)
        if self.prediction == "velocity":
            out = x_flow - s.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * out
        return out
