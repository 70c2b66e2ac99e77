"""``SDEditPipeline.__call__``: SDEdit of images (PIL / numpy / tensors, optional masks) with a diffusers
model. Framing (mask → latent cells, padding, crop, composite-back) is :mod:`sdedit_engine.core.framing`,
sampling is :func:`sdedit_engine.core.sdedit.sdedit`; this module only wires them to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import framing
from ..core.denoisers import CountingDenoiser
from ..core.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS
from ..core.schedules import DEFAULT_SPACING, check_t0
from ..core.sdedit import sdedit, sdedit_sigmas
from ..core.validation import check_guidance_scale, check_sigmas
from ..io import imaging
from .text import TextConditioning

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SDEditOutput:
    """Result of one call. ``images``: list of PIL (``pil``), ``(B,H,W,3)`` float array (``np``),
    ``(B,3,H,W)`` tensor (``pt``) or the latents (``latent``)."""

    images: Any
    latents: torch.Tensor
    t0: float
    sigma0: float
    steps: int
    nfe: int  # UNet evaluations per item (a CFG evaluation is one batch-2 call)
    seeds: list[int] = field(default_factory=list)
    sigmas: Optional[torch.Tensor] = None
    latent_mask: Optional[torch.Tensor] = None  # the editable latent cells (framing's max rule); None without a mask


def _seeds(seed, generator, n: int) -> list[int]:
    """One integer seed per item: from ``seed`` (int → seed+i, or a list), else drawn from ``generator``.

    The engine draws noise from one seeded CPU generator per item (device independent); a
    ``torch.Generator`` is therefore only used to pick those seeds.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if len(gens) not in (1, n):
            raise ValueError(f"got {len(gens)} generators for a batch of {n}")
        if len(gens) == 1:
            base = int(torch.randint(0, 2**62, (1,), generator=gens[0], device=gens[0].device))
            return [base + i for i in range(n)]
        return [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in gens]
    if seed is None:
        seed = 0
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"seed list has {len(seed)} entries but the batch has {n} items")
        return [int(s) for s in seed]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return [int(seed) + i for i in range(n)]


@torch.no_grad()
def run_sdedit(self, image, mask=None, prompt: str | Sequence[str] = "", negative_prompt: str | Sequence[str] | None = None,
               *, t0: float = 0.5, steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER, guidance_scale: float | None = None,
               repeats: int = 1, seed: int | Sequence[int] | None = None, generator=None, num_images: int = 1,
               output_type: str = "pil", control_image=None, controlnet_conditioning_scale: float = 1.0,
               spacing: str = DEFAULT_SPACING, known_noise: str = "fresh", mask_grow: int = 0, mask_blur: float = 0,
               composite: bool = True, crop_padding: int | None = None, crop_resolution: int | None = None,
               sigmas: Optional[torch.Tensor] = None,
               conditioning: Optional[TextConditioning] = None, progress: bool = True,
               callback: Optional[Callable] = None) -> SDEditOutput:
    """Edit ``image`` (PIL, numpy, tensor or list) with SDEdit.

    t0 is the paper's noise level (σ of timestep round(t0·T)−1), not diffusers' ``strength``.
    With a ``mask`` (1 = edit) only the masked area is regenerated, and after decoding the
    original pixels are pasted back wherever the (grown/feathered) mask is 0, bit for bit.
    ``num_images`` copies of each input get seeds seed, seed+1, …; ``repeats`` is the paper's K.
    ``crop_padding`` (with a mask) edits only the mask's bounding box plus that many pixels and
    stitches it back: less compute for small edits in large images; ``crop_resolution`` (long
    side, pixels) also resizes that region for the model, None keeps it native (the ComfyUI node's
    ``crop_to_mask`` + ``crop_resolution``; :class:`sdedit_engine.core.framing.Crop`). The pixel →
    latent mask rule and the padding are those of :mod:`sdedit_engine.core.framing`.
    ``conditioning`` replaces prompt encoding with precomputed :class:`TextConditioning`.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    t0 = check_t0(t0)
    guidance_scale = check_guidance_scale(self.default_guidance_scale if guidance_scale is None else guidance_scale)
    original = imaging.to_tensor(image).float()
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
    n_in = original.shape[0]
    pmask = self.mask_tensor(mask, original)
    if pmask is not None:
        pmask = pmask.expand(n_in, -1, -1, -1).repeat_interleave(num_images, dim=0)
    original = original.repeat_interleave(num_images, dim=0) if num_images > 1 else original
    b = original.shape[0]
    seeds = _seeds(seed, generator, b)
    crop = None
    if crop_padding is not None:
        if pmask is None:
            raise ValueError("crop_padding needs a mask (the crop is the mask's bounding box)")
        if output_type == "latent":
            raise ValueError("crop_padding cannot return latents: they would cover only the crop")
        crop = framing.Crop(int(crop_padding), crop_resolution)
    fr = self.frame(original, pmask, grow=mask_grow, feather=mask_blur, crop=crop)
    guide, lmask = fr.latent, fr.latent_mask
    ph, pw = fr.padded.shape[-2:]

    ctrl = None
    if control_image is not None:
        ctrl = fr.map_image(imaging.to_tensor(control_image, "control_image").float())  # with a crop: the hint's same box
        if ctrl.shape[0] not in (1, n_in):
            raise ValueError(f"got {ctrl.shape[0]} control images for {n_in} input images (use 1 or {n_in})")
        ctrl = ctrl.expand(n_in, -1, -1, -1).repeat_interleave(num_images, dim=0).to(self.device)
    cond = conditioning if conditioning is not None else \
        self.encode_prompt(prompt, negative_prompt, b, guidance_scale, ph, pw)
    denoiser = CountingDenoiser(self.make_denoiser(guidance_scale, ctrl, controlnet_conditioning_scale))
    grid = check_sigmas(sigmas) if sigmas is not None else sdedit_sigmas(self.schedule, t0, steps, spacing)
    n_steps = len(grid) - 1

    bar = tqdm(total=n_steps * repeats, desc="sdedit", disable=not progress, leave=False)

    def on_step(info):
        bar.update(1)
        return callback(info) if callback is not None else None

    try:
        latents = sdedit(denoiser, guide, t0=t0, steps=steps, sampler=sampler, mask=lmask, repeats=repeats,
                         seed=seeds, spacing=spacing, known_noise=known_noise, callback=on_step,
                         extra_args=cond.as_extra_args(), sigmas=grid)
    finally:
        bar.close()
    out = SDEditOutput(None, latents, t0, float(grid[0]), n_steps, denoiser.calls, seeds, grid, lmask)
    out.images = self.finish(fr, latents, composite, output_type)
    return out
