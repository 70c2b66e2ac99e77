"""SDE-Drag (Nie et al., ICLR 2024) on the diffusers backend, exposed as ``SDEditPipeline.drag``: a
thin adapter from pixels to the engine's drag plan (:class:`~sdedit_engine.core.drag.DragPlan`, the
same one the ComfyUI node runs) and back through :mod:`sdedit_engine.core.framing`. SDE inpainting and
DiffEdit-SDE live in :mod:`~sdedit_engine.pipelines.inpaint_diffedit` (re-exported here).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..core.cycle import cycle_reconstruct, cycle_sigmas
from ..core.defaults import DEFAULT_DRAG_STEPS
from ..core.denoisers import CountingDenoiser
from ..core.drag import DragPair, as_pairs, guidance_ramp, plan_drag  # noqa: F401 - as_pairs, DragPair: public here
from ..core.validation import check_guidance_scale
from ..io import imaging
from . import edit_common as common
from .edit_common import EditOutput, check_one, check_output_type, frame_one
from .inpaint_diffedit import diffedit, inpaint  # noqa: F401 - their historical home
from .lora_tuning import check_tuning_options, lora_scale_ramp, tune_lora


def drag(pipe, image, points, mask=None, prompt: str = "", negative_prompt: str | None = None, *,
         t0: float = 0.6, steps: int = DEFAULT_DRAG_STEPS, guidance_scale: float = 3.0, step_size: float = 2.0, radius: int = 5,
         beta: float = 0.3, alpha: float = 1.1, seed: int = 0, lora_tuning: Optional[dict] = None,
         composite: bool = True, output_type: str = "pil", progress: bool = True,
         callback: Optional[Callable] = None, lora_callback: Optional[Callable] = None) -> EditOutput:
    """SDE-Drag: move the content at each source point to its target point.

    ``points`` in image pixels (x = column, y = row): JSON text or data accepted by
    :func:`~sdedit_engine.core.drag.parse_points`, or :class:`DragPair`s. They map to latent cells by
    floor division by the VAE factor. ``mask`` (1 = editable) confines the change; outside it the
    original pixels are pasted back exactly (``composite``). CFG ramps linearly from about 1 near
    t = 0 up to ``guidance_scale`` at t0 (the paper's schedule), through a per-step override of the
    UNet call, and the recorded noise sees the same per-step scale (exactness).

    ``lora_tuning`` (a dict, e.g. ``{"steps": 100, "rank": 16}``; keys steps, rank, learning_rate,
    weight_decay, scale_min, prompt, seed) first fine-tunes a LoRA on the image, uses it with the
    paper's cosine weight ramp (``scale_min`` at t0 → 1 near t = 0), and removes it afterwards.
    ``lora_callback(step, total, loss)`` sees every training step; True cancels.
    """
    check_output_type(output_type)
    guidance_scale = check_guidance_scale(guidance_scale)
    tuning = check_tuning_options(lora_tuning) if lora_tuning not in (None, False) else None
    original = imaging.to_tensor(image).float()
    check_one(original, "drag")
    height, width = original.shape[-2:]
    as_pairs(points, width, height)  # bad points fail before any model work
    fr = frame_one(pipe, original, mask, what="drag")  # first: a flow model's schedule follows the encoded size
    plan = plan_drag(points, width, height, factor=pipe.vae_scale_factor, schedule=pipe.schedule, t0=t0, steps=steps,
                     guidance_scale=guidance_scale, step_size=step_size, guidance_distilled=pipe.guidance_distilled)
    bar, on_step = common.progress(plan.total_steps + (tuning["steps"] if tuning else 0), "sde-drag", progress, callback)
    tuned = None
    try:
        if tuning:
            def on_lora(step, n, loss):
                bar.update(1)
                bar.set_postfix(lora_loss=f"{loss:.4f}")
                return lora_callback(step, n, loss) if lora_callback is not None else None

            tuned = tune_lora(pipe, fr.padded, tuning["prompt"] if tuning["prompt"] is not None else prompt,
                              steps=tuning["steps"], rank=tuning["rank"], learning_rate=tuning["learning_rate"],
                              weight_decay=tuning["weight_decay"],
                              seed=seed if tuning["seed"] is None else tuning["seed"], callback=on_lora)
        step_args = _lora_ramp(pipe, tuned, plan.steps, tuning["scale_min"]) if tuned is not None else None
        cond = pipe.encode_prompt(prompt, negative_prompt, 1, max(plan.ramp), *fr.padded.shape[-2:])
        den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
        with torch.no_grad():
            out = plan.run(den, fr.latent, mask=fr.latent_mask, radius=radius, beta=beta, alpha=alpha, seed=seed,
                           cfg_arg=None if pipe.guidance_distilled else "guidance_scale",
                           extra_args=cond.as_extra_args(), step_args=step_args,
                           callback=on_step)
    finally:
        bar.close()
        if tuned is not None:
            tuned.remove()
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, plan.steps, den.calls, int(seed), float(plan.sigmas[0]), fr.mask, list(plan.pairs),
                      list(plan.cells), plan.iterations, list(tuned.losses) if tuned is not None else None,
                      fr.latent_mask)


def _lora_ramp(pipe, tuned, steps: int, scale_min: float):
    """Per-step LoRA weight (the paper's cosine ramp) as a step-args hook that sets it on change."""
    lam = lora_scale_ramp(steps, scale_min)
    # the pipeline's own LoRA scale multiplies every active adapter in the UNet call: divide it out
    base = pipe.lora_scale if pipe.lora_scale not in (None, 0) else 1.0
    last = {}

    def step_args(i: int) -> dict:
        if last.get("lam") != lam[i]:
            tuned.set_scale(lam[i] / base)
            last["lam"] = lam[i]
        return {}

    return step_args


def cycle_check(pipe, image, prompt: str = "", *, t0: float = 0.6, steps: int = 30, guidance_scale: float = 3.0,
                seed: int = 0) -> float:
    """Self-check: Cycle-SDE encode + decode of ``image``'s latent with no edit, under the drag's CFG
    ramp; returns the relative error (≈ 1e-6 in float32; large values mean the model call is not
    deterministic, e.g. dropout or a non-deterministic kernel)."""
    fr = pipe.frame(imaging.to_tensor(image).float())
    latent = fr.latent
    ramp = guidance_ramp(guidance_scale, steps, pipe.guidance_distilled)
    cond = pipe.encode_prompt(prompt, None, latent.shape[0], max(ramp), *fr.padded.shape[-2:])
    with torch.no_grad():
        rec = cycle_reconstruct(pipe.make_denoiser(guidance_scale), latent, cycle_sigmas(pipe.schedule, t0, steps),
                                seed=seed, extra_args=cond.as_extra_args(),
                                extra_args_fn=lambda i: {} if pipe.guidance_distilled else {"guidance_scale": ramp[i]})
    return float((rec - latent).norm() / latent.norm().clamp_min(1e-12))
