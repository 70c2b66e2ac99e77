"""One home for the nodes' inputs: shared declarations and tooltips addressed by name, and the check
every float input passes before a node runs.

``build("cfg")`` returns the pack's one declaration of ``cfg`` (type, default, range, tooltip);
``build("cfg", default=3.0, tooltip=...)`` overrides a field where a node means something narrower,
and ``inputs("model", "positive", "t0", t0={"default": 0.6})`` builds a list. A new node therefore
states only what differs from the shared declaration.

:class:`SDEditNode` is the base of every node of the pack. It wraps each subclass' ``execute`` so
that, before the node's own code runs, every ``FLOAT`` input of its schema is checked:

    value is finite  and  min ≤ value ≤ max  (the schema's bounds)

ComfyUI's own validation compares ``value < min`` and ``value > max``, and both are false for NaN,
so ``cfg = NaN`` reached the sampler (an all-black image) and ``mask_threshold = NaN`` an all-false
mask. Values coming through a link are not range-checked by ComfyUI at all. The error names the
input and what is allowed, e.g. ``cfg: must be a finite number in [0, 100], got nan``.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

from comfy_api.v0_0_2 import io

from ..sdedit_engine.core.flow import T0_SCALES
from ..sdedit_engine.core.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLER_NAMES
from ..sdedit_engine.core.schedules import DEFAULT_SPACING, SPACINGS
from ..sdedit_engine.core.sdedit import KNOWN_NOISE_MODES

SEED_MAX = 0xFFFFFFFFFFFFFFFF

T0_TOOLTIP = (
    "Noise level to start from, as in the SDEdit paper: 0 keeps the guide, 1 is pure noise. "
    "Small t0 = faithful to your strokes, large t0 = more realistic. It is a noise level "
    "(sigma of timestep round(t0*1000)-1), NOT KSampler's 'denoise', whose noise level depends on the "
    "scheduler (denoise 0.5 with karras is a much weaker edit). Typical: 0.3-0.6. Below 0.0015 (one "
    "timestep) the edit is a single denoise at the lowest noise level, whatever 'steps' says. On flow models "
    "(SD3, Flux, ...) see t0_scale."
)

T0_SCALE_TOOLTIP = (
    "Flow-matching models (SD3/SD3.5, Flux, AuraFlow, Qwen-Image, ...) only; ignored on SD1.x/SDXL. 'model': t0 is the "
    "model's own time, the start sigma is ComfyUI's percent_to_sigma(1 - t0) (shift included; t0 0.5 on SD3 = sigma "
    "0.75, a strong edit). 'sd15_snr': t0 means the same noise level (log-SNR) as on SD1.5, so t0 0.5 destroys as much "
    "structure on Flux as on SD1.5 - no 'denoise cliff'."
)

SAMPLER_TOOLTIP = (
    "dpmpp_2m_sde: second-order SDE solver (default); with the exponential spacing it matches the exact SDEdit "
    "result with 10 steps on test priors. ddpm: the paper's ancestral sampler. "
    "euler_maruyama: the paper's Algorithm 1 (needs many steps). ddim / dpmpp_2m: deterministic ODE twins, "
    "for comparison."
)

POINTS_TOOLTIP = (
    'Drag pairs in image pixels as JSON: [{"source": [x, y], "target": [x, y]}, ...] (x = column, y = row). '
    "Click on the node's image to add them: first click = source, second = target. Also accepts a flat point "
    "list such as KJNodes' PointsEditor output ([{\"x\":..,\"y\":..}, ...], read as source, target, source, target...)."
)

# name -> (ComfyUI input type, keyword arguments of its Input). One entry per concept; nodes override
# single fields (default, tooltip, bounds) through build(name, **overrides).
SPECS: dict[str, tuple[Any, dict[str, Any]]] = {
    # models and conditioning
    "model": (io.Model, {
        "tooltip": (
            "The diffusion model (SD1.x, SD2.x incl. v-prediction, SDXL); LoRAs and patches applied upstream "
            "are used."
        ),
    }),
    "positive": (io.Conditioning, {
        "tooltip": (
            "What the edited image should show (ControlNet applied to it is honoured)."
        ),
    }),
    "negative": (io.Conditioning, {"tooltip": "What to steer away from (used when cfg > 1)."}),
    "vae": (io.Vae, {"tooltip": "The VAE that encodes the image and decodes the result."}),
    # images and masks
    "guide": (io.Image, {
        "tooltip": (
            "The guide: a stroke painting, a photo with strokes, or a composite. RGBA: the alpha channel is "
            "ignored. Sizes are padded to a multiple of 8 and cropped back."
        ),
    }),
    "image": (io.Image, {"tooltip": "The image to edit. RGBA: alpha is ignored."}),
    "mask": (io.Mask, {"optional": True,
        "tooltip": (
            "Optional editable area (1 = edit, 0 = keep). Must match the image's size; one mask for the batch"
            " or one per image. Leave unconnected to edit the whole image."
        ),
    }),
    "mask_grow": (io.Int, {"default": 8, "min": 0, "max": 256,
        "tooltip": (
            "Grow the mask by this many pixels before editing, so the edit can blend into its surroundings."
        ),
    }),
    "mask_feather": (io.Float, {"default": 8.0, "min": 0.0, "max": 128.0, "step": 0.5,
        "tooltip": (
            "Soften the mask edge over about this many pixels (hides seams)."
        ),
    }),
    "keep_unmasked_pixels": (io.Boolean, {"default": True,
        "tooltip": (
            "Paste the original back outside the (feathered) mask after decoding, so unmasked pixels are bit-"
            "identical to the input (the VAE round trip would otherwise alter them)."
        ),
    }),
    "crop_to_mask": (io.Boolean, {"default": False,
        "tooltip": (
            "Edit only the mask's bounding box (plus padding) at the working resolution and stitch it back: "
            "the cost follows the mask, not the image. Needs a mask."
        ),
    }),
    "crop_padding": (io.Int, {"default": 64, "min": 0, "max": 1024,
        "tooltip": (
            "Context around the mask's bounding box, in pixels, when cropping."
        ),
    }),
    "crop_resolution": (io.Int, {"default": 512, "min": 64, "max": 4096, "step": 8,
        "tooltip": (
            "Working resolution (long side) of the cropped region: 512 for SD1.x, 1024 for SDXL."
        ),
    }),
    "grow": (io.Int, {"default": 8, "min": 0, "max": 512,
        "tooltip": (
            "Grow the mask by this many pixels, so the seam is re-synthesised too."
        ),
    }),
    # sampling
    "t0": (io.Float, {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": T0_TOOLTIP}),
    "steps": (io.Int, {"default": DEFAULT_STEPS, "min": 1, "max": 1000,
        "tooltip": (
            "Solver steps from the noise level t0 down to 0 (model calls per repeat). t0*1000 steps with ddpm"
            " reproduces the paper's loop exactly."
        ),
    }),
    "cfg": (io.Float, {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
        "tooltip": (
            "Classifier-free guidance scale; 1 disables the negative prompt (and halves the cost)."
        ),
    }),
    "sampler": (io.Combo, {"options": list(SAMPLER_NAMES), "default": DEFAULT_SAMPLER, "tooltip": SAMPLER_TOOLTIP}),
    "repeats": (io.Int, {"default": 1, "min": 1, "max": 10,
        "tooltip": (
            "K: re-noise the result to t0 and solve again, K times in all. Each repeat adds realism and costs"
            " another 'steps' model calls."
        ),
    }),
    "seed": (io.Int, {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
        "tooltip": (
            "Noise seed. Image i of a batch uses seed+i, so a result never depends on the batch or the "
            "device."
        ),
    }),
    "spacing": (io.Combo, {"options": list(SPACINGS), "default": DEFAULT_SPACING,
        "tooltip": (
            "Spacing of the steps between t0 and 0: exponential (default: even in log sigma, the accurate "
            "choice for the SDE solvers), uniform in timestep (the paper's loop) or karras (more steps at low "
            "noise)."
        ),
    }),
    "known_noise": (io.Combo, {"options": list(KNOWN_NOISE_MODES), "default": "fresh",
        "tooltip": (
            "Noise for re-noising the kept area at each step: fresh (default) or one fixed tensor per repeat "
            "(the official code and ComfyUI's inpainting)."
        ),
    }),
    "t0_scale": (io.Combo, {"options": list(T0_SCALES), "default": "model", "optional": True, "tooltip": T0_SCALE_TOOLTIP}),
    "mode": (io.Combo, {"options": ["sde", "ode"], "default": "sde",
        "tooltip": (
            "sde: the stochastic solver (the paper's choice). ode: its deterministic twin, for comparison."
        ),
    }),
    # two-prompt editing (DiffEdit)
    "source": (io.Conditioning, {"tooltip": "Prompt describing the image as it is (e.g. 'a bowl of fruits')."}),
    "target": (io.Conditioning, {"tooltip": "Prompt describing the wanted result (e.g. 'a bowl of bananas')."}),
    "mask_threshold": (io.Float, {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
        "tooltip": (
            "Automatic mask only: threshold on the normalised prompt disagreement."
        ),
    }),
    "mask_t0": (io.Float, {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01, "optional": True,
        "tooltip": (
            "Automatic mask only: the noise level at which the two prompts' predictions are compared "
            "(DiffEdit: 0.5). Lower follows edges more tightly, higher finds larger regions."
        ),
    }),
    "mask_repeats": (io.Int, {"default": 10, "min": 1, "max": 100, "optional": True,
        "tooltip": (
            "Automatic mask only: noise draws averaged for the mask (DiffEdit: 10). Each costs 2 model calls; "
            "more draws give a smoother, more stable mask."
        ),
    }),
    # dragging (SDE-Drag)
    "points": (io.String, {"default": "[]", "multiline": True, "tooltip": POINTS_TOOLTIP}),
    "step_size": (io.Float, {"default": 2.0, "min": 0.5, "max": 64.0, "step": 0.5,
        "tooltip": (
            "Latent pixels moved per drag iteration (2 = 16 image pixels). Longer drags take more iterations."
        ),
    }),
    "patch_radius": (io.Int, {"default": 5, "min": 1, "max": 32,
        "tooltip": (
            "Half-size of the copied latent patch (5 = 10x10 latent = 80x80 pixels)."
        ),
    }),
    "beta": (io.Float, {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
        "tooltip": (
            "How much of the source's content stays where it was (the rest is replaced by noise)."
        ),
    }),
    "alpha": (io.Float, {"default": 1.1, "min": 0.5, "max": 2.0, "step": 0.05,
        "tooltip": (
            "Amplification of the pasted patch at the target."
        ),
    }),
}


def build(name: str, **overrides):
    """The shared declaration of input ``name`` (see :data:`SPECS`), with ``overrides`` applied."""
    try:
        kind, options = SPECS[name]
    except KeyError:
        raise KeyError(f"no shared input called {name!r}; add it to nodes/inputs.SPECS") from None
    return kind.Input(name, **{**options, **overrides})


def inputs(*names: str, **overrides: dict) -> list:
    """``build`` for each name, in order; ``overrides[name]`` is a dict of fields for that input."""
    unknown = set(overrides) - set(names)
    if unknown:
        raise KeyError(f"overrides for inputs not listed: {sorted(unknown)}")
    return [build(n, **overrides.get(n, {})) for n in names]


# groups shared by several nodes ---------------------------------------------------------------------
MODEL_INPUTS = ("model", "positive", "negative", "vae")
SAMPLING_INPUTS = ("t0", "steps", "cfg", "sampler", "repeats", "seed")
MASK_INPUTS = ("mask", "mask_grow", "mask_feather", "keep_unmasked_pixels", "crop_to_mask", "crop_padding", "crop_resolution")


def model_inputs() -> list:
    """model, positive, negative, vae and the guide image."""
    return inputs(*MODEL_INPUTS, "guide", vae={"tooltip": "The VAE that encodes the guide and decodes the result."})


def sampling_inputs(t0_default: float = 0.5) -> list:
    return inputs(*SAMPLING_INPUTS, t0={"default": t0_default})


def mask_inputs() -> list:
    return inputs(*MASK_INPUTS)


def advanced_inputs() -> list:
    return inputs("spacing", "known_noise", "t0_scale", spacing={"optional": True}, known_noise={"optional": True})


# the float check ------------------------------------------------------------------------------------
def check_float(name: str, value, lo=None, hi=None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite number within [lo, hi]."""
    allowed = "a finite number" + (f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else
                                   f" ≥ {lo:g}" if lo is not None else f" ≤ {hi:g}" if hi is not None else "")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be {allowed}, got {value!r}") from None
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: must be {allowed}, got {v:g}")


