"""Pixel values: every PIL mode and array dtype to floats in ``[0, 1]``, and the range check.

One rule per source, so an image and a mask of the same file read alike:

=================================  ============================================================
source                             value v → float
=================================  ============================================================
``uint8``, PIL ``1/L/P/RGB/CMYK…``  v / 255
``uint16``, PIL ``I;16*``            v / 65535
PIL ``I`` (32-bit int)             v / 65535 — what Pillow gives for 16-bit PNG/TIFF data;
                                   values outside 0…65535 are refused
PIL ``F``, float arrays/tensors    v, which must lie in ``[0, 1]`` (± :data:`TOLERANCE`)
bool                               0 or 1
other integer dtypes               v / 255, which must lie in ``[0, 1]``
=================================  ============================================================

Before, PIL's ``convert("RGB"/"L")`` clipped 16-bit values at 255 (a 50 % grey 16-bit guide loaded
as white) and float arrays in 0…255 were taken as 0…1. Values outside ``[0, 1]`` are now an error
naming the argument (``image``, ``mask``…), because the common causes — 0…255 floats and the
``[-1, 1]`` convention of diffusers' tensors — each need a different fix; tiny overshoots of
float arithmetic (within :data:`TOLERANCE`) are clamped.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

TOLERANCE = 0.01
_SIXTEEN_BIT = 65535.0


def check_unit_range(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` clamped to ``[0, 1]``; ``ValueError`` naming ``name`` if it holds NaN/inf or values
    beyond ``[-TOLERANCE, 1 + TOLERANCE]``, with the likely cause."""
    if t.numel() == 0:
        return t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -TOLERANCE or hi > 1.0 + TOLERANCE:
        hint = ""
        if hi > 1.0 + TOLERANCE and hi <= 255.0 and lo >= 0.0:
            hint = " (it looks like 0…255: divide by 255, or pass uint8)"
        elif lo < -TOLERANCE and lo >= -1.0 - TOLERANCE and hi <= 1.0 + TOLERANCE:
            hint = " (it looks like [-1, 1]: map it with (x + 1) / 2)"
        raise ValueError(f"{name}: values must be in [0, 1] for float data, got [{lo:.4g}, {hi:.4g}]{hint}")
    return t.clamp(0, 1)


def array_scale(dtype) -> float:
    """What an array of ``dtype`` is divided by (see the module table)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint16:
        return _SIXTEEN_BIT
    if dtype.kind in "iu":
        return 255.0
    return 1.0


def array_to_tensor(arr: np.ndarray, name: str) -> torch.Tensor:
    """numpy array of any dtype → float32 tensor in ``[0, 1]`` (same shape), checked."""
    scale = array_scale(arr.dtype)
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / np.float32(scale))
    return check_unit_range(t, name)


def tensor_to_unit(t: torch.Tensor, name: str) -> torch.Tensor:
    """torch tensor of any dtype → float in ``[0, 1]`` (floats kept in their dtype), checked."""
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point():
        t = t.float() / (_SIXTEEN_BIT if t.dtype == getattr(torch, "uint16", None) else 255.0)
    return check_unit_range(t, name)


def pil_to_array(im: Image.Image, grey: bool, name: str = "image") -> np.ndarray:
    """A PIL image of any mode → float32 ``(H, W)`` when ``grey`` else ``(H, W, 3)``, in ``[0, 1]``.

    High-bit modes (``I;16*``, ``I``, ``F``) are read at full precision; palette, CMYK, LA… go
    through PIL's own conversion to ``L``/``RGB``; an alpha channel is dropped (masks read it
    separately, see :func:`alpha_of`)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float32)
        if arr.ndim == 3:  # a multi-band high-bit image reported with one mode: keep the first band
            arr = arr[..., 0]
        if mode == "F":
            arr = check_unit_range(torch.from_numpy(arr), name).numpy()
        else:
            if arr.size and (arr.min() < 0 or arr.max() > _SIXTEEN_BIT):
                raise ValueError(f"{name}: 32-bit integer image with values in [{arr.min():.0f}, {arr.max():.0f}]; "
                                 "only 0…65535 (16-bit data) is supported")
            arr = arr / np.float32(_SIXTEEN_BIT)
        return arr if grey else np.repeat(arr[..., None], 3, axis=-1)
    return np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / np.float32(255.0)


def alpha_of(im: Image.Image) -> np.ndarray | None:
    """The alpha channel as float ``(H, W)`` in ``[0, 1]`` when the image has transparency (RGBA, LA,
    PA, or a palette/grey image with a transparent colour), else None."""
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = im.getchannel("A")
    elif im.mode in ("P", "L", "RGB") and "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
    else:
        return None
    a = np.asarray(alpha, dtype=np.float32) / np.float32(255.0)
    return a if a.size and a.min() < 1.0 else None
