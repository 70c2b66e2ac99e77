"""The all-in-one ``SDEdit`` node and the ``SDEditT0Sweep`` node."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from ..sdedit_engine.core.schedules import DEFAULT_SPACING
from ..sdedit_engine.io import imaging
from .backend import cfg_note, describe_start, model_schedule
from .editing import EditSettings, edit_images, guide_to_bchw, mask_to_b1hw
from .inputs import SDEditNode, advanced_inputs, mask_inputs, model_inputs, sampling_inputs

CATEGORY = "SDEdit"


def _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise, t0_scale="model") -> EditSettings:
    return EditSettings(cfg=cfg, t0=t0, steps=steps, sampler_name=sampler, repeats=repeats, seed=seed,
                        spacing=spacing or DEFAULT_SPACING, known_noise=known_noise or "fresh", t0_scale=t0_scale or "model")


def start_info(model, t0: float, t0_scale: str, cfg: float | None = None) -> str:
    """The node's text output: where t0 starts on this model (σ, SNR) and any flow-model warning."""
    lines = [describe_start(model_schedule(model, t0_scale or "model"), t0)]
    note = cfg_note(model, cfg) if cfg is not None else ""
    return "\n".join(lines + ([note] if note else []))


def _prepare(guide, mask, crop_to_mask):
    pixels = guide_to_bchw(guide, "guide")
    m = mask_to_b1hw(mask, pixels, "mask") if mask is not None else None
    if crop_to_mask and m is None:
        raise ValueError("crop_to_mask: needs a mask (connect one, or turn crop_to_mask off)")
    return pixels, m


class SDEdit(SDEditNode):
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
                crop_resolution=512, spacing=DEFAULT_SPACING, known_noise="fresh", t0_scale="model") -> io.NodeOutput:
        pixels, m = _prepare(guide, mask, crop_to_mask)
        settings = _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise, t0_scale)
        info = start_info(model, t0, t0_scale, cfg)
        images, latent = edit_images(model, positive, negative, vae, pixels, m, settings, mask_grow=mask_grow,
                                     mask_feather=mask_feather, keep_unmasked_pixels=keep_unmasked_pixels,
                                     crop=crop_to_mask, crop_padding=crop_padding, crop_resolution=crop_resolution)
        return io.NodeOutput(imaging.to_bhwc(images), {"samples": latent}, ui=ui.PreviewText(info))


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


class SDEditT0Sweep(SDEditNode):
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
                io.String.Output("FAITHFULNESS", display_name="faithfulness", tooltip=(
                    "CSV 't0,l2': mean L2 distance to the guide per t0 (pixels in [0,1], at the guide's "
                    "resolution). Lower is more faithful.")),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, guide, t0_values, steps, cfg, sampler, repeats, seed, mask=None,
                mask_grow=8, mask_feather=8.0, keep_unmasked_pixels=True, crop_to_mask=False, crop_padding=64,
                crop_resolution=512, spacing=DEFAULT_SPACING, known_noise="fresh", t0_scale="model") -> io.NodeOutput:
        t0s = parse_t0_list(t0_values)
        pixels, m = _prepare(guide, mask, crop_to_mask)
        results, labels, rows = [], [], ["t0,l2"]
        info = [start_info(model, t0, t0_scale) for t0 in t0s] + [n for n in [cfg_note(model, cfg)] if n]
        for t0 in t0s:
            settings = _settings(t0, steps, cfg, sampler, repeats, seed, spacing, known_noise, t0_scale)
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
        return io.NodeOutput(imaging.to_bhwc(batch), grid, text, ui=ui.PreviewText(text + "\n\n" + "\n".join(info)))
