"""Text conditioning and the UNet call of the diffusers backend.

:func:`encode_text` turns prompts into the tensors a Stable Diffusion (1.x/2.x) or SDXL UNet
needs, using the diffusers pipeline's own ``encode_prompt`` so tokenisation, clip-skip, LoRA
text-encoder scaling and SDXL's two encoders / pooled embeddings are exactly diffusers'.
:func:`make_model_fn` is the network call handed to
:class:`~sdedit_engine.core.denoisers.DiscreteTimeDenoiser`: classifier-free guidance (cond and uncond
in one batch), ControlNet residuals and SDXL ``text_time`` added conditioning. The sampling math
itself lives only in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class TextConditioning:
    """Per-item conditioning, batched like the latents (B first)."""

    cond: torch.Tensor
    uncond: Optional[torch.Tensor] = None  # None when CFG is off
    pooled: Optional[torch.Tensor] = None  # SDXL: text_embeds
    uncond_pooled: Optional[torch.Tensor] = None
    time_ids: Optional[torch.Tensor] = None  # SDXL: (B, n) for cond (and uncond, same except aesthetics)
    uncond_time_ids: Optional[torch.Tensor] = None

    def as_extra_args(self) -> dict:
        """The dict passed as ``extra_args`` to the engine (every value batched with the latents)."""
        out = {"encoder_hidden_states": self.cond}
        for k in ("uncond", "pooled", "uncond_pooled", "time_ids", "uncond_time_ids"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


def _prompt_list(prompt, n: int, what: str) -> list[str]:
    if prompt is None:
        return [""] * n
    if isinstance(prompt, str):
        return [prompt] * n
    prompt = list(prompt)
    if len(prompt) == 1:
        return prompt * n
    if len(prompt) != n:
        raise ValueError(f"{what} has {len(prompt)} entries but the batch has {n} items")
    return [str(p) for p in prompt]


def sdxl_time_ids(pipe, height: int, width: int, n: int, aesthetic: float | None = None) -> torch.Tensor:
    """SDXL micro-conditioning: (orig H, W, crop top, left, target H, W), or the refiner's 5-value form."""
    unet = pipe.unet
    proj_dim = pipe.text_encoder_2.config.projection_dim
    n_ids = (unet.add_embedding.linear_1.in_features - proj_dim) // unet.config.addition_time_embed_dim
    if n_ids == 6:
        ids = [height, width, 0, 0, height, width]
    elif n_ids == 5:
        ids = [height, width, 0, 0, 6.0 if aesthetic is None else aesthetic]
    else:
        raise ValueError(f"unsupported SDXL added conditioning: the UNet expects {n_ids} time ids")
    return torch.tensor([ids] * n, dtype=torch.float32)


@torch.no_grad()
def encode_text(pipe, prompt, negative_prompt, n: int, guidance_scale: float, device, *,
                height: int = 0, width: int = 0, lora_scale: float | None = None,
                clip_skip: int | None = None) -> TextConditioning:
    """Encode prompt / negative prompt for a batch of ``n`` latents (CFG on iff ``guidance_scale != 1``)."""
    prompts = _prompt_list(prompt, n, "prompt")
    negs = _prompt_list(negative_prompt, n, "negative_prompt") if negative_prompt is not None else None
    cfg = guidance_scale != 1.0
    xl = getattr(pipe, "text_encoder_2", None) is not None and hasattr(pipe.unet.config, "addition_embed_type") \
        and pipe.unet.config.addition_embed_type == "text_time"
    if xl:
        c, u, pc, pu = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=cfg, negative_prompt=negs,
                                          lora_scale=lora_scale, clip_skip=clip_skip)
        ids = sdxl_time_ids(pipe, height, width, n).to(device)
        uids = sdxl_time_ids(pipe, height, width, n, aesthetic=2.5).to(device) if cfg else None
        return TextConditioning(c, u if cfg else None, pc, pu if cfg else None, ids, uids)
    c, u = pipe.encode_prompt(prompts, device, 1, cfg, negative_prompt=negs, lora_scale=lora_scale, clip_skip=clip_skip)
    return TextConditioning(c, u if cfg else None)


def tile_time_ids(ids: Optional[torch.Tensor], y0: int, y1: int, x0: int, x1: int) -> Optional[torch.Tensor]:
    """SDXL micro-conditioning for a tile at pixels ``[y0:y1, x0:x1]``: crop top-left = the tile's
    offset and (6-id UNets) target size = the tile's size; the original size stays the image's."""
    if ids is None:
        return None
    ids = ids.clone()
    ids[:, 2], ids[:, 3] = float(y0), float(x0)
    if ids.shape[1] == 6:
        ids[:, 4], ids[:, 5] = float(y1 - y0), float(x1 - x0)
    return ids


