"""The SDE editing family of Nie et al. (ICLR 2024) as nodes: SDE-Drag, SDE inpainting and
DiffEdit-SDE image-to-image, each over ComfyUI's own guider (LoRA, ControlNet, patches apply)."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..sdedit_engine.core import framing
from ..sdedit_engine.core.cycle import cycle_sigmas
from ..sdedit_engine.core.defaults import DEFAULT_DRAG_STEPS
from ..sdedit_engine.core.drag import plan_drag
from ..sdedit_engine.core.sde_edits import auto_diffedit, diffedit_steps
from ..sdedit_engine.io import imaging
from .backend import cfg_note, guidance_distilled, model_schedule, run_engine_loop
from .editing import EditSettings, edit_images, finish_pixels, frame_pixels, guide_to_bchw, latent_factor, mask_to_b1hw
from .inputs import MODEL_INPUTS, SDEditNode, inputs

CATEGORY = "SDEdit/SDE family"


def _frame(vae, pixels, mask, what: str):
    """The framing of ``pixels`` (B, 3, H, W) (:mod:`sdedit_engine.core.framing`, the pipeline's rules):
    latent and latent mask by the max rule; a given mask must edit something."""
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
                "follow the paper (t0 0.6, 10x10 latent patches, CFG ramping up to 3) except the step count: 30 instead of "
                "the paper's 120, a quarter of the cost with the same landing accuracy (BENCHMARKS.md §7)."
            ),
            inputs=inputs(
                *MODEL_INPUTS, "image", "points", "mask", "t0", "steps", "cfg", "step_size", "patch_radius", "beta",
                "alpha", "seed", "keep_unmasked_pixels", "t0_scale",
                image={"tooltip": "The image to drag-edit (512x512 suits SD1.x). RGBA: alpha is ignored."},
                mask={"tooltip": "Optional editable area (1 = may change). Outside it the image is kept exactly."},
                t0={"default": 0.6},
                steps={"default": DEFAULT_DRAG_STEPS,
                       "tooltip": f"Reverse steps from t0 (default {DEFAULT_DRAG_STEPS}; the paper: 120 = 0.6 of a "
                                  "200-step grid, 4x the cost). Each drag iteration costs 2 x steps model calls."},
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
        distilled = guidance_distilled(model)  # Flux-dev/schnell: the CFG ramp is a no-op (core.drag.guidance_ramp)
        plan = plan_drag(points, pixels.shape[-1], pixels.shape[-2], factor=latent_factor(vae),
                         schedule=model_schedule(model, t0_scale or "model"), t0=t0, steps=steps, guidance_scale=cfg,
                         step_size=step_size, guidance_distilled=distilled)
        if distilled:
            cfg = 1.0
        fr = _frame(vae, pixels, mask, "drag")

        def algorithm(denoiser, lat, report):
            return plan.run(denoiser, lat, mask=fr.latent_mask, radius=patch_radius, beta=beta, alpha=alpha, seed=seed,
                            cfg_arg="cfg", callback=report)

        out = run_engine_loop(model, positive, negative, fr.latent, cfg=cfg, sigmas=plan.sigmas, algorithm=algorithm,
                              total_steps=plan.total_steps, seed=seed)
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
                "mask_threshold", "seed", "keep_unmasked_pixels", "t0_scale", "mask_t0", "mask_repeats",
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
                keep_unmasked_pixels=True, mask=None, t0_scale="model", mask_t0=0.5, mask_repeats=10) -> io.NodeOutput:
        if mode not in ("sde", "ode"):
            raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")
        fr = _frame(vae, guide_to_bchw(image, "image"), mask, "edit")
        schedule = model_schedule(model, t0_scale or "model")
        cfg_note(model, cfg)
        levels = cycle_sigmas(schedule, t0, steps)
        found = {}

        def algorithm(denoiser, lat, report):
            out, found["mask"] = auto_diffedit(denoiser, lat, fr.latent_mask, source_args={"prompt": "source"},
                                               target_args={"prompt": "positive"}, sigmas=levels, mode=mode, seed=seed,
                                               mask_t0=mask_t0, mask_repeats=mask_repeats,
                                               mask_threshold=mask_threshold, schedule=schedule, callback=report)
            return out

        total = diffedit_steps(steps, fr.latent_mask is not None, mask_repeats)
        out = run_engine_loop(model, target, negative, fr.latent, cfg=cfg, sigmas=levels, algorithm=algorithm,
                              total_steps=total, seed=seed, extra_conds={"source": source})
        if fr.latent_mask is None:
            fr = fr.with_latent_mask(found["mask"])
        images = imaging.to_bhwc(finish_pixels(vae, fr, out, keep_unmasked_pixels))
        return io.NodeOutput(images, fr.mask[:, 0].contiguous())
