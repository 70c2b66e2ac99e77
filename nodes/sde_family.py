"""The SDE editing family of Nie et al. (ICLR 2024) as nodes: SDE-Drag, SDE inpainting and
DiffEdit-SDE image-to-image, each over ComfyUI's own guider (LoRA, ControlNet, patches apply)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..sdedit_engine.core import framing
from ..sdedit_engine.core.cycle import cycle_sigmas
from ..sdedit_engine.core.drag import drag_iterations, guidance_ramp, parse_points, sde_drag, to_latent_points
from ..sdedit_engine.core.samplers import offset_callback
from ..sdedit_engine.core.sde_edits import diffedit, diffedit_mask
from ..sdedit_engine.io import imaging
from .backend import cfg_note, guidance_distilled, model_schedule, run_engine_loop
from .editing import EditSettings, edit_images, finish_pixels, frame_pixels, guide_to_bchw, mask_to_b1hw
from .inputs import MODEL_INPUTS, SDEditNode, inputs

CATEGORY = "SDEdit/SDE family"


def _frame(vae, image, mask, what: str):
    """The image's framing (:mod:`sdedit_engine.core.framing`, the pipeline's rules): latent and latent mask."""
    pixels = guide_to_bchw(image, "image")
    m = mask_to_b1hw(mask, pixels, "mask") if mask is not None else None
    fr = frame_pixels(vae, pixels, m)
    framing.require_editable(fr, what)
    return fr


class SDEditDrag(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditDrag",
            display_name="SDE-Drag (point-based drag editing)",
            category=CATEGORY,
            description=(
                "SDE-Drag (Nie et al., ICLR 2024): drags image content from source points to target points by "
                "copy-pasting noisy latent patches, then denoising with Cycle-SDE (the input's own recorded noise), "
                "so everything not dragged comes back as it was. Long drags are split into small moves. Defaults "
                "follow the paper (t0 0.6, 120 steps, 10x10 latent patches, CFG ramping up to 3)."
            ),
            inputs=inputs(
                *MODEL_INPUTS, "image", "points", "mask", "t0", "steps", "cfg", "step_size", "patch_radius", "beta",
                "alpha", "seed", "keep_unmasked_pixels", "t0_scale",
                image={"tooltip": "The image to drag-edit (512x512 suits SD1.x). RGBA: alpha is ignored."},
                mask={"tooltip": "Optional editable area (1 = may change). Outside it the image is kept exactly."},
                t0={"default": 0.6},
                steps={"default": 120, "tooltip": "Reverse steps from t0 (the paper: 120 = 0.6 of a 200-step grid). "
                                                  "Each drag iteration costs 2 x steps model calls."},
                cfg={"default": 3.0, "min": 1.0, "max": 30.0, "round": None,
                     "tooltip": "Guidance at t0; it ramps linearly down to about 1 near the end, as in the paper."},
                seed={"default": 1234, "tooltip": "Seed of the forward noise."},
            ),
            outputs=[io.Image.Output("IMAGE", display_name="image", tooltip="The dragged image.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, image, points, t0, steps, cfg, step_size, patch_radius, beta,
                alpha, seed, keep_unmasked_pixels=True, mask=None, t0_scale="model") -> io.NodeOutput:
        pixels = guide_to_bchw(image, "image")
        pairs_px = parse_points(points, pixels.shape[-1], pixels.shape[-2])
        fr = _frame(vae, image, mask, "drag")
        latent, lat_mask = fr.latent, fr.latent_mask
        pairs = to_latent_points(pairs_px, factor=fr.factor)
        if all(s == t for s, t in pairs):
            raise ValueError("points: every drag is shorter than one latent cell (8 pixels); drag further")
        levels = cycle_sigmas(model_schedule(model, t0_scale or "model"), t0, steps)
        distilled = guidance_distilled(model)  # Flux-dev/schnell: the CFG ramp is a no-op (core.drag.guidance_ramp)
        ramp = guidance_ramp(cfg, steps, guidance_distilled=distilled)
        if distilled:
            cfg = 1.0
        longest = max(((t[0] - s[0]) ** 2 + (t[1] - s[1]) ** 2) ** 0.5 for s, t in pairs)
        total = 2 * steps * drag_iterations(longest, step_size)

        def algorithm(denoiser, lat, report):
            return sde_drag(denoiser, lat, pairs, mask=lat_mask, sigmas=levels, step_size=step_size, radius=patch_radius,
                            beta=beta, alpha=alpha, seed=seed, extra_args_fn=lambda i: {"cfg": ramp[i]}, callback=report)

        out = run_engine_loop(model, positive, negative, latent, cfg=cfg, sigmas=levels, algorithm=algorithm,
                              total_steps=total, seed=seed)
        return io.NodeOutput(imaging.to_bhwc(finish_pixels(vae, fr, out, keep_unmasked_pixels)))


class SDEditCycleInpaint(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditCycleInpaint",
            display_name="SDE Inpaint (SDE vs ODE)",
            category=CATEGORY,
            description=(
                "Inpainting with any (non-inpainting) checkpoint, the SDE way (Nie et al., Sec. 5.1): the masked area "
                "starts from pure noise and is solved with DDPM (mode sde) while the rest is re-noised from the image "
                "at every step; mode ode runs the DDIM twin for comparison. The paper finds SDE better at every step count."
            ),
            inputs=inputs(
                *MODEL_INPUTS, "image", "mask", "steps", "cfg", "mode", "seed", "mask_grow", "mask_feather", "keep_unmasked_pixels",
                image={"tooltip": "The image to inpaint. RGBA: alpha is ignored."},
                mask={"optional": False, "tooltip": "The area to fill (1 = fill); same size as the image."},
                steps={"default": 50, "tooltip": "Solver steps (model calls)."},
                mode={"tooltip": "sde: DDPM (stochastic). ode: DDIM (deterministic twin)."},
                mask_grow={"default": 4}, mask_feather={"default": 4.0},
            ),
            outputs=[io.Image.Output("IMAGE", display_name="image")],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, image, mask, steps, cfg, mode, seed, mask_grow=4, mask_feather=4.0,
                keep_unmasked_pixels=True) -> io.NodeOutput:
        if mode not in ("sde", "ode"):
            raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
        pixels = guide_to_bchw(image, "image")
        m = mask_to_b1hw(mask, pixels, "mask")
        settings = EditSettings(cfg=cfg, t0=1.0, steps=steps, sampler_name="ddpm" if mode == "sde" else "ddim",
                                repeats=1, seed=seed, known_noise="fixed")
        images, _ = edit_images(model, positive, negative, vae, pixels, m, settings, mask_grow=mask_grow,
                                mask_feather=mask_feather, keep_unmasked_pixels=keep_unmasked_pixels)
        return io.NodeOutput(imaging.to_bhwc(images))


class SDEditImageToImage(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditImageToImage",
            display_name="DiffEdit-SDE (image-to-image with two prompts)",
            category=CATEGORY,
            description=(
                "DiffEdit the SDE way (Nie et al., Sec. 5.2): turns what the source prompt describes into what the target "
                "prompt describes, inside a mask (given, or found automatically where the prompts disagree). mode sde "
                "forward-noises and decodes with Cycle-SDE (noise recorded under the source prompt); mode ode is DDIM "
                "inversion + DDIM (the original DiffEdit). Outside the mask the image is kept."
            ),
            inputs=inputs(
                "model", "source", "target", "negative", "vae", "image", "mask", "t0", "steps", "cfg", "mode",
                "mask_threshold", "seed", "keep_unmasked_pixels", "t0_scale",
                negative={"tooltip": "Unconditional / negative prompt for CFG (usually empty)."},
                mask={"tooltip": "Area to edit (1 = edit). Unconnected: DiffEdit's automatic mask."},
                t0={"default": 0.7},
                steps={"default": 35, "tooltip": "Steps from t0 (the paper: 35 = 0.7 of 50). Costs 2 x steps model calls."},
                cfg={"default": 7.5},
                mode={"tooltip": "sde: DiffEdit-SDE (Cycle-SDE). ode: DiffEdit (DDIM inversion)."},
            ),
            outputs=[
                io.Image.Output("IMAGE", display_name="image"),
                io.Mask.Output("MASK", display_name="mask", tooltip="The mask used (the automatic one when none was given)."),
            ],
        )

    @classmethod
    def execute(cls, model, source, target, negative, vae, image, t0, steps, cfg, mode, mask_threshold, seed,
                keep_unmasked_pixels=True, mask=None, t0_scale="model") -> io.NodeOutput:
        if mode not in ("sde", "ode"):
            raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
        fr = _frame(vae, image, mask, "edit")
        latent, lat_mask = fr.latent, fr.latent_mask
        schedule = model_schedule(model, t0_scale or "model")
        cfg_note(model, cfg)
        levels = cycle_sigmas(schedule, t0, steps)
        draws = 10
        mask_steps = 0 if lat_mask is not None else draws
        found = {}

        def algorithm(denoiser, lat, report):
            denoiser.schedule = schedule
            src, tgt = {"prompt": "source"}, {"prompt": "positive"}
            use = lat_mask
            if use is None:
                use = diffedit_mask(denoiser, lat, source_args=src, target_args=tgt, t0=0.5, repeats=draws,
                                    threshold=mask_threshold, seed=seed, callback=report)
                found["mask"] = use
            return diffedit(denoiser, lat, use, source_args=src, target_args=tgt, sigmas=levels, mode=mode, seed=seed,
                            callback=offset_callback(report, mask_steps, 2 * steps + mask_steps))

        out = run_engine_loop(model, target, negative, latent, cfg=cfg, sigmas=levels, algorithm=algorithm,
                              total_steps=2 * steps + mask_steps, seed=seed, extra_conds={"source": source})
        if lat_mask is None:
            fr = fr.with_latent_mask(found["mask"])
        images = imaging.to_bhwc(finish_pixels(vae, fr, out, keep_unmasked_pixels))
        return io.NodeOutput(images, fr.mask[:, 0].contiguous())
