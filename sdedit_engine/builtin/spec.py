"""The built-in model's fixed parts (torch only): schedule, the lossless "latent" and the UNet config.

**Latent = pixel unshuffle (space-to-depth, factor 2).** ``z = unshuffle(2x − 1)`` maps a
``(B, 3, 64, 64)`` image in [0, 1] to ``(B, 12, 32, 32)`` in [−1, 1]; ``decode`` is its exact inverse.
It is an autoencoder with nothing to train and zero reconstruction error, and it quarters the
UNet's spatial work, which is what makes 64² trainable on a CPU. Because it has a spatial factor of
2, every mask and framing rule of the engine runs with a latent factor ≠ 1 exactly as with SD's VAE (8).

**Schedule**: DDPM's linear betas 1e-4 … 0.02 over 1000 steps, ε-prediction — the pixel-space
default, wrapped by :class:`~sdedit_engine.core.denoisers.DiscreteTimeDenoiser` like any
diffusers UNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.schedules import DiscreteSchedule

LATENT_FACTOR = 2
LATENT_CHANNELS = 3 * LATENT_FACTOR**2
IMAGE_SIZE = 64
BETA_START, BETA_END, NUM_TIMESTEPS = 1e-4, 0.02, 1000
PREDICTION_TYPE = "epsilon"

# diffusers UNet2DModel keyword arguments (the shipped config.json is written from this)
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE // LATENT_FACTOR,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=32,
    norm_num_groups=16,
)


def schedule() -> DiscreteSchedule:
    """The built-in model's discrete VP schedule (linear betas)."""
    return DiscreteSchedule.linear(BETA_START, BETA_END, NUM_TIMESTEPS)


def encode(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → ``(B, 12, H/2, W/2)`` in [−1, 1]; H and W must be even."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-1] % LATENT_FACTOR or images.shape[-2] % LATENT_FACTOR:
        raise ValueError(f"image height and width must be multiples of {LATENT_FACTOR}, got {tuple(images.shape[-2:])}")
    return F.pixel_unshuffle(images * 2 - 1, LATENT_FACTOR)


def decode(latents: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`encode`: ``(B, 12, h, w)`` → ``(B, 3, 2h, 2w)`` in [0, 1] (clamped)."""
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latents must be (B, {LATENT_CHANNELS}, h, w), got {tuple(latents.shape)}")
    return ((F.pixel_shuffle(latents, LATENT_FACTOR) + 1) / 2).clamp(0, 1)
