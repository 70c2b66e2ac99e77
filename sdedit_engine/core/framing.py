"""Pixel ↔ latent framing, one copy for every backend (diffusers pipeline, ComfyUI nodes, the SDE
family): which pixels the model works on, which latent cells it may change, and how the result goes
back into the image. Torch only; the VAE comes in as two callables and its factor as an int.

**prepare** (:func:`frame`)::

    pixel mask m (B|1, 1, H, W), 1 = edit
      → grow / feather inside a window around the mask       (masks.grow_and_feather)
      → optional crop: the mask's box + padding, optionally resized (Crop)
      → pad bottom/right to the latent factor f, edge pixels repeated
      → encode(padded) = latent z of shape (…, h, w), h = H'/f
      → latent mask M[i, j] = max of m over cell (i, j)        (the one latent-mask rule)

**finish** (:func:`finish`)::

    decode(z') → unpad → resize back (crop only) → composite the kept pixels → stitch the crop

*The latent-mask rule is* ``max`` *("any painted pixel in the cell edits the cell").* Kept pixels
are restored exactly by the composite in pixel space, so an edited cell costs nothing outside the
painted pixels, whereas a rule that can leave a painted pixel's cell unedited (area > 0.5, or
ComfyUI's bilinear resize, which samples rows 8i+3 and 8i+4 and misses a 2-px stroke between them)
silently returns the VAE round trip there (issue 14 item 2). Soft values are honoured: a cell takes
its most editable pixel's value. A resized crop keeps every painted pixel too: the native mask is
resampled by adaptive max pooling, whose windows cover every pixel.

*The padding rule is replicate, for image and mask alike.* The VAE then sees a continued edge rather
than a black bar (which would bleed into the last real rows after decoding), and under the max rule
the padded pixels cannot decide anything: the padding (< f pixels) only fills the last partial cell,
which also holds the real edge pixels the padding copies. The padding is cropped away after decoding.

*Cropping* (:class:`Crop`) is one concept for both front ends: work on the mask's bounding box plus
``padding`` pixels of context (sides multiples of f), at its native resolution (``resolution=None``,
the pipeline's ``crop_padding``) or resized so its long side is ``resolution`` pixels (the node's
``crop_to_mask`` + ``crop_resolution``: small masks in big images get the model's native detail).
The mask is grown and feathered before cropping, so the crop contains the whole prepared mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import masks

LATENT_MASK_RULE = "max"
PAD_MODE = "replicate"

Encode = Callable[[torch.Tensor], torch.Tensor]
Decode = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Crop:
    """Edit only the mask's bounding box plus ``padding`` pixels; ``resolution`` (long side, pixels)
    resizes that region for the model, None keeps its native resolution."""

    padding: int = 32
    resolution: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"crop padding must be an integer >= 0 pixels, got {self.padding!r}")
        r = self.resolution
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 8):
            raise ValueError(f"crop resolution must be None (native) or an integer >= 8 pixels, got {r!r}")

    def working_size(self, height: int, width: int, factor: int) -> tuple[int, int]:
        """The crop's size for the model: native, or long side ≈ ``resolution`` in multiples of ``factor``."""
        if self.resolution is None:
            return height, width
        scale = float(self.resolution) / max(height, width)
        return (max(factor, round(height * scale / factor) * factor), max(factor, round(width * scale / factor) * factor))


@dataclass
class Frame:
    """One prepared edit. Pixels ``(B, 3, H, W)`` on the CPU side, masks ``(B|1, 1, ·, ·)``."""

    image: torch.Tensor  # the full original
    mask: Optional[torch.Tensor]  # prepared (grown/feathered) full-size pixel mask; None = edit everything
    box: Optional[tuple[int, int, int, int]]  # crop box (x0, y0, x1, y1) in image pixels, None = whole image
    region: torch.Tensor  # the worked pixels at native resolution (the crop, or the image)
    region_mask: Optional[torch.Tensor]  # the mask of the worked pixels at native resolution
    padded: torch.Tensor  # the worked pixels at working resolution, padded to the factor
    size: tuple[int, int]  # working resolution before padding
    factor: int
    latent: Optional[torch.Tensor] = None
    latent_mask: Optional[torch.Tensor] = None

    @property
    def resized(self) -> bool:
        return tuple(self.size) != tuple(self.region.shape[-2:])

    def latent_mask_for(self, latent_size: tuple[int, int]) -> Optional[torch.Tensor]:
        """The region mask on the latent grid by the one rule (max over each cell), on the CPU."""
        if self.region_mask is None:
            return None
        m = self.region_mask.float()
        if self.resized:  # max resampling keeps every painted pixel
            m = F.adaptive_max_pool2d(m, tuple(self.size))
        m, _ = masks.pad_to_multiple(m, self.factor, PAD_MODE)
        return masks.latent_mask(m, tuple(latent_size), LATENT_MASK_RULE)

    def map_image(self, other: torch.Tensor) -> torch.Tensor:
        """Another image (e.g. a ControlNet hint) framed like the worked pixels: an image of the full
        image's size is cropped to the box, then resized to the working size and padded like them;
        other sizes are resized to the padded working size as a whole."""
        if tuple(other.shape[-2:]) != tuple(self.image.shape[-2:]):
            return masks.resize(other, tuple(self.padded.shape[-2:]))
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            other = other[..., y0:y1, x0:x1]
        return masks.pad_to_multiple(masks.resize(other, tuple(self.size)), self.factor, PAD_MODE)[0]

    def with_latent_mask(self, latent_mask: torch.Tensor) -> "Frame":
        """Adopt a mask found on the latent grid (DiffEdit's automatic mask): the pixel mask becomes
        its nearest-neighbour upsampling, so :meth:`latent_mask_for` gives ``latent_mask`` back."""
        lm = latent_mask.float().cpu()
        m = F.interpolate(lm, size=tuple(self.padded.shape[-2:]), mode="nearest")
        m = masks.unpad(m, self.size)
        if self.resized:
            m = F.interpolate(m, size=tuple(self.region.shape[-2:]), mode="nearest")
        full = m
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            full = torch.zeros(m.shape[0], 1, *self.image.shape[-2:], dtype=m.dtype)
            full[..., y0:y1, x0:x1] = m
        return replace(self, mask=full.contiguous(), region_mask=m.contiguous(), latent_mask=latent_mask)


