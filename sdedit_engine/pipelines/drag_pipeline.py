"""The SDE editing family (Nie et al., ICLR 2024) on the diffusers backend: SDE-Drag, SDE inpainting
and DiffEdit-SDE, each a thin adapter from pixels to the engine (:mod:`sdedit_engine.core.drag`,
:mod:`sdedit_engine.core.sde_edits`) and back. Exposed as ``SDEditPipeline.drag / inpaint / diffedit``.

Conventions shared with ``SDEditPipeline.__call__``: images are PIL / numpy / tensors in [0, 1];
masks are 1 = editable; outside a mask the original pixels are pasted back after decoding, bit for
bit; seeds give the same result on every device; ``progress`` shows a tqdm bar fed by the engine's
per-step callback, and ``callback(info)`` returning True cancels (``SamplingCancelled``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from ..core import framing
from ..core.cycle import cycle_reconstruct, cycle_sigmas
from ..core.denoisers import CountingDenoiser
from ..core.drag import DragPair, drag_iterations, guidance_ramp, parse_points, sde_drag, to_latent_points
from ..core.schedules import check_steps, check_t0
from ..core.sde_edits import diffedit as engine_diffedit
from ..core.sde_edits import diffedit_mask, sde_inpaint
from ..core.validation import check_guidance_scale
from ..io import imaging
from .lora_tuning import check_tuning_options, lora_scale_ramp, tune_lora


@dataclass
class EditOutput:
    """Result of ``drag`` / ``inpaint`` / ``diffedit``. ``images`` as requested by ``output_type``;
    ``mask``: the pixel mask used ((B,1,H,W), None without one; DiffEdit's automatic mask included)."""

    images: Any
    latents: torch.Tensor
    steps: int
    nfe: int
    seed: int
    sigma0: float
    mask: Optional[torch.Tensor] = None
    pairs: Optional[list] = None  # drag: pixel DragPairs
    latent_pairs: Optional[list] = None  # drag: latent cells
    iterations: int = 0  # drag: number of drag moves
    lora_losses: Optional[list] = None  # drag with lora_tuning


def _progress(total: int, desc: str, enabled: bool, callback: Optional[Callable]):
    bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False)

    def on_step(info):
        bar.update(1)
        return callback(info) if callback is not None else None

    return bar, on_step


def _check_one(original: torch.Tensor, what: str) -> None:
    if original.shape[0] != 1:
        raise ValueError(f"{what} edits one image at a time, got a batch of {original.shape[0]}")


def _frame(pipe, original, mask, *, what: str, grow: int = 0, feather: float = 0.0):
    """The framing of a one-image edit (:meth:`SDEditPipeline.frame`); a given mask must edit something."""
    m = pipe.mask_tensor(mask, original)
    if m is not None and m.shape[0] != 1:
        raise ValueError(f"expected one mask, got {m.shape[0]}")
    fr = pipe.frame(original, m, grow=grow, feather=feather)
    framing.require_editable(fr, what)
    return fr


def _check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"output_type must be one of pil, np, pt, latent; got {output_type!r}")


def as_pairs(points, width: int, height: int) -> list[DragPair]:
    """``points`` as pixel :class:`DragPair`s: JSON text / Python data (:func:`parse_points`) or DragPairs."""
    if isinstance(points, (list, tuple)) and points and all(isinstance(p, DragPair) for p in points):
        return parse_points([{"source": list(p.source), "target": list(p.target)} for p in points], width, height)
    return parse_points(points, width, height)


