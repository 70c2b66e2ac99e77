"""sdedit_engine: SDEdit and SDE-based editing over any σ-space denoiser (torch only, no ComfyUI).

Backends (ComfyUI's model objects, diffusers) implement one small interface — ``denoiser(x, sigma,
**cond) -> x0 estimate`` with ``x = x0 + σ·ε`` — and every algorithm here runs on top of it.

Layout: ``core/`` (torch + numpy math only), ``io/`` (PIL images, strokes), ``pipelines/`` (the
diffusers backend), ``cli/`` (the ``sdedit`` command). The names below are imported on first use
(PEP 562), so ``import sdedit_engine`` — and ``sdedit --help`` — does not load torch, and the engine
never pulls in diffusers or transformers (inside ComfyUI it does not need them).
"""

from __future__ import annotations

import importlib

from . import _compat

__version__ = "0.1.0"

_compat.install(__name__)  # old flat module paths keep importing, with a DeprecationWarning

#: public name → module (relative to this package) that defines it
_EXPORTS = {
    **dict.fromkeys(("comfy_denoise_sigmas", "comfy_denoise_to_t0", "strength_to_t0", "t0_to_comfy_denoise",
                     "t0_to_strength"), ".core.conversions"),
    **dict.fromkeys(("CountingDenoiser", "Denoiser", "DiscreteTimeDenoiser"), ".core.denoisers"),
    **dict.fromkeys(("FlowDenoiser", "FlowSchedule"), ".core.flow"),
    **dict.fromkeys(("NoiseSource", "derive_seed", "normalize_seeds"), ".core.noise"),
    **dict.fromkeys(("SAMPLER_NAMES", "SAMPLERS", "SamplingCancelled", "StepInfo", "Stepper", "get_sampler",
                     "run_sampler"), ".core.samplers"),
    **dict.fromkeys(("SPACINGS", "DiscreteSchedule"), ".core.schedules"),
    **dict.fromkeys(("KNOWN_NOISE_MODES", "MaskedDenoiser", "sdedit", "sdedit_sigmas"), ".core.sdedit"),
    **dict.fromkeys(("TiledDenoiser", "blend_tiles"), ".core.tiling"),
    **dict.fromkeys(("SDEditPipeline", "SDEditOutput"), ".pipelines.pipeline"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    if module != ".pipelines.pipeline":  # cache engine names; the backend stays looked-up (monkeypatching)
        globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