def make_model_fn(unet, guidance_scale: float = 1.0, controlnet=None, control_image: Optional[torch.Tensor] = None,
                  control_scale: float = 1.0, lora_scale: float | None = None, vae_scale: int = 8):
    """``model_fn(x_in, t, **extra_args) -> ε or v`` for :class:`DiscreteTimeDenoiser`.

    ``x_in`` is the VP sample at timestep ``t`` (float, shape (B,)). With CFG the UNet runs once on
    ``[uncond; cond]`` (the order diffusers uses) and returns ``u + g·(c − u)``.

    Per-call overrides (e.g. SDE-Drag's schedules, passed through the engine's ``extra_args_fn``):
    ``guidance_scale=g`` replaces the scale of this call (CFG needs ``uncond`` in the conditioning,
    so encode the prompt with a scale != 1; g == 1 runs the conditional branch only), and
    ``lora_scale=s`` replaces the LoRA scale given to the UNet for this call. ``region=(y0, y1, x0, x1)``
    (latent cells, from :class:`~sdedit_engine.core.tiling.TiledDenoiser`) says ``x_in`` is that tile: the
    control image (pixels, ``vae_scale`` per cell) and SDXL time ids are cropped to match.
    """
    default_scale, default_lora = guidance_scale, lora_scale
    # read once: diffusers' ModelMixin.dtype walks every submodule (1.6-5.5 ms a call on CPU, ~11% of
    # the whole run on the tiny test UNet; BENCHMARKS.md §1b). make_denoiser builds a model_fn per
    # pipeline call, so a later .to(dtype) is still honoured.
    dtype = unet.dtype

    def model_fn(x_in: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                 uncond: Optional[torch.Tensor] = None, pooled: Optional[torch.Tensor] = None,
                 uncond_pooled: Optional[torch.Tensor] = None, time_ids: Optional[torch.Tensor] = None,
                 uncond_time_ids: Optional[torch.Tensor] = None, guidance_scale: Optional[float] = None,
                 lora_scale: Optional[float] = None, region: Optional[tuple[int, int, int, int]] = None) -> torch.Tensor:
        g = default_scale if guidance_scale is None else float(guidance_scale)
        lora = default_lora if lora_scale is None else float(lora_scale)
        cfg = uncond is not None and g != 1.0
        x, ts, ehs = x_in.to(dtype), t, encoder_hidden_states
        ctrl = control_image
        if region is not None:  # one tile of a TiledDenoiser: crop what is spatial to it
            y0, y1, x0, x1 = (v * vae_scale for v in region)
            time_ids, uncond_time_ids = tile_time_ids(time_ids, y0, y1, x0, x1), tile_time_ids(uncond_time_ids, y0, y1, x0, x1)
            ctrl = None if ctrl is None else ctrl[..., y0:y1, x0:x1]
        added = None
        if pooled is not None:
            added = {"text_embeds": pooled, "time_ids": time_ids}
        if cfg:
            x, ts, ehs = torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([uncond, ehs])
            if added is not None:
                added = {"text_embeds": torch.cat([uncond_pooled, pooled]),
                         "time_ids": torch.cat([uncond_time_ids if uncond_time_ids is not None else time_ids, time_ids])}
            if ctrl is not None:
                ctrl = torch.cat([ctrl, ctrl])
        ehs = ehs.to(dtype)
        if added is not None:
            added = {k: v.to(dtype) for k, v in added.items()}
        down = mid = None
        if controlnet is not None and ctrl is not None:
            down, mid = controlnet(x, ts, encoder_hidden_states=ehs, controlnet_cond=ctrl.to(dtype),
                                   conditioning_scale=float(control_scale), added_cond_kwargs=added,
                                   return_dict=False)
        out = unet(x, ts, encoder_hidden_states=ehs, added_cond_kwargs=added, cross_attention_kwargs=None if lora is None else {"scale": lora},
                   down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False)[0]
        if cfg:
            u, c = out.float().chunk(2)
            return u + g * (c - u)
        return out

    return model_fn


def prompt_batch(prompt: str | Sequence[str] | None, n: int) -> list[str]:
    """Public helper: the per-item prompt list (a single prompt is repeated)."""
    return _prompt_list(prompt, n, "prompt")
