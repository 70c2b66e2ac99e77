"""The SDEdit paper's stroke simulation (Meng et al., ICLR 2022, App. D): turn a photo into a stroke painting.

Real images become "human-like" stroke guides so faithfulness/realism can be measured at
scale: a **large median filter** removes texture and detail, then the colours are
**quantised to a few flat colours** with an adaptive palette.  The paper's constants are a
23-px median at 256² and about 6 colours; for other sizes the kernel is scaled with the short
side so the strokes stay the same relative width.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageFilter

from .imaging import to_pil, to_tensor

DEFAULT_MEDIAN = 23
DEFAULT_COLORS = 6
REFERENCE_SIZE = 256


def median_kernel_for(height: int, width: int, median_size: int = DEFAULT_MEDIAN, reference: int = REFERENCE_SIZE) -> int:
    """Odd median-kernel size scaled from ``median_size`` at ``reference``² to this image's short side."""
    k = int(round(median_size * min(height, width) / reference))
    k = max(3, k)
    return k if k % 2 == 1 else k + 1


def simulate_strokes_pil(image: Image.Image, median_size: int | None = None, colors: int = DEFAULT_COLORS) -> Image.Image:
    """PIL version: median filter (size ``median_size``, default scaled from 23 px @ 256²), then ``colors`` flat colours."""
    if colors < 1 or colors > 256:
        raise ValueError(f"colors must be in 1..256, got {colors}")
    rgb = image.convert("RGB")
    k = median_size if median_size is not None else median_kernel_for(rgb.height, rgb.width)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"median_size must be a positive odd integer, got {k}")
    smooth = rgb.filter(ImageFilter.MedianFilter(k)) if k > 1 else rgb
    # Median-cut adaptive palette without dithering: dithering would re-introduce texture.
    flat = smooth.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return flat.convert("RGB")


def simulate_strokes(image, median_size: int | None = None, colors: int = DEFAULT_COLORS) -> torch.Tensor:
    """Stroke guide for each image of a batch: ``(B,3,H,W)`` in ``[0,1]`` with at most ``colors`` distinct colours each."""
    t = to_tensor(image)
    out = [to_tensor(simulate_strokes_pil(p, median_size, colors)) for p in to_pil(t)]
    return torch.cat(out, dim=0)


def count_colors(image: torch.Tensor) -> int:
    """Number of distinct 8-bit RGB colours in a ``(1,3,H,W)`` image (tests and reports)."""
    q = (image[0].clamp(0, 1) * 255).round().to(torch.int64)
    packed = (q[0] << 16) | (q[1] << 8) | q[2]
    return int(torch.unique(packed).numel())
