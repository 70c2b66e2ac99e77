"""Guide builders: strokes over a base image, and a pasted patch (compositing)."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..sdedit_engine.io import imaging
from .editing import guide_to_bchw
from .inputs import SDEditNode, build

CATEGORY = "SDEdit/guides"


def _stroke_coverage(base: torch.Tensor, strokes_bhwc: torch.Tensor, stroke_mask, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) stroke coverage in [0, 1]: the alpha channel, else the mask, else where pixels differ."""
    if strokes_bhwc.shape[-1] == 4:
        return strokes_bhwc[..., 3:4].float().clamp(0, 1).permute(0, 3, 1, 2)
    strokes = guide_to_bchw(strokes_bhwc, "strokes")
    if stroke_mask is not None and not bool((stroke_mask > 0).any()):
        stroke_mask = None  # LoadImage gives an all-zero 64x64 MASK for images without alpha: no mask
    if stroke_mask is not None:
        m = stroke_mask.float()
        m = m[None] if m.ndim == 2 else m
        if tuple(m.shape[-2:]) != tuple(strokes.shape[-2:]):
            raise ValueError(f"stroke_mask: mask is {m.shape[-1]}x{m.shape[-2]} but strokes are {strokes.shape[-1]}x{strokes.shape[-2]}")
        return m[:, None].clamp(0, 1)
    diff = (strokes - base).abs().amax(dim=1, keepdim=True)
    return (diff > threshold).to(strokes.dtype)


class SDEditStrokeGuide(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditStrokeGuide",
            display_name="SDEdit Stroke Guide",
            category=CATEGORY,
            description=(
                "Lays a stroke layer over a base image and returns the SDEdit guide plus a mask of the strokes (grown), "
                "for masked stroke editing. Stroke coverage comes from the stroke image's alpha channel, else from "
                "stroke_mask, else from the pixels where strokes differ from the base."
            ),
            inputs=[
                io.Image.Input("base", tooltip="The photo or image to edit."),
                io.Image.Input("strokes", tooltip="The stroke layer, same size as base: an RGBA image (alpha = strokes), "
                               "or RGB with stroke_mask, or the base with strokes painted over it."),
                io.Mask.Input("stroke_mask", optional=True, tooltip=(
                    "Where the strokes are (1 = stroke), when the stroke image has no alpha. Note: LoadImage's MASK "
                    "is 1 where the image is transparent, so invert it first for a stroke layer. An all-zero mask "
                    "(LoadImage's for images without transparency) counts as no mask.")),
                build("grow", default=16, tooltip="Grow the stroke mask by this many pixels, so the edit reaches a little beyond the strokes."),
                io.Float.Input("threshold", default=0.02, min=0.0, max=1.0, step=0.005, tooltip=(
                    "When neither alpha nor stroke_mask is given: how much a pixel must differ from the base to "
                    "count as a stroke.")),
            ],
            outputs=[
                io.Image.Output("GUIDE", display_name="guide", tooltip="Base with the strokes laid over it."),
                io.Mask.Output("MASK", display_name="mask", tooltip="The strokes' area, grown: connect to SDEdit's mask."),
            ],
        )

    @classmethod
    def execute(cls, base, strokes, grow, threshold, stroke_mask=None) -> io.NodeOutput:
        base_px = guide_to_bchw(base, "base")
        if not isinstance(strokes, torch.Tensor) or strokes.ndim != 4:
            raise ValueError("strokes: expected an IMAGE of shape (batch, height, width, channels)")
        if tuple(strokes.shape[1:3]) != tuple(base.shape[1:3]):
            raise ValueError(f"strokes: image is {strokes.shape[2]}x{strokes.shape[1]} but base is {base.shape[2]}x{base.shape[1]}")
        if strokes.shape[0] not in (1, base.shape[0]):
            raise ValueError(f"strokes: batch is {strokes.shape[0]} but base batch is {base.shape[0]}; use 1 or the same number")
        coverage = _stroke_coverage(base_px, strokes, stroke_mask, threshold)
        stroke_px = guide_to_bchw(strokes, "strokes")
        guide = imaging.composite(stroke_px.expand_as(base_px), base_px, coverage.expand(base_px.shape[0], -1, -1, -1))
        mask = imaging.grow_mask((coverage > 0).to(guide.dtype), int(grow))
        if not bool(mask.any()):
            raise ValueError("strokes: no strokes found (the stroke layer is empty or equals the base)")
        mask = mask.expand(guide.shape[0], -1, -1, -1)
        return io.NodeOutput(imaging.to_bhwc(guide), mask[:, 0].contiguous())


class SDEditCompositeGuide(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditCompositeGuide",
            display_name="SDEdit Composite Guide",
            category=CATEGORY,
            description=(
                "Pastes a patch (with an optional mask) onto a base image at x, y and returns the composite as the "
                "SDEdit guide plus the pasted area as the mask (grown), so SDEdit blends the patch in realistically. "
                "Parts of the patch outside the base are clipped."
            ),
            inputs=[
                io.Image.Input("base", tooltip="The image to paste onto."),
                io.Image.Input("patch", tooltip="The patch to paste (its first image is used)."),
                io.Int.Input("x", default=0, min=-16384, max=16384, tooltip="Left edge of the patch on the base, in pixels."),
                io.Int.Input("y", default=0, min=-16384, max=16384, tooltip="Top edge of the patch on the base, in pixels."),
                io.Mask.Input("patch_mask", optional=True, tooltip="Which pixels of the patch to paste (1 = paste); the whole rectangle if unconnected."),
                build("grow", tooltip="Grow the pasted area's mask by this many pixels, so the seam is re-synthesised too."),
            ],
            outputs=[
                io.Image.Output("GUIDE", display_name="guide", tooltip="The composite."),
                io.Mask.Output("MASK", display_name="mask", tooltip="The pasted area, grown: connect to SDEdit's mask."),
            ],
        )

    @classmethod
    def execute(cls, base, patch, x, y, grow, patch_mask=None) -> io.NodeOutput:
        base_px = guide_to_bchw(base, "base")
        patch_px = guide_to_bchw(patch, "patch")[:1]
        pm = None
        if patch_mask is not None:
            pm = patch_mask.float()
            pm = (pm[None] if pm.ndim == 2 else pm)[:1, None]
            if tuple(pm.shape[-2:]) != tuple(patch_px.shape[-2:]):
                raise ValueError(f"patch_mask: mask is {pm.shape[-1]}x{pm.shape[-2]} but the patch is {patch_px.shape[-1]}x{patch_px.shape[-2]}")
        bh, bw = base_px.shape[-2:]
        ph, pw = patch_px.shape[-2:]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, bw), min(y + ph, bh)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"x, y: a {pw}x{ph} patch at ({x}, {y}) lies entirely outside the {bw}x{bh} base")
        patch_px = patch_px[..., y0 - y:y1 - y, x0 - x:x1 - x]
        pm = pm[..., y0 - y:y1 - y, x0 - x:x1 - x] if pm is not None else None
        guide, mask = imaging.paste_patch(base_px, patch_px, pm, x0, y0)
        mask = imaging.grow_mask(mask, int(grow))
        return io.NodeOutput(imaging.to_bhwc(guide), mask[:, 0].contiguous())
