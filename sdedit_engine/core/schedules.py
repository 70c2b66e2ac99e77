"""Noise schedules in σ-space, and the paper's t0 as an exact noise level.

Every backend speaks the k-diffusion convention ``x = x0 + σ·ε``. A discrete VP model (SD1.x/2.x/XL,
pixel DDPM) is described by its ``alphas_cumprod`` table ᾱ_i; its σ-table is
``σ_i = sqrt((1 − ᾱ_i) / ᾱ_i)``. The schedule owns the σ ↔ timestep map and the σ grids the samplers
walk, so the sampling math never needs to know which library the model came from.

Flow-matching models (``x = (1 − s)·x0 + s·ε``, s ∈ [0, 1]) have their own schedule class,
:class:`~sdedit_engine.core.flow.FlowSchedule` (``kind = "flow"``), whose engine-facing σ is
S = s/(1 − s), so the samplers need no flow-specific code.
"""

from __future__ import annotations

import math
import operator
from typing import Literal, Sequence

import torch

from .defaults import DEFAULT_SPACING, SPACINGS  # noqa: F401  (the one home of the defaults)
from .validation import check_sigmas

Spacing = Literal["exponential", "uniform", "karras"]


def scaled_linear_alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = 1000
) -> torch.Tensor:
    """ᾱ table of SD1.x/SD2.x/SDXL: betas linear in sqrt-space (ComfyUI's and diffusers' "scaled_linear")."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def linear_alphas_cumprod(
    beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000
) -> torch.Tensor:
    """ᾱ table of the original pixel DDPM (Ho et al.), which the official SDEdit code uses."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def check_t0(t0: float) -> float:
    """Validate the paper's t0 ∈ (0, 1]; return it as a float."""
    try:
        value = float(t0)
    except (TypeError, ValueError):
        raise ValueError(f"t0 must be a number in (0, 1], got {t0!r}") from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"t0 must be in (0, 1] (a noise level: 0 = keep the guide, 1 = pure noise), got {t0!r}")
    return value


MAX_STEPS = 10_000  # 10× the 1000-step table; beyond it a run is a typo, not a finer solve


def check_steps(steps: int, name: str = "steps") -> int:
    """Validate a step count in 1..MAX_STEPS (bools and fractional numbers are refused)."""
    if isinstance(steps, bool):
        raise ValueError(f"{name} must be a positive integer, got {steps!r}")
    try:
        value = operator.index(steps)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {steps!r}") from None
    if not 1 <= value <= MAX_STEPS:
        raise ValueError(f"{name} must be in 1..{MAX_STEPS}, got {steps!r}")
    return value


