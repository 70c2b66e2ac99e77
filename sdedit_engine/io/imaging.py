"""Front-end neutral image and mask utilities (torch + PIL only).

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

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """A user-facing image/mask problem (unreadable file, wrong size, bad geometry)."""


# --------------------------------------------------------------------------- conversion
def to_tensor(image) -> torch.Tensor:
    """PIL image, numpy ``(H,W[,C])``/``(B,H,W,C)`` or tensor ``(3,H,W)``/``(B,3,H,W)`` -> ``(B,3,H,W)`` float.

    Integer inputs are divided by 255; float inputs are taken as already in ``[0, 1]``.
    Grayscale is repeated to RGB and an alpha channel is dropped.
    """
    if isinstance(image, (list, tuple)):
        return torch.cat([to_tensor(i) for i in image], dim=0)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ImageError(f"expected an image array (H,W,C) or (B,H,W,C), got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / scale).permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise ImageError(f"expected an image tensor (3,H,W) or (B,3,H,W), got shape {tuple(image.shape)}")
        t = t.float() / 255.0 if not t.is_floating_point() else t
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}")
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    elif t.shape[1] == 4:
        t = t[:, :3]
    elif t.shape[1] != 3:
        raise ImageError(f"expected 1, 3 or 4 channels, got shape {tuple(t.shape)}")
    return t.contiguous()


def mask_to_tensor(mask) -> torch.Tensor:
    """PIL (converted to L), numpy ``(H,W)``/``(B,H,W)`` or tensor ``(H,W)``/``(B,H,W)``/``(B,1,H,W)`` -> ``(B,1,H,W)``."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, np.ndarray):
        scale = 255.0 if mask.dtype == np.uint8 else (1.0 if mask.dtype != bool else 1.0)
        mask = torch.from_numpy(np.ascontiguousarray(mask).astype(np.float32) / scale)
    if not isinstance(mask, torch.Tensor):
        raise ImageError(f"unsupported mask type {type(mask).__name__}")
    m = mask.float() if mask.is_floating_point() or mask.dtype == torch.bool else mask.float() / 255.0
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ImageError(f"expected a mask (H,W), (B,H,W) or (B,1,H,W), got shape {tuple(mask.shape)}")
    return m.clamp(0, 1).contiguous()


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
            return to_tensor(ImageOps.exif_transpose(im))  # camera photos: honour EXIF rotation
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
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
            if im.mode in ("RGBA", "LA") and np.asarray(im.getchannel("A")).min() < 255:
                m = 1.0 - mask_to_tensor(im.getchannel("A"))
            else:
                m = mask_to_tensor(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
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
def check_same_size(image: torch.Tensor, mask: torch.Tensor, what: str = "mask") -> None:
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        h, w = image.shape[-2:]
        mh, mw = mask.shape[-2:]
        raise ImageError(f"{what} is {mw}x{mh} but the image is {w}x{h} (width x height)")


def pad_to_multiple(image: torch.Tensor, multiple: int = 8, mode: str = "replicate") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right up to a multiple (VAE needs multiples of 8); returns ``(padded, (H, W))`` for :func:`unpad`."""
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (h, w)
    return F.pad(image, (0, pw, 0, ph), mode=mode), (h, w)


def unpad(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return image[..., : size[0], : size[1]]


def resize(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize ``(B,C,H,W)`` to ``(H, W)`` with antialiasing (clamped to [0,1] for bicubic overshoot)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    kw = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(image, size=tuple(size), mode=mode, align_corners=False if mode in ("bilinear", "bicubic") else None, **kw)
    return out.clamp(0, 1)


def resize_to_multiple(image: torch.Tensor, multiple: int = 8, max_side: int | None = None) -> torch.Tensor:
    """Resize (keeping aspect) so both sides are multiples of ``multiple`` and ≤ ``max_side``."""
    h, w = image.shape[-2:]
    s = min(1.0, max_side / max(h, w)) if max_side else 1.0
    nh = max(multiple, int(round(h * s / multiple)) * multiple)
    nw = max(multiple, int(round(w * s / multiple)) * multiple)
    return resize(image, (nh, nw))


def latent_mask(mask: torch.Tensor, size: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """Pixel mask -> latent-resolution mask.

    ``area`` averages (a latent cell is as editable as its pixels on average; soft edges like
    ComfyUI's bilinear resize); ``max`` takes the most editable pixel, so thin strokes are not
    lost on the 1/8 grid (§4.3) — use it when the original is pasted back in pixel space anyway.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if mode == "max":
        return F.adaptive_max_pool2d(mask.float(), tuple(size)).clamp(0, 1)
    if mode != "area":
        raise ValueError(f"latent_mask mode must be 'area' or 'max', got {mode!r}")
    return F.interpolate(mask.float(), size=tuple(size), mode="area").clamp(0, 1)


# --------------------------------------------------------------------------- mask ops
def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (``pixels`` > 0) or erode (< 0) by a square of radius ``|pixels|``; soft values dilate as max."""
    if pixels == 0:
        return mask
    k = 2 * abs(int(pixels)) + 1
    m = mask if pixels > 0 else 1.0 - mask
    m = F.pad(m, (k // 2,) * 4, mode="replicate")
    # a square max filter is a row max then a column max: same result, O(k) instead of O(k²) per pixel
    m = F.max_pool2d(F.max_pool2d(m, (1, k), stride=1), (k, 1), stride=1)
    return m if pixels > 0 else 1.0 - m


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicate padding (keeps size and the [0,1] range)."""
    if sigma <= 0:
        return image
    k = _gaussian_kernel(sigma).to(image.device, image.dtype)
    r = k.numel() // 2
    c = image.shape[1]
    x = F.pad(image, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def feather_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften mask edges with a Gaussian of σ = ``pixels``/2 (visible transition ≈ ``pixels`` each side).

    Feathering hides the seams of §4.3 (kept region pinned while the edit evolves).  Pixels far
    from the edge keep their exact 0 / 1 so composited-back areas stay bit-identical.
    """
    if pixels <= 0:
        return mask
    out = gaussian_blur(mask.float(), pixels / 2.0).clamp(0, 1)
    out = torch.where(out < 1e-4, torch.zeros_like(out), out)
    return torch.where(out > 1 - 1e-4, torch.ones_like(out), out)


def composite(result: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``original·(1−m) + result·m``; where ``m == 0`` the output *is* the original, bit for bit.

    The VAE round trip alters every pixel (§4.3), so front ends paste the original back.
    """
    if mask is None:
        return result
    if result.shape[-2:] != original.shape[-2:]:
        raise ImageError(f"result {tuple(result.shape[-2:])} and original {tuple(original.shape[-2:])} differ in size")
    check_same_size(original, mask)
    m = mask.to(result.dtype)
    orig = original.to(result.dtype)
    blended = orig * (1 - m) + result * m
    return torch.where(m <= 0, orig.expand_as(blended), torch.where(m >= 1, result.expand_as(blended), blended))


def mask_bbox(mask: torch.Tensor, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the pixels with mask > threshold over the batch; None if empty."""
    m = (mask > threshold).reshape(-1, *mask.shape[-2:]).any(dim=0)
    if not bool(m.any()):
        return None
    ys = torch.nonzero(m.any(dim=1)).flatten()
    xs = torch.nonzero(m.any(dim=0)).flatten()
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _expand_span(lo: int, hi: int, pad: int, multiple: int, limit: int) -> tuple[int, int]:
    lo, hi = max(0, lo - pad), min(limit, hi + pad)
    size = min(limit - limit % multiple if limit >= multiple else limit, -(-(hi - lo) // multiple) * multiple)
    size = max(size, min(multiple, limit))
    centre = (lo + hi) / 2.0
    start = int(round(centre - size / 2.0))
    start = min(max(0, start), limit - size)
    return start, start + size


def crop_to_mask(image: torch.Tensor, mask: torch.Tensor, padding: int = 32, multiple_of: int = 8):
    """Crop image and mask to the mask's bounding box plus ``padding``, sides multiples of ``multiple_of``.

    Editing only the crop keeps detail at small masks and saves compute; :func:`stitch` puts it
    back.  Returns ``(image_crop, mask_crop, box)`` with ``box = (x0, y0, x1, y1)``; an empty mask
    gives the whole image (floored to the multiple).
    """
    check_same_size(image, mask)
    h, w = image.shape[-2:]
    bb = mask_bbox(mask) or (0, 0, w, h)
    x0, x1 = _expand_span(bb[0], bb[2], padding, multiple_of, w)
    y0, y1 = _expand_span(bb[1], bb[3], padding, multiple_of, h)
    box = (x0, y0, x1, y1)
    return image[..., y0:y1, x0:x1], mask[..., y0:y1, x0:x1], box


def stitch(base: torch.Tensor, patch: torch.Tensor, box: tuple[int, int, int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Put an edited crop back at ``box``; with ``mask`` (crop-sized) only masked pixels change."""
    x0, y0, x1, y1 = box
    if tuple(patch.shape[-2:]) != (y1 - y0, x1 - x0):
        raise ImageError(f"patch is {patch.shape[-1]}x{patch.shape[-2]} but the box is {x1 - x0}x{y1 - y0}")
    out = base.clone()
    region = base[..., y0:y1, x0:x1]
    out[..., y0:y1, x0:x1] = composite(patch.to(base.dtype), region, mask) if mask is not None else patch.to(base.dtype)
    return out


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


def labelled_grid(images: Sequence, labels: Sequence[str] | None = None, columns: int | None = None,
                  label_height: int = 14, pad: int = 2) -> Image.Image:
    """Images (tensors or PIL) in a grid, each with a text label above it, as one PIL RGB image."""
    pils: list[Image.Image] = []
    for im in images:
        pils.extend(to_pil(im) if isinstance(im, torch.Tensor) else [im.convert("RGB")])
    if not pils:
        raise ImageError("labelled_grid needs at least one image")
    labels = list(labels) if labels is not None else [""] * len(pils)
    if len(labels) != len(pils):
        raise ImageError(f"{len(labels)} labels for {len(pils)} images")
    cols = columns or len(pils)
    rows = -(-len(pils) // cols)
    cw = max(p.width for p in pils) + pad
    ch = max(p.height for p in pils) + label_height + pad
    grid = Image.new("RGB", (cols * cw + pad, rows * ch + pad), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (p, lab) in enumerate(zip(pils, labels)):
        x, y = pad + (i % cols) * cw, pad + (i // cols) * ch
        draw.text((x, y), str(lab), fill="black", font=font)
        grid.paste(p, (x, y + label_height))
    return grid
