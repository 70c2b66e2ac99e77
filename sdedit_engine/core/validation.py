"""Input checks shared by every entry point: each raises a ``ValueError`` that names the argument and
says what is allowed, so a front end (ComfyUI node, CLI) can show it as is."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def check_finite_tensor(name: str, value, min_ndim: int = 0) -> torch.Tensor:
    """A floating-point tensor without NaN or inf, with at least ``min_ndim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {value.dtype}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions (batch first), got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def check_guidance_scale(value, name: str = "guidance_scale") -> float:
    """A classifier-free guidance scale: a real number (not a string or bool), finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (1 = no guidance), got {value!r}")
    return float(value)


def check_mask(mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """A mask broadcastable to ``like`` with values in [0, 1] (1 = editable, 0 = keep).

    A bool mask is converted to ``like``'s dtype; a floating mask must already have that dtype, so a
    silent precision change never hides a bug. Returns the mask on ``like``'s device.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        mask = mask.to(like.dtype)
    elif not mask.is_floating_point():
        raise ValueError(f"mask must be a bool or floating-point tensor with values in [0, 1], got {mask.dtype}")
    elif mask.dtype != like.dtype:
        raise ValueError(
            f"mask dtype {mask.dtype} does not match guide dtype {like.dtype}; convert it with mask.to({like.dtype})"
        )
    try:
        shape = torch.broadcast_shapes(mask.shape, like.shape)
    except RuntimeError:
        shape = None
    if shape != like.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not broadcast to the latent shape {tuple(like.shape)}; "
            "resize it to the latent resolution (e.g. (B, 1, H/8, W/8) for a VAE with factor 8)"
        )
    if not bool(torch.isfinite(mask).all()):
        raise ValueError("mask contains NaN or inf values")
    if bool((mask < 0).any()) or bool((mask > 1).any()):
        raise ValueError(
            f"mask values must lie in [0, 1] (1 = editable, 0 = keep), got range "
            f"[{float(mask.min()):.4g}, {float(mask.max()):.4g}]"
        )
    return mask.to(like.device)


def check_sigmas(sigmas) -> torch.Tensor:
    """A 1-D, finite, non-negative, strictly decreasing σ grid with at least two values (float64, CPU).

    The grid rule of every entry point (engine, nodes, CLI): a grid never holds a repeated σ. A
    non-increasing grid is accepted and its repeats are dropped: a step σ → σ is a zero-length step
    (a no-op of the exact reverse SDE and of the first-order samplers, but h = log(σ/σ) = 0 divides by
    zero in the multistep ones), so dropping it changes no result and saves its model call.
    """
    sigmas = torch.as_tensor(sigmas).detach().flatten().to(torch.float64).cpu()
    if sigmas.numel() < 2:
        raise ValueError(f"sigmas must hold at least 2 values (one step), got {sigmas.numel()}")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise ValueError("sigmas must be finite and non-negative")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("sigmas must be non-increasing (from the start noise level down to 0)")
    if float(sigmas[0]) <= 0:
        raise ValueError("sigmas must start above 0")
    keep = torch.ones_like(sigmas, dtype=torch.bool)
    keep[1:] = sigmas[1:] < sigmas[:-1]
    sigmas = sigmas[keep]
    if sigmas.numel() < 2:
        raise ValueError("sigmas must hold at least 2 distinct values (one step)")
    return sigmas