class DiscreteSchedule:
    """A discrete-time VP schedule seen in σ-space (``kind = "ve"``: ``x = x0 + σ·ε``).

    ``sigma_to_t`` interpolates linearly in log σ, so σ values taken from the table map back to exact
    integer timesteps while σ values in between (Karras grids) get fractional timesteps, which
    continuous timestep embeddings accept.
    """

    kind = "ve"

    def __init__(self, alphas_cumprod: torch.Tensor | Sequence[float]):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten().cpu()
        if ac.numel() < 2:
            raise ValueError(f"alphas_cumprod needs at least 2 entries, got {ac.numel()}")
        if not torch.isfinite(ac).all() or (ac <= 0).any() or (ac >= 1).any():
            raise ValueError("alphas_cumprod must hold finite values strictly between 0 and 1")
        if (ac[1:] >= ac[:-1]).any():
            raise ValueError("alphas_cumprod must be strictly decreasing (timestep 0 = least noise)")
        self.alphas_cumprod = ac
        self.sigmas = ((1.0 - ac) / ac).sqrt()
        self.log_sigmas = self.sigmas.log()

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> "DiscreteSchedule":
        return cls(alphas_cumprod)

    @classmethod
    def from_sigmas(cls, sigmas) -> "DiscreteSchedule":
        """Build from a σ table (e.g. ComfyUI's ``model_sampling.sigmas``), ascending in timestep."""
        s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
        return cls(1.0 / (1.0 + s * s))

    @classmethod
    def scaled_linear(cls, beta_start=0.00085, beta_end=0.012, num_timesteps=1000) -> "DiscreteSchedule":
        return cls(scaled_linear_alphas_cumprod(beta_start, beta_end, num_timesteps))

    @classmethod
    def linear(cls, beta_start=1e-4, beta_end=0.02, num_timesteps=1000) -> "DiscreteSchedule":
        return cls(linear_alphas_cumprod(beta_start, beta_end, num_timesteps))

    # -- properties ---------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return self.sigmas.numel()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def __repr__(self) -> str:
        return (
            f"DiscreteSchedule(T={self.num_timesteps}, sigma_min={self.sigma_min:.4g}, "
            f"sigma_max={self.sigma_max:.4g})"
        )

    # -- maps ----------------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
        """The forward marginal at level σ in this schedule's coordinates: ``x0 + σ·noise``."""
        return x0 + noise * sigma

    def sigma_to_t(self, sigma) -> torch.Tensor:
        """Continuous timestep of σ (float64), by linear interpolation in log σ, clamped to the table."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        log_sigma = sigma.clamp_min(self.sigma_min).log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        high = torch.searchsorted(self.log_sigmas, log_sigma.flatten().cpu()).clamp(1, self.num_timesteps - 1)
        low = high - 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((log_sigma.flatten().cpu() - lo) / (hi - lo)).clamp(0, 1)
        return (low.to(torch.float64) + w).reshape(sigma.shape).to(sigma.device)

    def t_to_sigma(self, t) -> torch.Tensor:
        """σ of a (possibly fractional) timestep, interpolating log σ."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        low = t.floor().long().cpu()
        high = t.ceil().long().cpu()
        w = (t.cpu() - low.to(torch.float64))
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        # integer timesteps return the table value itself (exp(log σ) would be off in the last bit)
        return torch.where(w == 0, self.sigmas[low], log_sigma.exp()).to(t.device)

    def t0_to_timestep(self, t0: float) -> int:
        """The paper's start index τ − 1 with τ = round(t0·T), clamped to the table."""
        t0 = check_t0(t0)
        return min(max(int(round(t0 * self.num_timesteps)) - 1, 0), self.num_timesteps - 1)

    def t0_to_sigma(self, t0: float) -> float:
        """σ(t0): the σ of discrete timestep round(t0·T) − 1, exactly as the official SDEdit code."""
        return float(self.sigmas[self.t0_to_timestep(t0)])

    def sigma_to_t0(self, sigma: float) -> float:
        """Inverse of :meth:`t0_to_sigma` on the continuous timestep: t0 = (t(σ) + 1) / T."""
        return float(self.sigma_to_t(torch.tensor(float(sigma), dtype=torch.float64))) / self.num_timesteps + 1.0 / self.num_timesteps

    # -- grids ---------------------------------------------------------------------------------------
    def sigma_grid(self, t0: float, steps: int, spacing: Spacing = DEFAULT_SPACING, rho: float = 7.0) -> torch.Tensor:
        """Descending σ grid from σ(t0) to 0 with at most ``steps`` solver steps (``steps + 1`` values).

        ``exponential`` (default): σ evenly spaced in log σ (the exponential integrators' time λ = −log σ)
        from σ(t0) down to σ_min, so every step has the same h = Δλ: the spacing chosen for SDEdit's
        truncated range (BENCHMARKS.md §2: with ``dpmpp_2m_sde`` it matches the exact SDEdit law with
        10 model calls, where the uniform grid's last step — a jump of 1.7 in log σ on the DDPM table —
        left the 20-step spread 20 % short). ``uniform``: timesteps evenly spaced from round(t0·T) − 1
        down to 0, so ``steps = round(t0·T)`` visits every discrete timestep (the official loop);
        fractional timesteps between table entries get σ interpolated in log σ. ``karras``: Karras et
        al.'s ρ-spacing between σ(t0) and σ_min. All end with σ = 0 (a final denoise).

        The grid never holds a repeated σ (:func:`check_sigmas` drops repeats). The one case where
        that shortens it is σ(t0) = σ_min, i.e. t0 < 1.5/T (the paper's t0 = 1/T): there is a single
        noise level, so the grid is ``[σ_min, 0]`` — one model call, a plain denoise — whatever
        ``steps`` asks for, exactly as the official loop runs one step at t0·T = 1.
        """
        steps = check_steps(steps)
        start_t = self.t0_to_timestep(t0)
        if spacing == "uniform":
            ts = torch.linspace(float(start_t), 0.0, steps, dtype=torch.float64) if steps > 1 else torch.tensor(
                [float(start_t)], dtype=torch.float64
            )
            sig = self.t_to_sigma(ts)
            sig[0] = self.sigmas[start_t]  # exact table values at the ends
            if steps > 1:
                sig[-1] = self.sigmas[0]
        elif spacing == "exponential":
            s_max, s_min = float(self.sigmas[start_t]), self.sigma_min
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            sig = (math.log(s_max) + ramp * (math.log(s_min) - math.log(s_max))).exp()
            sig = sig.clamp(s_min, s_max)
            sig[0] = s_max
            if steps > 1:
                sig[-1] = s_min
        elif spacing == "karras":
            s_max, s_min = float(self.sigmas[start_t]), self.sigma_min
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            hi, lo = s_max ** (1 / rho), s_min ** (1 / rho)
            sig = (hi + ramp * (lo - hi)) ** rho if steps > 1 else torch.tensor([s_max], dtype=torch.float64)
            sig = sig.clamp(s_min, s_max)  # rounding must not lift a level above σ(t0) when σ(t0) = σ_min
            sig[0] = s_max
            if steps > 1:
                sig[-1] = s_min
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        return check_sigmas(torch.cat([sig, sig.new_zeros(1)]))
