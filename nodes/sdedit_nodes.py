"""The all-in-one ``SDEdit`` node and the ``SDEditT0Sweep`` node."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from ..sdedit_engine.io import imaging
from ..sdedit_engine.core.samplers import SAMPLER_NAMES
from ..sdedit_engine.core.schedules import SPACINGS
from ..sdedit_engine.core.sdedit import KNOWN_NOISE_MODES
from .editing import EditSettings, edit_images, guide_to_bchw, mask_to_b1hw

CATEGORY = "SDEdit"

T0_TOOLTIP = (
    "Noise level to start from, as in the SDEdit paper: 0 keeps the guide, 1 is pure noise. "
    "Small t0 = faithful to your strokes, large t0 = more realistic. It is a noise level "
    "(sigma of timestep round(t0*1000)-1), NOT KSampler's 'denoise', whose noise level depends on the "
    "scheduler (denoise 0.5 with karras is a much weaker edit). Typical: 0.3-0.6. Below 0.0015 (one "
    "timestep) the edit is a single denoise at the lowest noise level, whatever 'steps' says."
)


def model_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The diffusion model (SD1.x, SD2.x incl. v-prediction, SDXL); LoRAs and patches applied upstream are used."),
        io.Conditioning.Input("positive", tooltip="What the edited image should show (ControlNet applied to it is honoured)."),
        io.Conditioning.Input("negative", tooltip="What to steer away from (used when cfg > 1)."),
        io.Vae.Input("vae", tooltip="The VAE that encodes the guide and decodes the result."),
        io.Image.Input("guide", tooltip="The guide: a stroke painting, a photo with strokes, or a composite. RGBA: the alpha channel is ignored. Sizes are padded to a multiple of 8 and cropped back."),
    ]


def sampling_inputs(t0_default: float = 0.5) -> list:
    return [
        io.Float.Input("t0", default=t0_default, min=0.0, max=1.0, step=0.01, tooltip=T0_TOOLTIP),
        io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Solver steps from the noise level t0 down to 0 (model calls per repeat). t0*1000 steps with ddpm reproduces the paper's loop exactly."),
        io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale; 1 disables the negative prompt (and halves the cost)."),
        io.Combo.Input("sampler", options=list(SAMPLER_NAMES), default="dpmpp_2m_sde", tooltip="dpmpp_2m_sde: accurate SDE solver at 20-30 steps (default). ddpm: the paper's ancestral sampler. euler_maruyama: the paper's Algorithm 1 (needs many steps). ddim / dpmpp_2m: deterministic ODE twins, for comparison."),
        io.Int.Input("repeats", default=1, min=1, max=10, tooltip="K: re-noise the result to t0 and solve again, K times in all. Each repeat adds realism and costs another 'steps' model calls."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip="Noise seed. Image i of a batch uses seed+i, so a result never depends on the batch or the device."),
    ]


def mask_inputs() -> list:
    return [
        io.Mask.Input("mask", optional=True, tooltip="Optional editable area (1 = edit, 0 = keep). Must match the guide's size; one mask for the batch or one per image. Leave unconnected to edit the whole image."),
        io.Int.Input("mask_grow", default=8, min=0, max=256, tooltip="Grow the mask by this many pixels before editing, so the edit can blend into its surroundings."),
        io.Float.Input("mask_feather", default=8.0, min=0.0, max=128.0, step=0.5, tooltip="Soften the mask edge over about this many pixels (hides seams)."),
        io.Boolean.Input("keep_unmasked_pixels", default=True, tooltip="Paste the original guide back outside the (feathered) mask after decoding, so unmasked pixels are bit-identical to the input (the VAE round trip would otherwise alter them)."),
        io.Boolean.Input("crop_to_mask", default=False, tooltip="Edit only the mask's bounding box (plus padding) at the working resolution and stitch it back: the cost follows the mask, not the image. Needs a mask."),
        io.Int.Input("crop_padding", default=64, min=0, max=1024, tooltip="Context around the mask's bounding box, in pixels, when cropping."),
        io.Int.Input("crop_resolution", default=512, min=64, max=4096, step=8, tooltip="Working resolution (long side) of the cropped region: 512 for SD1.x, 1024 for SDXL."),
    ]


def advanced_inputs() -> list:
    return [
        io.Combo.Input("spacing", options=list(SPACINGS), default="uniform", optional=True, tooltip="Spacing of the steps between t0 and 0: uniform in timestep (paper) or karras (more steps at low noise)."),
        io.Combo.Input("known_noise", options=list(KNOWN_NOISE_MODES), default="fresh", optional=True, tooltip="Noise for re-noising the kept area at each step: fresh (default) or one fixed tensor per repeat (the official code and ComfyUI's inpainting)."),
    ]


def _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise) -> EditSettings:
    return EditSettings(cfg=cfg, t0=t0, steps=steps, sampler_name=sampler, repeats=repeats, seed=seed,
                        spacing=spacing or "uniform", known_noise=known_noise or "fresh")


def _prepare(guide, mask, crop_to_mask):
    pixels = guide_to_bchw(guide, "guide")
    m = mask_to_b1hw(mask, pixels, "mask") if mask is not None else None
    if crop_to_mask and m is None:
        raise ValueError("crop_to_mask: needs a mask (connect one, or turn crop_to_mask off)")
    return pixels, m


class SDEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEdit",
            display_name="SDEdit (strokes / composite → image)",
            category=CATEGORY,
            description=(
                "SDEdit (Meng et al., ICLR 2022): noise the guide up to the noise level t0, then solve the reverse SDE "
                "with the model. Turns stroke paintings and rough composites into realistic images that follow them; "
                "with a mask, only the masked area changes and the rest is kept pixel-exact."
            ),
            inputs=model_inputs() + sampling_inputs() + mask_inputs() + advanced_inputs(),
            outputs=[
                io.Image.Output("IMAGE", display_name="image", tooltip="The edited images."),
                io.Latent.Output("LATENT", display_name="latent", tooltip="The edited latents (of the cropped region when crop_to_mask is on)."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, guide, t0, steps, cfg, sampler, repeats, seed, mask=None,
                mask_grow=8, mask_feather=8.0, keep_unmasked_pixels=True, crop_to_mask=False, crop_padding=64,
                crop_resolution=512, spacing="uniform", known_noise="fresh") -> io.NodeOutput:
        pixels, m = _prepare(guide, mask, crop_to_mask)
        settings = _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise)
        images, latent = edit_images(model, positive, negative, vae, pixels, m, settings, mask_grow=mask_grow,
                                     mask_feather=mask_feather, keep_unmasked_pixels=keep_unmasked_pixels,
                                     crop=crop_to_mask, crop_padding=crop_padding, crop_resolution=crop_resolution)
        return io.NodeOutput(imaging.to_bhwc(images), {"samples": latent})


def parse_t0_list(text: str) -> list[float]:
    """'0.3, 0.4 0.5' → [0.3, 0.4, 0.5]; each in (0, 1], at most 16 values."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"t0_values: expected numbers separated by commas, e.g. '0.3, 0.4, 0.5', got {text!r}") from None
    if not values:
        raise ValueError("t0_values: give at least one t0, e.g. '0.3, 0.4, 0.5'")
    if len(values) > 16:
        raise ValueError(f"t0_values: at most 16 values, got {len(values)}")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ValueError(f"t0_values: every t0 must be in (0, 1], got {bad}")
    return values


