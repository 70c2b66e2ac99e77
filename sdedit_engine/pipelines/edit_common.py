"""What the diffusers SDE-family edits (:mod:`~sdedit_engine.pipelines.drag_pipeline`,
:mod:`~sdedit_engine.pipelines.inpaint_diffedit`) share: the result type, argument checks, the
progress bar fed by the engine's per-step callback, and the one-image framing.

Conventions shared with ``SDEditPipeline.__call__``: images are PIL / numpy / tensors in [0, 1];
masks are 1 = editable, mapped to latent cells and pasted back by :mod:`sdedit_engine.core.framing`
(outside a mask the original pixels return bit for bit); seeds give the same result on every device;
``progress`` shows a tqdm bar, and ``callback(info)`` returning True cancels (``SamplingCancelled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from ..core import framing


@dataclass
class EditOutput:
    """Result of ``drag`` / ``inpaint`` / ``diffedit``. ``images`` as requested by ``output_type``;
    ``mask``: the pixel mask used ((B,1,H,W), None without one; DiffEdit's automatic mask included)."""

    images: Any
    latents: torch.Tensor
    steps: int
    nfe: int
    seed: int
    sigma0: float
    mask: Optional[torch.Tensor] = None
    pairs: Optional[list] = None  # drag: pixel DragPairs
    latent_pairs: Optional[list] = None  # drag: latent cells
    iterations: int = 0  # drag: number of drag moves
    lora_losses: Optional[list] = None  # drag with lora_tuning
    latent_mask: Optional[torch.Tensor] = None  # the editable latent cells (framing's max rule)


def progress(total: int, desc: str, enabled: bool, callback: Optional[Callable]):
    """A tqdm bar and the engine callback that advances it (and calls ``callback``)."""
    bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False)

    def on_step(info):
        bar.update(1)
        return callback(info) if callback is not None else None

    return bar, on_step


def check_one(original: torch.Tensor, what: str) -> None:
    if original.shape[0] != 1:
        raise ValueError(f"{what} edits one image at a time, got a batch of {original.shape[0]}")


def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"output_type must be one of pil, np, pt, latent; got {output_type!r}")


def check_mode(mode: str) -> None:
    if mode not in ("sde", "ode"):
        raise ValueError(f"mode must be 'sde' or 'ode', got {mode!r}")


def frame_one(pipe, original: torch.Tensor, mask, *, what: str, grow: int = 0, feather: float = 0.0) -> framing.Frame:
    """The framing of a one-image edit (:meth:`SDEditPipeline.frame`); a given mask must edit something."""
    m = pipe.mask_tensor(mask, original)
    if m is not None and m.shape[0] != 1:
        raise ValueError(f"expected one mask, got {m.shape[0]}")
    fr = pipe.frame(original, m, grow=grow, feather=feather)
    framing.require_editable(fr, what)
    return fr
