"""Image-level SDEdit for the nodes: checks, VAE round trip, crop-to-mask and exact composite-back.

ComfyUI IMAGEs are (B, H, W, C) floats in [0, 1] and MASKs (B, H, W); the engine's imaging helpers
work on (B, C, H, W). What this module accepts, and what it does with it:

- RGBA guides: the alpha channel is dropped (ComfyUI's LoadImage already gives it as a MASK).
- Sizes that are not multiples of 8: padded (edge pixels repeated) for the VAE, cropped back after.
- A mask (H, W) or (1, H, W) applies to every guide in the batch; otherwise its batch must equal the
  guide's. Its size must equal the guide's. An all-zero mask is an error (nothing to edit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..sdedit_engine.io import imaging
from .backend import sdedit_latent


def guide_to_bchw(image, name: str = "guide") -> torch.Tensor:
    """A ComfyUI IMAGE as (B, 3, H, W) float32, alpha dropped; clear errors for anything else."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE of shape (batch, height, width, channels), got {shape}")
    if image.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected 3 (RGB) or 4 (RGBA) channels, got {image.shape[-1]}")
    if image.shape[1] < 8 or image.shape[2] < 8:
        raise ValueError(f"{name}: image is {image.shape[2]}x{image.shape[1]}; it must be at least 8x8 pixels")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name}: image contains NaN or inf values")
    return imaging.from_bhwc(image[..., :3].float().clamp(0, 1))


def mask_to_b1hw(mask, guide: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A ComfyUI MASK as (1 or B, 1, H, W) matching ``guide`` (B, 3, H, W); clear errors otherwise."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a MASK of shape (batch, height, width), got {shape}")
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"{name}: expected a single-channel mask, got shape {tuple(mask.shape)}")
        m = m[:, 0]
    b, h, w = guide.shape[0], guide.shape[-2], guide.shape[-1]
    if tuple(m.shape[-2:]) != (h, w):
        raise ValueError(
            f"{name}: mask is {m.shape[-1]}x{m.shape[-2]} but the guide is {w}x{h} (width x height); "
            "resize the mask to the image size"
        )
    if m.shape[0] not in (1, b):
        raise ValueError(f"{name}: mask batch is {m.shape[0]} but the guide batch is {b}; use 1 mask or one per image")
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name}: mask contains NaN or inf values")
    m = m.clamp(0, 1)[:, None]
    if not bool((m > 0).any()):
        raise ValueError(f"{name}: mask is empty (all zero), so there is nothing to edit; leave it unconnected to edit the whole image")
    return m


@dataclass
class EditSettings:
    """Everything of one SDEdit run that is not an image."""

    cfg: float
    t0: float
    steps: int
    sampler_name: str
    repeats: int
    seed: int
    spacing: str = "uniform"
    known_noise: str = "fresh"


def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels in [0, 1] → ComfyUI latent (H, W multiples of the VAE factor)."""
    return vae.encode(imaging.to_bhwc(pixels))


def decode_latent(vae, latent: torch.Tensor) -> torch.Tensor:
    """ComfyUI latent → (B, 3, H, W) float pixels on the CPU."""
    images = vae.decode(latent)
    if images.ndim == 5:  # some VAEs return (B, T, H, W, C)
        images = images.reshape(-1, *images.shape[-3:])
    return imaging.from_bhwc(images.float().cpu())


def _edit_region(model, positive, negative, vae, pixels, mask, settings: EditSettings):
    """Pad to a multiple of 8, encode, SDEdit, decode, unpad: (edited pixels, latent)."""
    padded, size = imaging.pad_to_multiple(pixels, 8)
    latent = encode_pixels(vae, padded)
    latent_mask = None
    if mask is not None:
        latent_mask = torch.nn.functional.pad(mask, (0, padded.shape[-1] - size[1], 0, padded.shape[-2] - size[0]))
    out = sdedit_latent(
        model,
        positive,
        negative,
        latent,
        mask=latent_mask,
        cfg=settings.cfg,
        t0=settings.t0,
        steps=settings.steps,
        sampler_name=settings.sampler_name,
        repeats=settings.repeats,
        seed=settings.seed,
        spacing=settings.spacing,
        known_noise=settings.known_noise,
    )
    return imaging.unpad(decode_latent(vae, out), size), out


def _grow_and_feather(mask: torch.Tensor, grow: int, feather: float) -> torch.Tensor:
    """Grow then feather the mask inside a window around its bounding box only.

    The window's margin exceeds both reaches, so the kept (0) and fully edited (1) areas are exactly
    those of doing it over the whole image, and soft values agree to float rounding (≤ 2e-7); but a
    512² mask in a 4096² image costs 0.1-0.4 s instead of 4-8 s (BENCHMARKS.md §3)."""
    box = imaging.mask_bbox(mask)
    if box is None:
        return mask
    h, w = mask.shape[-2:]
    margin = 2 * (abs(grow) + math.ceil(1.5 * feather) + 2)
    x0, y0, x1, y1 = max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, w), min(box[3] + margin, h)
    out = torch.zeros_like(mask)
    window = mask[..., y0:y1, x0:x1]
    out[..., y0:y1, x0:x1] = imaging.feather_mask(imaging.grow_mask(window, grow), feather)
    return out


@torch.no_grad()
def edit_images(
    model,
    positive,
    negative,
    vae,
    guide: torch.Tensor,
    mask: torch.Tensor | None,
    settings: EditSettings,
    *,
    mask_grow: int = 0,
    mask_feather: float = 0.0,
    keep_unmasked_pixels: bool = True,
    crop: bool = False,
    crop_padding: int = 32,
    crop_resolution: int = 512,
):
    """SDEdit a batch of guide images (B, 3, H, W); returns (images (B, 3, H, W), latent).

    With ``crop`` the mask's bounding box (plus ``crop_padding``) is edited at ``crop_resolution`` on its
    long side and stitched back, so the cost follows the mask, not the image.
    """
    if mask is not None:
        mask = _grow_and_feather(mask, int(mask_grow), float(mask_feather))
        if mask.shape[0] == 1 and guide.shape[0] > 1:
            mask = mask.expand(guide.shape[0], -1, -1, -1).contiguous()
    if crop and mask is not None:
        crop_img, crop_mask, box = imaging.crop_to_mask(guide, mask, padding=int(crop_padding), multiple_of=8)
        scale = float(crop_resolution) / max(crop_img.shape[-2:])
        target = (max(8, round(crop_img.shape[-2] * scale / 8) * 8), max(8, round(crop_img.shape[-1] * scale / 8) * 8))
        work = imaging.resize(crop_img, target)
        work_mask = imaging.resize(crop_mask, target, mode="bilinear")
        edited, latent = _edit_region(model, positive, negative, vae, work, work_mask, settings)
        edited = imaging.resize(edited, crop_img.shape[-2:])
        result = imaging.stitch(guide, edited, box, crop_mask if keep_unmasked_pixels else None)
        return result, latent
    edited, latent = _edit_region(model, positive, negative, vae, guide, mask, settings)
    if keep_unmasked_pixels and mask is not None:
        edited = imaging.composite(edited, guide, mask)
    return edited, latent