# ---------------------------------------------------------------------------------------- drag
def drag(pipe, image, points, mask=None, prompt: str = "", negative_prompt: str | None = None, *,
         t0: float = 0.6, steps: int = 120, guidance_scale: float = 3.0, step_size: float = 2.0, radius: int = 5,
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
    _check_output_type(output_type)
    t0 = check_t0(t0)
    steps = check_steps(steps)
    guidance_scale = check_guidance_scale(guidance_scale)
    tuning = check_tuning_options(lora_tuning) if lora_tuning not in (None, False) else None
    original = imaging.to_tensor(image).float()
    _check_one(original, "drag")
    height, width = original.shape[-2:]
    pairs = as_pairs(points, width, height)
    factor = pipe.vae_scale_factor
    cells = to_latent_points(pairs, factor=factor)
    if all(s == t for s, t in cells):
        raise ValueError(f"points: every drag is shorter than one latent cell ({factor} pixels); drag further")
    fr = _frame(pipe, original, mask, what="drag")
    padded, latent, lmask = fr.padded, fr.latent, fr.latent_mask
    levels = cycle_sigmas(pipe.schedule, t0, steps)
    longest = max(math.hypot(t[0] - s[0], t[1] - s[1]) for s, t in cells)
    iterations = drag_iterations(longest, step_size)
    total = 2 * steps * iterations + (tuning["steps"] if tuning else 0)
    bar, on_step = _progress(total, "sde-drag", progress, callback)
    ramp = guidance_ramp(guidance_scale, steps, pipe.guidance_distilled)
    tuned = None
    try:
        if tuning:
            def on_lora(step, n, loss):
                bar.update(1)
                bar.set_postfix(lora_loss=f"{loss:.4f}")
                return lora_callback(step, n, loss) if lora_callback is not None else None

            tuned = tune_lora(pipe, padded, tuning["prompt"] if tuning["prompt"] is not None else prompt,
                              steps=tuning["steps"], rank=tuning["rank"], learning_rate=tuning["learning_rate"],
                              weight_decay=tuning["weight_decay"],
                              seed=seed if tuning["seed"] is None else tuning["seed"], callback=on_lora)
        lam = lora_scale_ramp(steps, tuning["scale_min"]) if tuned is not None else None
        # the pipeline's own LoRA scale multiplies every active adapter in the UNet call: divide it out
        base = pipe.lora_scale if pipe.lora_scale not in (None, 0) else 1.0
        last = {}

        def step_args(i: int) -> dict:
            if lam is not None and last.get("lam") != lam[i]:
                tuned.set_scale(lam[i] / base)
                last["lam"] = lam[i]
            return {} if pipe.guidance_distilled else {"guidance_scale": ramp[i]}

        cond = pipe.encode_prompt(prompt, negative_prompt, 1, max(ramp), padded.shape[-2], padded.shape[-1])
        den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
        with torch.no_grad():
            out = sde_drag(den, latent, cells, mask=lmask, sigmas=levels, step_size=step_size, radius=radius,
                           beta=beta, alpha=alpha, seed=seed, extra_args=cond.as_extra_args(),
                           extra_args_fn=step_args, callback=on_step)
    finally:
        bar.close()
        if tuned is not None:
            tuned.remove()
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, steps, den.calls, int(seed), float(levels[0]), fr.mask, pairs, cells, iterations,
                      list(tuned.losses) if tuned is not None else None)


def cycle_check(pipe, image, prompt: str = "", *, t0: float = 0.6, steps: int = 30, guidance_scale: float = 3.0,
                seed: int = 0) -> float:
    """Self-check: Cycle-SDE encode + decode of ``image``'s latent with no edit, under the drag's CFG
    ramp; returns the relative error (≈ 1e-6 in float32; large values mean the model call is not
    deterministic, e.g. dropout or a non-deterministic kernel)."""
    original = imaging.to_tensor(image).float()
    fr = pipe.frame(original)
    padded, latent = fr.padded, fr.latent
    ramp = guidance_ramp(guidance_scale, steps, pipe.guidance_distilled)
    cond = pipe.encode_prompt(prompt, None, latent.shape[0], max(ramp), padded.shape[-2], padded.shape[-1])
    with torch.no_grad():
        rec = cycle_reconstruct(pipe.make_denoiser(guidance_scale), latent, cycle_sigmas(pipe.schedule, t0, steps),
                                seed=seed, extra_args=cond.as_extra_args(),
                                extra_args_fn=lambda i: {} if pipe.guidance_distilled else {"guidance_scale": ramp[i]})
    return float((rec - latent).norm() / latent.norm().clamp_min(1e-12))


