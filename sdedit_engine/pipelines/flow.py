"""Flow-matching diffusers models (SD3 / SD3.5, FLUX.1 dev and schnell) as engine denoisers.

A diffusers flow pipeline (scheduler ``FlowMatchEulerDiscreteScheduler``) noises as
``x_s = (1 − s)·x0 + s·ε`` and its transformer predicts the velocity ``v ≈ ε − x0`` at timestep
``1000·s`` (SD3) or ``s`` (Flux, whose pipeline divides by 1000). :class:`FlowBackend` supplies what the
engine's :class:`~sdedit_engine.core.flow.FlowDenoiser` and :class:`~sdedit_engine.core.flow.FlowSchedule`
need and nothing more — the sampling math lives once, in the engine:

* ``model_fn(x_s, s, **cond) -> v``: the transformer call. **SD3**: MMDiT on the (B, 16, h, w) latent,
  joint text tokens (CLIP-L ⊕ CLIP-G padded to T5's width, then T5) and pooled CLIP embeddings;
  classifier-free guidance ``v_u + g·(v_c − v_u)`` with ``[uncond; cond]`` in one batch, as diffusers.
  **Flux**: the latent packed into 2×2 patches ((B, h/2·w/2, 64) tokens with RoPE ids (0, row, col)),
  T5 tokens (ids 0), pooled CLIP; dev's guidance distillation takes ``g`` as an input (the guidance
  embedding), so one call per step and no negative prompt; schnell has no guidance input.
* the schedule: the scheduler's ``shift`` (SD3: 3.0, schnell: 1.0) as SD3-style ``time_snr_shift``, or with
  ``use_dynamic_shifting`` (Flux dev) the Flux shift with ``μ`` linear in the image's token count
  ``(H/16)·(W/16)`` between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift) —
  diffusers' ``calculate_shift``. μ follows the last image the pipeline encoded (:meth:`set_resolution`).

Supported transformers: :data:`TRANSFORMER_FAMILIES`. Other flow pipelines (Chroma, Qwen-Image, Z-Image,
HiDream, Lumina2, …) have other call signatures or text stacks and are refused with their class name.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..core.flow import FlowDenoiser, FlowSchedule
from .loading import ModelLoadError
from .text import TextConditioning, prompt_batch

TRANSFORMER_FAMILIES = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
DEFAULT_GUIDANCE = {"sd3": 7.0, "flux": 3.5, "flux-schnell": 0.0}


def is_flow_pipeline(pipe) -> bool:
    """True when the diffusers pipeline samples with a flow-matching scheduler."""
    sched = getattr(pipe, "scheduler", None)
    return type(sched).__name__ in FLOW_SCHEDULERS or "FlowMatch" in type(sched).__name__


def flow_family(pipe) -> str:
    """``sd3``, ``flux`` or ``flux-schnell`` for a supported flow pipeline; a ModelLoadError names the rest."""
    sched = type(pipe.scheduler).__name__
    if sched not in FLOW_SCHEDULERS:
        raise ModelLoadError(f"{type(pipe).__name__}: flow scheduler {sched} is not supported (use {FLOW_SCHEDULERS[0]})")
    tr = getattr(pipe, "transformer", None)
    if tr is None:
        raise ModelLoadError(f"{type(pipe).__name__} has a flow-matching scheduler but no transformer; not an image model "
                             "SDEditPipeline can run")
    fam = TRANSFORMER_FAMILIES.get(type(tr).__name__)
    if fam is None:
        raise ModelLoadError(f"{type(pipe).__name__}: transformer {type(tr).__name__} is not supported; flow models that work: "
                             f"{', '.join(TRANSFORMER_FAMILIES)} (SD3/SD3.5, FLUX.1 dev/schnell)")
    if fam == "flux" and not tr.config.guidance_embeds:
        fam = "flux-schnell"
    return fam


def dynamic_mu(scheduler_config, height: int, width: int) -> float:
    """diffusers' ``calculate_shift``: μ linear in the token count (H/16)·(W/16) between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift) of the scheduler config."""
    cfg = scheduler_config
    seq = (int(height) // 16) * (int(width) // 16)
    base_len, base = int(cfg.get("base_image_seq_len", 256)), float(cfg.get("base_shift", 0.5))
    max_len, top = int(cfg.get("max_image_seq_len", 4096)), float(cfg.get("max_shift", 1.15))
    m = (top - base) / (max_len - base_len)
    return seq * m + (base - m * base_len)


def schedule_from_config(scheduler_config, height: int = 1024, width: int = 1024, t0_scale: str = "model") -> FlowSchedule:
    """The engine schedule of a ``FlowMatchEulerDiscreteScheduler`` config (a dict): SD3-style ``shift``, or
    with ``use_dynamic_shifting`` the Flux shift at μ of a (height, width) image."""
    cfg = scheduler_config
    T = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("use_dynamic_shifting", False):
        return FlowSchedule.flux(dynamic_mu(cfg, height, width), num_timesteps=T, t0_scale=t0_scale)
    return FlowSchedule.sd3(float(cfg.get("shift", 1.0)), num_timesteps=T, t0_scale=t0_scale)


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h/2·w/2, 4C): 2×2 patches in row-major token order, channels (c, dy, dx)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack` for a latent of spatial size (h, w)."""
    b, _, d = tokens.shape
    c = d // 4
    return tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(h: int, w: int, device, dtype, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Flux RoPE ids of the packed latent tokens: (0, row, col) per 2×2 patch (``offset`` in patches)."""
    rows = torch.arange(h // 2, device=device, dtype=dtype) + offset[0]
    cols = torch.arange(w // 2, device=device, dtype=dtype) + offset[1]
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = rows[:, None]
    ids[..., 2] = cols[None, :]
    return ids.reshape(-1, 3)


class FlowBackend:
    """The family-specific half of :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline` for flow models."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.family = flow_family(pipe)
        self.transformer = pipe.transformer
        cfg = self.scheduler_config = dict(pipe.scheduler.config)
        self.dynamic = bool(cfg.get("use_dynamic_shifting", False))
        self.shift = float(cfg.get("shift", 1.0))
        self.num_timesteps = int(cfg.get("num_train_timesteps", 1000))
        self.resolution = (1024, 1024)  # (H, W) pixels of the last encoded image: Flux's μ
        vae = pipe.vae
        c = vae.config.latent_channels
        want = 4 * c if self.family.startswith("flux") else c
        if self.transformer.config.in_channels != want:
            raise ModelLoadError(f"{type(self.transformer).__name__} takes {self.transformer.config.in_channels} input "
                                 f"channels but the VAE makes {c} latent channels (expected {want}); not an SDEdit model")
        for name in ("text_encoder", "text_encoder_2"):  # SD3: two CLIPs (T5 optional); Flux: CLIP + T5
            if getattr(pipe, name, None) is None:
                raise ModelLoadError(f"{type(pipe).__name__}: the {name} component is missing; load the full model folder "
                                     "(SDEdit needs the text encoders to encode prompts)")
        self.patch = 2  # SD3's patch size and Flux's packing: latent sides must be even

    @property
    def default_guidance(self) -> float:
        return DEFAULT_GUIDANCE[self.family]

    def __repr__(self) -> str:
        shift = f"dynamic μ={self.mu():.3f} at {self.resolution[1]}x{self.resolution[0]}" if self.dynamic else f"shift={self.shift:g}"
        return f"FlowBackend({self.family}, {shift})"

    # ------------------------------------------------------------------ schedule
    def set_resolution(self, height: int, width: int) -> None:
        self.resolution = (int(height), int(width))

    def mu(self, height: int | None = None, width: int | None = None) -> float:
        """diffusers' ``calculate_shift`` for an image of (height, width) pixels (default: the last encoded)."""
        h, w = (height, width) if height is not None else self.resolution
        return dynamic_mu(self.scheduler_config, h, w)

    def schedule(self, t0_scale: str = "model") -> FlowSchedule:
        return schedule_from_config(self.scheduler_config, *self.resolution, t0_scale=t0_scale)

    # ------------------------------------------------------------------ text
    def uses_cfg(self, guidance_scale: float) -> bool:
        return self.family == "sd3" and guidance_scale > 1.0

    @torch.no_grad()
    def encode_text(self, prompt, negative_prompt, n: int, guidance_scale: float, device,
                    lora_scale: float | None = None, max_sequence_length: int | None = None) -> TextConditioning:
        """Per-item conditioning: T5(+CLIP) token embeddings, pooled CLIP; SD3 also the negative for CFG."""
        prompts = prompt_batch(prompt, n)
        kw = {} if max_sequence_length is None else {"max_sequence_length": int(max_sequence_length)}
        if self.family == "sd3":
            cfg = self.uses_cfg(guidance_scale)
            negs = prompt_batch(negative_prompt, n) if negative_prompt is not None else None
            c, u, pc, pu = self.pipe.encode_prompt(prompts, None, None, device=device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=cfg, negative_prompt=negs,
                                                   lora_scale=lora_scale, **kw)
            return TextConditioning(c, u if cfg else None, pc, pu if cfg else None)
        if negative_prompt:
            raise ValueError("FLUX.1 is guidance-distilled: it has no negative prompt (guidance_scale sets its guidance "
                             "embedding); leave negative_prompt empty")
        c, pc, _ = self.pipe.encode_prompt(prompts, None, device=device, num_images_per_prompt=1, lora_scale=lora_scale, **kw)
        return TextConditioning(c, None, pc)

    # ------------------------------------------------------------------ model
    def make_model_fn(self, guidance_scale: float, lora_scale: float | None = None):
        """``model_fn(x_s, s, **cond) -> v`` (see the module doc); per-call ``guidance_scale`` / ``lora_scale``
        overrides as in :func:`sdedit_engine.pipelines.text.make_model_fn`; ``region`` (a TiledDenoiser
        tile, latent cells) offsets Flux's RoPE ids so every tile keeps its place in the image."""
        tr, family = self.transformer, self.family
        dtype = tr.dtype
        scale = float(self.num_timesteps) if family == "sd3" else 1.0
        default_g, default_lora = float(guidance_scale), lora_scale

        def model_fn(x: torch.Tensor, s: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                     uncond: Optional[torch.Tensor] = None, pooled: Optional[torch.Tensor] = None,
                     uncond_pooled: Optional[torch.Tensor] = None, guidance_scale: Optional[float] = None,
                     lora_scale: Optional[float] = None, region=None, **_: object) -> torch.Tensor:
            g = default_g if guidance_scale is None else float(guidance_scale)
            lora = default_lora if lora_scale is None else float(lora_scale)
            attn = None if lora is None else {"scale": lora}
            t = (s.float() * scale).to(x.device)
            if family == "sd3":
                cfg = uncond is not None and g != 1.0
                xin, ehs, pool, ts = x.to(dtype), encoder_hidden_states, pooled, t
                if cfg:
                    xin, ts = torch.cat([xin, xin]), torch.cat([t, t])
                    ehs, pool = torch.cat([uncond, ehs]), torch.cat([uncond_pooled, pooled])
                out = tr(hidden_states=xin, timestep=ts, encoder_hidden_states=ehs.to(dtype),
                         pooled_projections=pool.to(dtype), joint_attention_kwargs=attn, return_dict=False)[0]
                if cfg:
                    u, c = out.float().chunk(2)
                    return u + g * (c - u)
                return out
            h, w = x.shape[-2:]
            if h % 2 or w % 2:
                raise ValueError(f"Flux needs even latent sides (image sides multiples of 16 px), got {h}x{w}")
            off = (0, 0) if region is None else (region[0] // 2, region[2] // 2)
            ids = image_ids(h, w, x.device, dtype, off)
            txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=x.device, dtype=dtype)
            guidance = torch.full((x.shape[0],), g, device=x.device, dtype=torch.float32) if family == "flux" else None
            out = tr(hidden_states=pack(x.to(dtype)), timestep=t, guidance=guidance, pooled_projections=pooled.to(dtype),
                     encoder_hidden_states=encoder_hidden_states.to(dtype), txt_ids=txt_ids, img_ids=ids,
                     joint_attention_kwargs=attn, return_dict=False)[0]
            return unpack(out, h, w)

        return model_fn

    def make_denoiser(self, guidance_scale: float, lora_scale: float | None = None,
                      t0_scale: str = "model") -> FlowDenoiser:
        return FlowDenoiser(self.make_model_fn(guidance_scale, lora_scale), self.schedule(t0_scale), prediction="velocity")
