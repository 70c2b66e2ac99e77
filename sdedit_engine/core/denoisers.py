"""The one interface every backend implements: a denoiser in σ-space.

``denoised = denoiser(x, sigma, **cond)`` with ``x = x0 + σ·ε`` (the k-diffusion convention), ``sigma``
a tensor of shape (B,) and ``denoised`` an estimate of ``x0``. ComfyUI's sampler ``model`` already is
such a function; :class:`DiscreteTimeDenoiser` turns an ε- or v-prediction network over a discrete
``alphas_cumprod`` table (diffusers UNets, the official pixel DDPM) into one.

A denoiser may expose ``schedule`` (a :class:`~sdedit_engine.core.schedules.DiscreteSchedule`, or a
:class:`~sdedit_engine.core.flow.FlowSchedule` with ``kind = "flow"``), which SDEdit uses to turn t0
into σ and to build σ grids. Flow-matching (velocity) models become denoisers through
:class:`~sdedit_engine.core.flow.FlowDenoiser`.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch

from .schedules import DiscreteSchedule

PredictionType = Literal["epsilon", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")


@runtime_checkable
class Denoiser(Protocol):
    """``denoiser(x, sigma, **cond) -> denoised``; ``sigma`` has shape (B,)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor: ...


class CountingDenoiser:
    """Counts denoiser calls: the real number of function evaluations (NFE) a method spends, whatever
    its number of stages, CFG passes or repeats.

    ``CountingDenoiser(denoiser)`` wraps any denoiser and forwards its other attributes (``schedule``
    …); ``calls`` is the count so far (set it to 0 to start again). A denoiser class may instead
    subclass it with ``denoiser=None`` and implement :meth:`denoise`, so it counts its own calls
    (:class:`~sdedit_engine.core.analytic.GaussianMixturePrior` does).
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor] | None = None):
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        return self.denoise(x, sigma, **cond)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        if self.denoiser is None:
            raise NotImplementedError(f"{type(self).__name__} wraps no denoiser and does not implement denoise()")
        return self.denoiser(x, sigma, **cond)

    def __getattr__(self, name: str):
        inner = self.__dict__.get("denoiser")
        if inner is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)


class DiscreteTimeDenoiser:
    """Wrap ``model_fn(x_in, t, **cond) -> ε or v`` of a discrete VP model as a σ-space denoiser.

    The network sees the VP sample ``x_in = x / sqrt(1 + σ²)`` (= sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε) and the
    timestep ``t = schedule.sigma_to_t(σ)``; then

    - ε-prediction: ``D = x − σ·ε̂``
    - v-prediction (v = sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x0): ``D = x/(1 + σ²) − σ/sqrt(1 + σ²)·v̂``

    ``model_dtype`` (e.g. float16 on CUDA) is what the network is fed; the result comes back in the
    dtype of ``x`` so the solver's arithmetic keeps full precision.
    """

    def __init__(
        self,
        model_fn: Callable[..., torch.Tensor],
        schedule: DiscreteSchedule,
        prediction_type: PredictionType = "epsilon",
        model_dtype: torch.dtype | None = None,
        timestep_dtype: torch.dtype | None = None,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
        self.model_fn = model_fn
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.model_dtype = model_dtype
        self.timestep_dtype = timestep_dtype

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        x_in = x / (1.0 + s * s).sqrt()
        t = self.schedule.sigma_to_t(sigma).to(device=x.device, dtype=self.timestep_dtype or torch.float32)
        if self.model_dtype is not None:
            x_in = x_in.to(self.model_dtype)
        out = self.model_fn(x_in, t, **cond).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s * out
        return x / (1.0 + s * s) - s / (1.0 + s * s).sqrt() * out
