"""The diffusers VAE as the engine sees it: pixels in [0, 1] ↔ scaled latents (scaling and shift
factors applied, posterior mode as ComfyUI), with optional streaming tiles (:func:`tile_setting`,
:func:`~sdedit_engine.core.tiling.blend_tiles`). ``SDEditPipeline`` owns one :class:`VAECodec`."""

from __future__ import annotations

from typing import Optional

import torch

from ..core.tiling import blend_tiles, check_tiling


def tile_setting(enabled: bool, tile_px: int, overlap_px: int | None, factor: int, what: str) -> Optional[tuple[int, int]]:
    """``(tile, overlap)`` in latent cells from pixel sizes (overlap default ¼ tile), or None when disabled."""
    if not enabled:
        return None
    overlap_px = tile_px // 4 // factor * factor if overlap_px is None else overlap_px
    for name, v in (("tile_size", tile_px), ("overlap", overlap_px)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % factor:
            raise ValueError(f"{what} {name} must be a non-negative multiple of {factor} pixels, got {v!r}")
    return check_tiling(tile_px // factor, overlap_px // factor, f"{what} ")


class VAECodec:
    """Encode / decode with a diffusers ``AutoencoderKL`` on ``device``; ``tiling`` = (tile, overlap) in
    latent cells or None."""

    def __init__(self, vae, device: torch.device):
        self.vae, self.device = vae, device
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.tiling: Optional[tuple[int, int]] = None

    def dtype(self) -> torch.dtype:
        """The VAE's working dtype (an fp16 VAE with ``force_upcast`` is moved to float32 first)."""
        if self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)
        return self.vae.dtype

    def enable_tiling(self, enabled: bool = True, tile_size: int | None = None, overlap: int | None = None) -> None:
        """Encode/decode in overlapping pixel tiles (default: the VAE's native size, ≥ 256 px; overlap ¼).

        Tiles are blended straight into one preallocated output (:func:`~sdedit_engine.core.tiling.blend_tiles`),
        so the VAE's memory follows the tile, not the image; diffusers' own tiling keeps every decoded
        tile until the end. Decoded pixels are assembled on the CPU, so the GPU holds one tile.
        """
        native = max(int(getattr(self.vae.config, "sample_size", 512) or 512), 256)
        self.tiling = tile_setting(enabled, tile_size or native, overlap, self.factor, "VAE")
        self.vae.disable_tiling()  # ours replaces diffusers' (it would tile again inside each tile)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0,1] (H, W multiples of the factor) → scaled latents (posterior mode, as ComfyUI)."""
        dtype = self.dtype()

        def encode_tile(pixels, region=None):
            return self.vae.encode((pixels.to(self.device, dtype) * 2 - 1)).latent_dist.mode().float()

        if self.tiling is None:
            lat = encode_tile(images)
        else:
            lat = blend_tiles(encode_tile, images, *self.tiling, in_scale=self.factor, out_device=self.device)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return lat.sub_(shift).mul_(self.vae.config.scaling_factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → ``(B,3,H,W)`` in [0,1] (float32)."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        dtype = self.dtype()

        def decode_tile(lat, region=None):
            return self.vae.decode(lat.to(self.device, dtype), return_dict=False)[0]

        if self.tiling is None:
            img = decode_tile(z).float()
        else:
            img = blend_tiles(decode_tile, z, *self.tiling, out_scale=self.factor, out_device="cpu")
        return img.add_(1).div_(2).clamp_(0, 1)  # in place: at 4096² every full-size copy is 192 MiB
