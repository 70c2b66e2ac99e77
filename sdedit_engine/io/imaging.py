"""Front-end neutral image and mask I/O and drawing (PIL + numpy + torch).

Shared by the ``sdedit`` CLI, the diffusers pipeline and the ComfyUI nodes, so the conventions
are fixed here once:

* images are float tensors ``(B, 3, H, W)`` in ``[0, 1]`` (ComfyUI's ``(B, H, W, C)`` is
  converted with :func:`from_bhwc` / :func:`to_bhwc`);
* masks are float tensors ``(B, 1, H, W)`` in ``[0, 1]``; **1 = editable, 0 = keep**, soft
  values are honoured (§1.4 of the SDEdit spec, the opposite of the official code's quirk).

Every loader error is an :class:`ImageError` (a ``ValueError``) whose message names the path,
so front ends can print one line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# the torch mask/region math lives in the engine; re-exported here for the callers that know it as imaging.*
from ..core.masks import (  # noqa: F401
    ImageError,
    _expand_span,
    _gaussian_kernel,
    check_same_size,
    composite,
    crop_to_mask,
    feather_mask,
    gaussian_blur,
    grow_and_feather,
    grow_mask,
    latent_mask,
    mask_bbox,
    pad_to_multiple,
    resize,
    stitch,
    unpad,
)
from . import values
from .grids import labelled_grid  # noqa: F401  (grid drawing lives in io/grids.py)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


# --------------------------------------------------------------------------- conversion
def to_tensor(image, name: str = "image") -> torch.Tensor:
    """PIL image, numpy ``(H,W[,C])``/``(B,H,W,C)`` or tensor ``(3,H,W)``/``(B,3,H,W)`` -> ``(B,3,H,W)`` float.

    Values map to ``[0, 1]`` by the rules of :mod:`.values` (uint8 / 255, uint16 and 16-bit PIL modes
    / 65535, floats as they are); float data outside ``[0, 1]`` is a ``ValueError`` naming ``name``.
    Grayscale is repeated to RGB and an alpha channel is dropped.
    """
    if isinstance(image, (list, tuple)):
        return torch.cat([to_tensor(i, name) for i in image], dim=0)
    if isinstance(image, Image.Image):
        image = values.pil_to_array(image, grey=False, name=name)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ImageError(f"{name}: expected an image array (H,W,C) or (B,H,W,C), got shape {image.shape}")
        t = values.array_to_tensor(arr, name).permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise ImageError(f"{name}: expected an image tensor (3,H,W) or (B,3,H,W), got shape {tuple(image.shape)}")
        t = values.tensor_to_unit(t, name)
    else:
        raise ImageError(f"{name}: unsupported image type {type(image).__name__}")
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    elif t.shape[1] == 4:
        t = t[:, :3]
    elif t.shape[1] != 3:
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got shape {tuple(t.shape)}")
    return t.contiguous()


def mask_to_tensor(mask, name: str = "mask") -> torch.Tensor:
    """PIL (any mode, read as grey), numpy ``(H,W)``/``(B,H,W)`` or tensor ``(H,W)``/``(B,H,W)``/``(B,1,H,W)``
    -> ``(B,1,H,W)`` in ``[0, 1]`` (value rules of :mod:`.values`; ``ValueError`` naming ``name``)."""
    if isinstance(mask, Image.Image):
        mask = values.pil_to_array(mask, grey=True, name=name)
    if isinstance(mask, np.ndarray):
        m = values.array_to_tensor(mask, name)
    elif isinstance(mask, torch.Tensor):
        m = values.tensor_to_unit(mask, name).float()
    else:
        raise ImageError(f"{name}: unsupported mask type {type(mask).__name__}")
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ImageError(f"{name}: expected a mask (H,W), (B,H,W) or (B,1,H,W), got shape {tuple(mask.shape)}")
    return m.contiguous()


def from_bhwc(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``IMAGE`` ``(B,H,W,C)`` -> ``(B,C,H,W)``."""
    return image.movedim(-1, 1).contiguous()