class SDEditT0Sweep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditT0Sweep",
            display_name="SDEdit t0 Sweep",
            category=CATEGORY,
            description=(
                "Runs the same SDEdit at several t0 values (same seed) to show the realism-faithfulness trade-off: "
                "returns every result, a labelled grid, and the faithfulness (L2 distance to the guide) of each."
            ),
            inputs=model_inputs()
            + [io.String.Input("t0_values", default="0.2, 0.3, 0.4, 0.5, 0.6, 0.7", tooltip="Comma-separated t0 values in (0, 1], at most 16.")]
            + sampling_inputs()[1:]
            + mask_inputs()
            + advanced_inputs(),
            outputs=[
                io.Image.Output("IMAGES", display_name="images", tooltip="All results, ordered by t0 then by guide."),
                io.Image.Output("GRID", display_name="grid", tooltip="The results in a grid labelled with t0 and L2."),
                io.String.Output("FAITHFULNESS", display_name="faithfulness", tooltip="CSV 't0,l2': mean L2 distance to the guide per t0 (pixels in [0,1], at the guide's resolution). Lower is more faithful."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, guide, t0_values, steps, cfg, sampler, repeats, seed, mask=None,
                mask_grow=8, mask_feather=8.0, keep_unmasked_pixels=True, crop_to_mask=False, crop_padding=64,
                crop_resolution=512, spacing="uniform", known_noise="fresh") -> io.NodeOutput:
        t0s = parse_t0_list(t0_values)
        pixels, m = _prepare(guide, mask, crop_to_mask)
        results, labels, rows = [], [], ["t0,l2"]
        for t0 in t0s:
            settings = _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise)
            images, _ = edit_images(model, positive, negative, vae, pixels, m, settings, mask_grow=mask_grow,
                                    mask_feather=mask_feather, keep_unmasked_pixels=keep_unmasked_pixels,
                                    crop=crop_to_mask, crop_padding=crop_padding, crop_resolution=crop_resolution)
            l2 = imaging.faithfulness_l2(images, pixels)
            results.append(images)
            labels += [f"t0={t0:.2f} L2={float(v):.2f}" for v in l2]
            rows.append(f"{t0:g},{float(l2.mean()):.4f}")
        batch = torch.cat(results)
        columns = pixels.shape[0] if pixels.shape[0] > 1 else len(labels)  # one row per t0 for batches
        grid = imaging.labelled_grid(batch, labels, columns=columns)
        grid = torch.from_numpy(np.asarray(grid, dtype=np.float32) / 255.0)[None]
        text = "\n".join(rows)
        return io.NodeOutput(imaging.to_bhwc(batch), grid, text, ui=ui.PreviewText(text))