@functools.lru_cache(maxsize=None)
def float_bounds(node_cls: type) -> dict[str, tuple[float | None, float | None]]:
    """{name: (min, max)} of every FLOAT input in ``node_cls``'s schema."""
    schema = node_cls.define_schema()
    return {i.id: (i.min, i.max) for i in schema.inputs if isinstance(i, io.Float.Input)}


def check_floats(node_cls: type, values: dict) -> None:
    """:func:`check_float` for every FLOAT input of ``node_cls`` present (not None) in ``values``."""
    for name, (lo, hi) in float_bounds(node_cls).items():
        if values.get(name) is not None:
            check_float(name, values[name], lo, hi)


class SDEditNode(io.ComfyNode):
    """Base of the pack's nodes: ``execute`` checks every FLOAT input (see the module docstring) first.

    The wrapping happens once per class that defines ``execute``; ComfyUI's per-run clones of the class
    inherit the wrapped method and are not wrapped again."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        raw = cls.__dict__.get("execute")
        if not isinstance(raw, classmethod) or getattr(raw.__func__, "_checks_floats", False):
            return
        func = raw.__func__
        signature = inspect.signature(func)
        owner = cls

        @functools.wraps(func)
        def execute(klass, *args, **kw):
            bound = signature.bind_partial(klass, *args, **kw)
            check_floats(owner, bound.arguments)
            return func(klass, *args, **kw)

        execute._checks_floats = True
        cls.execute = classmethod(execute)