def to_bhwc(image: torch.Tensor) -> torch.Tensor:
    """``(B,C,H,W)`` -> ComfyUI ``IMAGE`` ``(B,H,W,C)``."""
    return image.movedim(1, -1).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(B,3,H,W)`` float -> ``(B,H,W,3)`` uint8 with rounding (so ``u8/255`` round-trips exactly)."""
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_pil(image: torch.Tensor) -> list[Image.Image]:
    """``(B,3,H,W)`` or ``(B,1,H,W)`` float -> list of PIL images (RGB or L)."""
    if image.ndim == 3:
        image = image[None]
    if image.shape[1] == 1:
        arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)[:, 0].cpu().numpy()
        return [Image.fromarray(a, mode="L") for a in arr]
    return [Image.fromarray(a) for a in to_uint8(image)]


# --------------------------------------------------------------------------- files
def load_image(path) -> torch.Tensor:
    """Read an image file as ``(1,3,H,W)``; :class:`ImageError` naming the path if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return to_tensor(ImageOps.exif_transpose(im), "pixel values")  # camera photos: honour EXIF rotation
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read image {p}: {e}") from None


def load_mask(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a mask file as ``(1,1,H,W)`` (white = edit).

    An image with transparency uses its alpha channel inverted (transparent = edit), the
    common convention of painting tools.  ``size=(H, W)``, when given, must match exactly:
    a silently resized mask would edit the wrong pixels.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"mask not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            alpha = values.alpha_of(im)
            m = 1.0 - mask_to_tensor(alpha) if alpha is not None else mask_to_tensor(im, "pixel values")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read mask {p}: {e}") from None
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        raise ImageError(
            f"mask {p} is {m.shape[-1]}x{m.shape[-2]} but the image is {size[1]}x{size[0]} (width x height)"
        )
    return m


def save_image(image, path) -> Path:
    """Save a ``(1,C,H,W)`` tensor or PIL image; creates parent folders; error names the path."""
    p = Path(path)
    pil = image if isinstance(image, Image.Image) else to_pil(image)[0]
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        pil.save(p)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"cannot write image {p}: {e}") from None
    return p


def list_images(folder) -> list[Path]:
    """Sorted image files directly inside ``folder`` (by name, so every process sees one order)."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"folder not found: {d}")
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- sizes
def resize_to_multiple(image: torch.Tensor, multiple: int = 8, max_side: int | None = None) -> torch.Tensor:
    """Resize (keeping aspect) so both sides are multiples of ``multiple`` and ≤ ``max_side``."""
    h, w = image.shape[-2:]
    s = min(1.0, max_side / max(h, w)) if max_side else 1.0
    nh = max(multiple, int(round(h * s / multiple)) * multiple)
    nw = max(multiple, int(round(w * s / multiple)) * multiple)
    return resize(image, (nh, nw))


def paste_patch(base: torch.Tensor, patch: torch.Tensor, patch_mask: torch.Tensor | None, x: int, y: int):
    """Paste ``patch`` with its top-left corner at ``(x, y)``: returns the SDEdit guide and edit mask.

    Compositing as in §1.5: the composite is the guide, Ω is the pasted region (``patch_mask``,
    or the whole patch rectangle).  A patch that does not fit inside the base is an error.
    """
    bh, bw = base.shape[-2:]
    ph, pw = patch.shape[-2:]
    if x < 0 or y < 0 or x + pw > bw or y + ph > bh:
        raise ImageError(f"patch {pw}x{ph} at ({x},{y}) does not fit inside the base image {bw}x{bh}")
    if patch_mask is None:
        patch_mask = torch.ones(1, 1, ph, pw)
    check_same_size(patch, patch_mask, "patch mask")
    guide = base.clone()
    region = guide[..., y:y + ph, x:x + pw]
    guide[..., y:y + ph, x:x + pw] = composite(patch.to(base.dtype), region, patch_mask.to(base.dtype))
    mask = torch.zeros(base.shape[0], 1, bh, bw, dtype=base.dtype)
    mask[..., y:y + ph, x:x + pw] = patch_mask.to(base.dtype)
    return guide, mask


# --------------------------------------------------------------------------- reports
def faithfulness_l2(output: torch.Tensor, guide: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Per-item L2 distance between output and guide in [0,1] pixel scale (optionally at ``size``² first).

    SDEdit's faithfulness metric (§2); state ``size`` when reporting since L2 scales with resolution.
    """
    if size:
        output, guide = resize(output, (size, size), "area"), resize(guide, (size, size), "area")
    return (output.float() - guide.float()).flatten(1).norm(dim=1)
