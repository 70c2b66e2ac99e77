"""sdedit_engine: SDEdit and SDE-based editing over any σ-space denoiser (torch only, no ComfyUI).

Backends (ComfyUI's model objects, diffusers) implement one small interface — ``denoiser(x, sigma,
**cond) -> x0 estimate`` with ``x = x0 + σ·ε`` — and every algorithm here runs on top of it.
"""

from .core.conversions import (
    comfy_denoise_sigmas,
    comfy_denoise_to_t0,
    strength_to_t0,
    t0_to_comfy_denoise,
    t0_to_strength,
)
from .core.denoisers import CountingDenoiser, Denoiser, DiscreteTimeDenoiser
from .core.flow import FlowDenoiser, FlowSchedule
from .core.noise import NoiseSource, derive_seed, normalize_seeds
from .core.samplers import SAMPLER_NAMES, SAMPLERS, SamplingCancelled, Stepper, StepInfo, get_sampler, run_sampler
from .core.schedules import SPACINGS, DiscreteSchedule
from .core.sdedit import KNOWN_NOISE_MODES, MaskedDenoiser, sdedit, sdedit_sigmas
from .core.tiling import TiledDenoiser, blend_tiles

__version__ = "0.1.0"

from . import _compat  # noqa: E402

_compat.install(__name__)  # old flat module paths keep importing, with a DeprecationWarning


def __getattr__(name):
    """``SDEditPipeline`` (the diffusers backend) is imported on first use, so the engine itself
    never pulls in diffusers or transformers (inside ComfyUI it does not need them)."""
    if name in ("SDEditPipeline", "SDEditOutput"):
        from .pipelines import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CountingDenoiser",
    "DiscreteSchedule",
    "DiscreteTimeDenoiser",
    "FlowDenoiser",
    "FlowSchedule",
    "Denoiser",
    "KNOWN_NOISE_MODES",
    "MaskedDenoiser",
    "NoiseSource",
    "SAMPLERS",
    "SDEditOutput",
    "SDEditPipeline",
    "SAMPLER_NAMES",
    "SPACINGS",
    "SamplingCancelled",
    "StepInfo",
    "Stepper",
    "TiledDenoiser",
    "blend_tiles",
    "comfy_denoise_sigmas",
    "comfy_denoise_to_t0",
    "derive_seed",
    "get_sampler",
    "normalize_seeds",
    "run_sampler",
    "sdedit",
    "sdedit_sigmas",
    "strength_to_t0",
    "t0_to_comfy_denoise",
    "t0_to_strength",
]