def prepare_mask(mask: torch.Tensor, grow: int = 0, feather: float = 0.0, name: str = "mask") -> torch.Tensor:
    """Grow then feather (windowed, :func:`~sdedit_engine.core.masks.grow_and_feather`); refuses the
    case where the input paints something and nothing editable is left (a tiny mask feathered away
    below the 1e-4 cut, or eroded away), instead of returning the image unedited."""
    out = masks.grow_and_feather(mask, int(grow), float(feather))
    if out is not mask and not bool((out > 0).any()) and bool((mask > 0).any()):
        raise ValueError(f"{name}: growing by {int(grow)} px and feathering by {float(feather):g} px leaves no "
                         "editable pixel (the painted area is too small for that feather); lower the feather or grow the mask")
    return out


def frame(image: torch.Tensor, mask: Optional[torch.Tensor] = None, *, factor: int, encode: Optional[Encode] = None,
          grow: int = 0, feather: float = 0.0, crop: Optional[Crop] = None, name: str = "mask") -> Frame:
    """Prepare ``image`` (B, 3, H, W) and its editable ``mask`` (B|1, 1, H, W, or None) for a latent
    model with spatial factor ``factor``; with ``encode`` the latent and the latent mask (by the max
    rule, on the latent's device and dtype) are filled in. See the module docstring for each step."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer (the VAE's downscale), got {factor!r}")
    if mask is not None:
        masks.check_same_size(image, mask)
        mask = prepare_mask(mask, grow, feather, name)
    region, region_mask, box = image, mask, None
    if crop is not None:
        if mask is None:
            raise ValueError("crop needs a mask (the crop is the mask's bounding box)")
        region, region_mask, box = masks.crop_to_mask(image, mask, crop.padding, factor)
    size = crop.working_size(*region.shape[-2:], factor) if crop is not None else tuple(region.shape[-2:])
    work = masks.resize(region, size) if tuple(size) != tuple(region.shape[-2:]) else region
    padded, size = masks.pad_to_multiple(work, factor, PAD_MODE)
    out = Frame(image, mask, box, region, region_mask, padded, tuple(size), factor)
    if encode is not None:
        out.latent = encode(padded)
        lm = out.latent_mask_for(tuple(out.latent.shape[-2:]))
        out.latent_mask = None if lm is None else lm.to(out.latent.device, out.latent.dtype)
    return out


def require_editable(fr: Frame, what: str) -> None:
    """Refuse a frame whose mask edits nothing (an all-zero mask) for edits that need an area."""
    if fr.latent_mask is not None and not bool((fr.latent_mask > 0).any()):
        raise ValueError(f"mask: nothing to {what} (the mask is all black); paint the area to edit")


def finish(fr: Frame, pixels: torch.Tensor, composite: bool = True) -> torch.Tensor:
    """Decoded pixels of the padded working region → the full image (B, 3, H, W): unpad, resize
    back to the region's native size, paste the original back where the mask is 0 (bit for bit;
    ``composite=False`` keeps the VAE round trip inside the region), stitch the crop into the image."""
    out = masks.unpad(pixels, fr.size)
    if fr.resized:
        out = masks.resize(out, tuple(fr.region.shape[-2:]))
    if composite and fr.region_mask is not None:
        out = masks.composite(out, fr.region, fr.region_mask)
    if fr.box is not None:
        out = masks.stitch(fr.image, out, fr.box)
    return out


def decode_and_finish(fr: Frame, latents: torch.Tensor, decode: Decode, composite: bool = True) -> torch.Tensor:
    """:func:`finish` of ``decode(latents)`` (the decoder returns (B, 3, H', W') pixels in [0, 1])."""
    return finish(fr, decode(latents), composite)
