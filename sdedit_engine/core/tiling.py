"""Overlapping tiles blended with smooth weights, so memory stops growing with the image.

One routine, :func:`blend_tiles`, serves the three places a large image is too big to process at
once: the VAE encoder (pixels → latent), the VAE decoder (latent → pixels) and the denoiser itself
(:class:`TiledDenoiser`, latent → latent, MultiDiffusion-style: every tile is denoised with the same
σ and conditioning and the overlapping estimates are averaged). Tiles are laid out on the *latent*
grid; the input and the output may be that grid scaled by an integer (8 for pixels).

Each tile's weight is a separable ramp, linear over the overlap towards its neighbours and 1 at the
image border, so a pixel covered by one tile takes that tile's value exactly and a seam becomes a
cross-fade. Because the
tiles form a full grid, the sum of the weights is separable too: normalising needs two 1-D vectors,
never a full-size weight map. The output is written into one preallocated tensor; nothing else of
full size is held, which is what bounds the peak (BENCHMARKS.md §4).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

Region = tuple[int, int, int, int]  # (y0, y1, x0, x1) on the latent grid, end exclusive


def check_tiling(tile: int, overlap: int, what: str = "") -> tuple[int, int]:
    """Validate a (tile, overlap) pair on the latent grid; errors start with ``what`` (e.g. ``"UNet "``)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 2:
        raise ValueError(f"{what}tile_size must be an integer of at least 2 latent cells (16 px), got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"{what}overlap must be an integer in [0, tile_size) = [0, {tile}) latent cells, got {overlap!r}")
    return tile, overlap


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared.

    The first tile starts at 0 and the last ends at ``length``; the ones between are evenly spaced,
    so every overlap is ``≥ overlap`` (never a thin sliver at the border).
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]


def tile_regions(height: int, width: int, tile: int, overlap: int) -> list[Region]:
    """The grid of tiles over a ``height × width`` latent, row by row."""
    return [(y, min(y + tile, height), x, min(x + tile, width))
            for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def ramp(n: int, fade_in: int, fade_out: int | None = None, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """1-D weight of length ``n``: rises linearly over ``fade_in`` samples, falls over ``fade_out``
    (default: the same) at the end, 1 in between; a fade of 0 leaves that end at 1.

    Values stay > 0 (a fade starts at ``1/(fade+1)``), so the weights always normalise.
    """
    fade_out = fade_in if fade_out is None else fade_out
    i = torch.arange(n, dtype=torch.float64, device=device)
    w = torch.ones(n, dtype=torch.float64, device=device)
    if fade_in > 0:
        w = torch.minimum(w, (i + 1) / (fade_in + 1))
    if fade_out > 0:
        w = torch.minimum(w, (n - i) / (fade_out + 1))
    return w.to(dtype)


def _axis_weights(length: int, tile: int, overlap: int, scale: int, device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-tile 1-D weights along one axis (output resolution) and their sum over the axis.

    A tile fades only across its actual overlap with a neighbour (≥ ``overlap``): at the image border
    and wherever one tile is alone its weight is 1, so those pixels come out exactly as it computed them.
    """
    total = torch.zeros(length * scale, dtype=torch.float64, device=device)
    weights = []
    starts = tile_starts(length, tile, overlap)
    ends = [min(s + tile, length) for s in starts]
    for k, s in enumerate(starts):
        n = (ends[k] - s) * scale
        fade_in = (ends[k - 1] - s) * scale if k > 0 else 0  # the actual overlap with each neighbour
        fade_out = (ends[k] - starts[k + 1]) * scale if k + 1 < len(starts) else 0
        w = ramp(n, fade_in, fade_out, dtype=torch.float64, device=device)
        total[s * scale: s * scale + n] += w
        weights.append(w)
    return weights, total


def blend_tiles(fn: Callable[[torch.Tensor, Region], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, *,
                in_scale: int = 1, out_scale: int = 1, out_dtype: torch.dtype = torch.float32, out_device=None) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` and blend the results into one tensor.

    ``x`` is ``(B, C, H·in_scale, W·in_scale)`` for a latent grid of ``H × W``; ``tile`` and ``overlap``
    are in latent cells. ``fn(x_tile, region)`` returns the tile's output at ``out_scale`` times the
    latent grid (``region`` is the tile's latent ``(y0, y1, x0, x1)``). The result is
    ``(B, C_out, H·out_scale, W·out_scale)`` in ``out_dtype``, accumulated in ``out_dtype``
    (use float32). A grid of one tile calls ``fn`` once on the whole input and returns its output.
    """
    check_tiling(tile, overlap)
    if x.shape[-2] % in_scale or x.shape[-1] % in_scale:
        raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of {in_scale}")
    h, w = x.shape[-2] // in_scale, x.shape[-1] // in_scale
    regions = tile_regions(h, w, tile, overlap)
    if len(regions) == 1:
        return fn(x, regions[0]).to(out_dtype)
    device = out_device if out_device is not None else x.device
    wy, sy = _axis_weights(h, tile, overlap, out_scale, device)
    wx, sx = _axis_weights(w, tile, overlap, out_scale, device)
    nx = len(wx)
    out = None
    for k, (y0, y1, x0, x1) in enumerate(regions):
        piece = fn(x[..., y0 * in_scale: y1 * in_scale, x0 * in_scale: x1 * in_scale], (y0, y1, x0, x1))
        if out is None:
            out = torch.zeros(piece.shape[0], piece.shape[1], h * out_scale, w * out_scale,
                              dtype=out_dtype, device=device)
        weight = (wy[k // nx][:, None] * wx[k % nx][None, :]).to(out_dtype)
        out[..., y0 * out_scale: y1 * out_scale, x0 * out_scale: x1 * out_scale].addcmul_(piece.to(device, out_dtype), weight)
        del piece
    inv_x = (1.0 / sx).to(out_dtype)
    rows = max(1, (1 << 22) // max(1, w * out_scale))  # normalise in bands of ~4M weights: no full-size map
    for r in range(0, h * out_scale, rows):
        band = (1.0 / sy[r: r + rows]).to(out_dtype)[:, None] * inv_x[None, :]
        out[..., r: r + rows, :].mul_(band)
    return out


class TiledDenoiser:
    """A denoiser that runs ``denoiser`` on overlapping latent tiles and blends the estimates.

    Peak memory follows the tile, not the image (a 4096² SD1.5 edit is a 512² latent: the UNet's
    activations at full size do not fit most GPUs). The price: tiles see only their own context, so
    a high t0 on a large image can repeat content per tile; SDEdit at moderate t0 stays faithful to
    the guide, which holds the layout. ``region_arg`` (e.g. ``"region"``) passes each tile's latent
    ``(y0, y1, x0, x1)`` to the wrapped denoiser, so it can crop spatial conditioning (ControlNet
    images, SDXL crop coordinates) to the tile.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], tile: int, overlap: int, region_arg: Optional[str] = None):
        self.denoiser = denoiser
        self.tile, self.overlap = check_tiling(tile, overlap)
        self.region_arg = region_arg
        self.schedule = getattr(denoiser, "schedule", None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        def one(tile_x: torch.Tensor, region: Region) -> torch.Tensor:
            extra = {self.region_arg: region} if self.region_arg else {}
            return self.denoiser(tile_x, sigma, **cond, **extra)

        return blend_tiles(one, x, self.tile, self.overlap, out_dtype=x.dtype)