# ---------------------------------------------------------------------------------------- inpaint
def inpaint(pipe, image, mask, prompt: str = "", negative_prompt: str | None = None, *, steps: int = 50,
            mode: str = "sde", guidance_scale: float | None = None, seed: int = 0, mask_grow: int = 0,
            mask_blur: float = 0.0, composite: bool = True, output_type: str = "pil", progress: bool = True,
            callback: Optional[Callable] = None) -> EditOutput:
    """SDE inpainting (paper Sec. 5.1) with any non-inpainting model: the masked area (1 = fill) starts
    from pure noise; ``mode="sde"`` solves with DDPM, ``mode="ode"`` with its DDIM twin; the kept area
    is re-noised from the image with one fixed noise at every step."""
    if mode not in ("sde", "ode"):
        raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
    _check_output_type(output_type)
    steps = check_steps(steps)
    guidance_scale = check_guidance_scale(pipe.default_guidance_scale if guidance_scale is None else guidance_scale)
    if mask is None:
        raise ValueError("inpaint needs a mask (white = fill)")
    original = imaging.to_tensor(image).float()
    _check_one(original, "inpaint")
    fr = _frame(pipe, original, mask, what="inpaint", grow=mask_grow, feather=mask_blur)
    padded, latent, lmask = fr.padded, fr.latent, fr.latent_mask
    cond = pipe.encode_prompt(prompt, negative_prompt, 1, guidance_scale, padded.shape[-2], padded.shape[-1])
    den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
    bar, on_step = _progress(steps, f"inpaint-{mode}", progress, callback)
    try:
        with torch.no_grad():
            out = sde_inpaint(den, latent, lmask, steps=steps, mode=mode, seed=seed, extra_args=cond.as_extra_args(),
                              callback=on_step)
    finally:
        bar.close()
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, steps, den.calls, int(seed), float(pipe.schedule.t0_to_sigma(1.0)), fr.mask)


# ---------------------------------------------------------------------------------------- diffedit
def diffedit(pipe, image, source_prompt: str, target_prompt: str, mask=None, negative_prompt: str | None = None, *,
             t0: float = 0.7, steps: int = 35, mode: str = "sde", guidance_scale: float | None = None, seed: int = 0,
             mask_threshold: float = 0.5, mask_t0: float = 0.5, mask_repeats: int = 10, composite: bool = True,
             output_type: str = "pil", progress: bool = True, callback: Optional[Callable] = None) -> EditOutput:
    """DiffEdit-SDE (paper Sec. 5.2): turn what ``source_prompt`` describes into ``target_prompt``
    inside ``mask`` (1 = edit; None → DiffEdit's automatic mask from the prompts' disagreement).
    ``mode="sde"``: forward noise + Cycle-SDE whose noise is recorded under the source prompt and
    replayed under the target; ``mode="ode"``: DDIM inversion + DDIM (the original DiffEdit)."""
    if mode not in ("sde", "ode"):
        raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
    _check_output_type(output_type)
    t0, steps = check_t0(t0), check_steps(steps)
    guidance_scale = check_guidance_scale(pipe.default_guidance_scale if guidance_scale is None else guidance_scale)
    if not 0.0 <= float(mask_threshold) <= 1.0:
        raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold!r}")
    original = imaging.to_tensor(image).float()
    _check_one(original, "diffedit")
    fr = _frame(pipe, original, mask, what="edit")
    padded, latent, lmask = fr.padded, fr.latent, fr.latent_mask
    h, w = padded.shape[-2:]
    src = pipe.encode_prompt(source_prompt, negative_prompt, 1, guidance_scale, h, w).as_extra_args()
    tgt = pipe.encode_prompt(target_prompt, negative_prompt, 1, guidance_scale, h, w).as_extra_args()
    den = CountingDenoiser(pipe.make_denoiser(guidance_scale))
    draws = 0 if lmask is not None else check_steps(mask_repeats, "mask_repeats")
    bar, on_step = _progress(2 * steps + draws, f"diffedit-{mode}", progress, callback)
    try:
        with torch.no_grad():
            if lmask is None:
                lmask = diffedit_mask(den, latent, source_args=src, target_args=tgt, t0=mask_t0, repeats=draws,
                                      threshold=float(mask_threshold), seed=seed, callback=on_step)
                fr = fr.with_latent_mask(lmask)
            out = engine_diffedit(den, latent, lmask, source_args=src, target_args=tgt, t0=t0, steps=steps,
                                  mode=mode, seed=seed, sigmas=cycle_sigmas(pipe.schedule, t0, steps), callback=on_step)
    finally:
        bar.close()
    images = pipe.finish(fr, out, composite, output_type)
    return EditOutput(images, out, steps, den.calls, int(seed), float(pipe.schedule.t0_to_sigma(t0)), fr.mask)
