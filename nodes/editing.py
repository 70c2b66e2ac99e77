"""Image-level SDEdit for the nodes: checks, VAE round trip, crop-to-mask and exact composite-back.

ComfyUI IMAGEs are (B, H, W, C) floats in [0, 1] and MASKs (B, H, W); the engine's imaging helpers
work on (B, C, H, W). What this module accepts, and what it does with it:

- RGBA guides: the alpha channel is dropped (ComfyUI's LoadImage already gives it as a MASK).
- Sizes that are not multiples of the VAE factor: padded (edge pixels repeated) for the VAE, cropped back
  after (:mod:`sdedit_engine.core.framing`, shared with the diffusers pipeline).
- A mask (H, W) or (1, H, W) applies to every guide in the batch; otherwise its batch must equal the
  guide's. Its size must equal the guide's. An all-zero mask is an error (nothing to edit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sdedit_engine.core import framing
from ..sdedit_engine.core.schedules import DEFAULT_SPACING
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
    spacing: str = DEFAULT_SPACING
    known_noise: str = "fresh"
    t0_scale: str = "model"


def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels in [0, 1] → ComfyUI latent (H, W multiples of the VAE factor)."""
    return vae.encode(imaging.to_bhwc(pixels))


def decode_latent(vae, latent: torch.Tensor) -> torch.Tensor:
    """ComfyUI latent → (B, 3, H, W) float pixels on the CPU."""
    images = vae.decode(latent)
    if images.ndim == 5:  # some VAEs return (B, T, H, W, C)
        images = images.reshape(-1, *images.shape[-3:])
    return imaging.from_bhwc(images.float().cpu())


def latent_factor(vae) -> int:
    """The VAE's spatial factor (8 for SD1.x/SD2.x/SDXL)."""
    ratio = getattr(vae, "downscale_ratio", 8)
    return ratio if isinstance(ratio, int) and ratio > 0 else 8


def frame_pixels(vae, pixels: torch.Tensor, mask: torch.Tensor | None = None, **kwargs) -> framing.Frame:
    """:func:`sdedit_engine.core.framing.frame` with this ComfyUI VAE (latent + latent mask filled in)."""
    return framing.frame(pixels, mask, factor=latent_factor(vae), encode=lambda px: encode_pixels(vae, px), **kwargs)


def finish_pixels(vae, fr: framing.Frame, latent: torch.Tensor, keep_unmasked_pixels: bool = True) -> torch.Tensor:
    """Decode ``latent`` and put it back into the image (:func:`sdedit_engine.core.framing.finish`)."""
    return framing.finish(fr, decode_latent(vae, latent), keep_unmasked_pixels)


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
    long side and stitched back, so the cost follows the mask, not the image. The mask is grown and
    feathered, mapped to the latent grid and composited back by :mod:`sdedit_engine.core.framing`
    (the diffusers pipeline's rules): the engine's latent mask, not ComfyUI's bilinear resize, so a
    stroke thinner than a latent cell is edited rather than dropped.
    """
    crop_spec = framing.Crop(int(crop_padding), int(crop_resolution)) if crop and mask is not None else None
    fr = frame_pixels(vae, guide, mask, grow=int(mask_grow), feather=float(mask_feather), crop=crop_spec,
                      name="mask_feather" if mask_feather else "mask")
    out = sdedit_latent(model, positive, negative, fr.latent, mask=fr.latent_mask, cfg=settings.cfg, t0=settings.t0,
                        steps=settings.steps, sampler_name=settings.sampler_name, repeats=settings.repeats,
                        seed=settings.seed, spacing=settings.spacing, known_noise=settings.known_noise,
                        t0_scale=settings.t0_scale)
    return finish_pixels(vae, fr, out, keep_unmasked_pixels), out
