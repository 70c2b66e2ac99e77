"""SDE inpainting and DiffEdit-SDE (Nie et al., ICLR 2024, Sec. 5) on the diffusers backend, exposed as
``SDEditPipeline.inpaint`` / ``.diffedit``: thin adapters from pixels to the engine
(:func:`~sdedit_engine.core.sde_edits.sde_inpaint`, :func:`~sdedit_engine.core.sde_edits.auto_diffedit`,
which the ComfyUI nodes run too) and back through :mod:`sdedit_engine.core.framing`."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..core.cycle import cycle_sigmas
from ..core.denoisers import CountingDenoiser
from ..core.schedules import check_steps, check_t0
from ..core.sde_edits import auto_diffedit, diffedit_steps, sde_inpaint
from ..core.validation import check_guidance_scale
from ..io import imaging
from . import edit_common as common
from .edit_common import EditOutput, check_mode, check_one, check_output_type, frame_one


def inpaint(pipe, image, mask, prompt: str = "", negative_prompt: str | None = None, *, steps: int = 50,
            mode: str = "sde", guidance_scale: float | None = None, seed: int = 0, mask_grow: int = 0,
            mask_blur: float = 0.0, composite: bool = True, output_type: str = "pil", progress: bool = True,
            callback: Optional[Callable] = None) -> EditOutput:
    """SDE inpainting (paper Sec. 5.1) with any non-inpainting model: the masked area (1 = fill) starts
    from pure noise; ``mode="sde"`` solves with DDPM, ``mode="ode"`` with its DDIM twin; the kept area
    is re-noised from the image with one fixed noise at every step."""
    check_mode(mode)
    check_output_type(output_type)
    steps = check_steps(steps)
    guidance_scale = check_guidance_scale(pipe.default_guidance_scale if guidance_scale is None else guidance_scale)
    if mask is None:
        raise ValueError("inpaint needs a mask (white = fill)")
    original = imaging.to_tensor(image).float()
    check_one(original, "inpaint")
    fr = frame_one(pipe, original, mask, what="inpaint", grow=mask_grow, feather=mask_blur)
    cond = pipe.encode_prompt(prompt, negative_prompt, 1, guidance_scale, *fr.padded.shape[-2:])
    den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
    bar, on_step = common.progress(steps, f"inpaint-{mode}", progress, callback)
    try:
        with torch.no_grad():
            out = sde_inpaint(den, fr.latent, fr.latent_mask, steps=steps, mode=mode, seed=seed,
                              extra_args=cond.as_extra_args(), callback=on_step)
    finally:
        bar.close()
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, steps, den.calls, int(seed), float(pipe.schedule.t0_to_sigma(1.0)), fr.mask,
                      latent_mask=fr.latent_mask)


def diffedit(pipe, image, source_prompt: str, target_prompt: str, mask=None, negative_prompt: str | None = None, *,
             t0: float = 0.7, steps: int = 35, mode: str = "sde", guidance_scale: float | None = None, seed: int = 0,
             mask_threshold: float = 0.5, mask_t0: float = 0.5, mask_repeats: int = 10, composite: bool = True,
             output_type: str = "pil", progress: bool = True, callback: Optional[Callable] = None) -> EditOutput:
    """DiffEdit-SDE (paper Sec. 5.2): turn what ``source_prompt`` describes into ``target_prompt``
    inside ``mask`` (1 = edit; None → DiffEdit's automatic mask from the prompts' disagreement,
    ``mask_repeats`` draws at ``mask_t0`` thresholded at ``mask_threshold``).
    ``mode="sde"``: forward noise + Cycle-SDE whose noise is recorded under the source prompt and
    replayed under the target; ``mode="ode"``: DDIM inversion + DDIM (the original DiffEdit).
    ``callback`` sees the steps numbered over the whole run (mask draws first)."""
    check_mode(mode)
    check_output_type(output_type)
    t0, steps = check_t0(t0), check_steps(steps)
    guidance_scale = check_guidance_scale(pipe.default_guidance_scale if guidance_scale is None else guidance_scale)
    original = imaging.to_tensor(image).float()
    check_one(original, "diffedit")
    fr = frame_one(pipe, original, mask, what="edit")
    h, w = fr.padded.shape[-2:]
    src = pipe.encode_prompt(source_prompt, negative_prompt, 1, guidance_scale, h, w).as_extra_args()
    tgt = pipe.encode_prompt(target_prompt, negative_prompt, 1, guidance_scale, h, w).as_extra_args()
    den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
    given = fr.latent_mask is not None
    bar, on_step = common.progress(diffedit_steps(steps, given, mask_repeats), f"diffedit-{mode}", progress, callback)
    try:
        with torch.no_grad():
            out, lmask = auto_diffedit(den, fr.latent, fr.latent_mask, source_args=src, target_args=tgt,
                                       sigmas=cycle_sigmas(pipe.schedule, t0, steps), mode=mode, seed=seed,
                                       mask_t0=mask_t0, mask_repeats=mask_repeats, mask_threshold=mask_threshold,
                                       callback=on_step)
    finally:
        bar.close()
    if not given:
        fr = fr.with_latent_mask(lmask)
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, steps, den.calls, int(seed), float(pipe.schedule.t0_to_sigma(t0)), fr.mask,
                      latent_mask=fr.latent_mask)
