"""``SDEditPipeline``: SDEdit on diffusers Stable Diffusion / SDXL models, outside ComfyUI.

The pipeline only *adapts* diffusers components to the engine: the VAE maps pixels to latents
(scaling/shift factors applied), the text encoders and UNet become a ``model_fn`` (CFG,
ControlNet, SDXL added conditioning; :mod:`sdedit_engine.pipelines.text`), and the scheduler contributes
only its ``alphas_cumprod`` table. ``DiscreteTimeDenoiser`` + :func:`sdedit_engine.core.sdedit.sdedit`
do all the sampling, so the math is the same as in the ComfyUI nodes.

    pipe = SDEditPipeline.from_pretrained("path/to/sd15")      # offline, safetensors only
    out = pipe(image, mask=mask, prompt="a church", t0=0.5, steps=20, sampler="ddpm", seed=0)
    out.images[0].save("edited.png")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import framing
from ..core.denoisers import CountingDenoiser, DiscreteTimeDenoiser
from ..core.schedules import DiscreteSchedule, check_t0
from ..core.sdedit import sdedit, sdedit_sigmas
from ..core.tiling import TiledDenoiser, blend_tiles, check_tiling
from ..core.validation import check_guidance_scale, check_sigmas
from ..io import imaging
from .flow import FlowBackend, is_flow_pipeline
from .loading import (
    ModelLoadError,
    check_lora_path,
    load_controlnet,
    load_diffusers_pipeline,
    load_single_file_pipeline,
)
from .text import TextConditioning, encode_text, make_model_fn

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SDEditOutput:
    """Result of one call. ``images``: list of PIL (``pil``), ``(B,H,W,3)`` float array (``np``),
    ``(B,3,H,W)`` tensor (``pt``) or the latents (``latent``)."""

    images: Any
    latents: torch.Tensor
    t0: float
    sigma0: float
    steps: int
    nfe: int  # UNet evaluations per item (a CFG evaluation is one batch-2 call)
    seeds: list[int] = field(default_factory=list)
    sigmas: Optional[torch.Tensor] = None
    latent_mask: Optional[torch.Tensor] = None  # the editable latent cells (framing's max rule); None without a mask


def _seeds(seed, generator, n: int) -> list[int]:
    """One integer seed per item: from ``seed`` (int → seed+i, or a list), else drawn from ``generator``.

    The engine draws noise from one seeded CPU generator per item (device independent); a
    ``torch.Generator`` is therefore only used to pick those seeds.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if len(gens) not in (1, n):
            raise ValueError(f"got {len(gens)} generators for a batch of {n}")
        if len(gens) == 1:
            base = int(torch.randint(0, 2**62, (1,), generator=gens[0], device=gens[0].device))
            return [base + i for i in range(n)]
        return [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in gens]
    if seed is None:
        seed = 0
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"seed list has {len(seed)} entries but the batch has {n} items")
        return [int(s) for s in seed]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return [int(seed) + i for i in range(n)]


class SDEditPipeline:
    """SDEdit with a diffusers SD 1.x/2.x or SDXL model (ε- or v-prediction), optional ControlNet and LoRA."""

    def __init__(self, pipe, controlnet=None, device: str | torch.device | None = None):
        self.pipe = pipe  # the diffusers pipeline: components, encode_prompt, LoRA loading
        self.controlnet = controlnet
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.pipe.to(self.device)
        if controlnet is not None:
            controlnet.to(self.device)
        self.lora_scale: float | None = None
        self.vae_tiling: Optional[tuple[int, int]] = None  # (tile, overlap) in latent cells; enable_vae_tiling
        self.unet_tiling: Optional[tuple[int, int]] = None  # enable_unet_tiling
        self.t0_scale = "model"  # flow models: "model" (their own time) or "sd15_snr" (core.flow.FlowSchedule)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        sched = pipe.scheduler
        self.flow = FlowBackend(pipe) if is_flow_pipeline(pipe) else None
        self.pad_factor = self.vae_scale_factor * (self.flow.patch if self.flow is not None else 1)
        if self.flow is not None:
            self.prediction_type = "flow"
            return
        if not hasattr(sched, "alphas_cumprod"):
            raise ModelLoadError(f"scheduler {type(sched).__name__} has no alphas_cumprod (not a discrete VP model)")
        self._schedule = DiscreteSchedule.from_alphas_cumprod(torch.as_tensor(sched.alphas_cumprod, dtype=torch.float64))
        self.prediction_type = sched.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ModelLoadError(f"unsupported prediction_type {self.prediction_type!r} (epsilon or v_prediction)")
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise ModelLoadError(
                f"the UNet takes {self.unet.config.in_channels} input channels but the VAE makes "
                f"{self.vae.config.latent_channels}: inpainting/instruct UNets are not SDEdit models; use the base model")

    def to(self, device) -> "SDEditPipeline":
        """Move every component (and the ControlNet) to ``device``; returns self."""
        self.device = torch.device(device)
        self.pipe.to(self.device)
        if self.controlnet is not None:
            self.controlnet.to(self.device)
        return self

    @property
    def family(self) -> str:
        """``sd`` (1.x/2.x), ``sdxl``, ``sd3``, ``flux`` or ``flux-schnell``."""
        return self.flow.family if self.flow is not None else ("sdxl" if self.is_xl else "sd")

    @property
    def schedule(self):
        """The engine schedule: a DiscreteSchedule, or for flow models a FlowSchedule under ``t0_scale``
        (Flux dev: μ of the last encoded image size, diffusers' dynamic shift)."""
        return self.flow.schedule(self.t0_scale) if self.flow is not None else self._schedule

    @property
    def guidance_distilled(self) -> bool:
        """True for FLUX.1 (dev/schnell): guidance is a model input, there is no true CFG (no CFG ramp in drag)."""
        return self.flow is not None and self.flow.family.startswith("flux")

    @property
    def default_guidance_scale(self) -> float:
        """What ``guidance_scale=None`` means: 7.5 (SD/SDXL CFG), 7.0 (SD3 CFG), 3.5 (Flux dev's guidance
        embedding), 0 (schnell: no guidance input)."""
        return self.flow.default_guidance if self.flow is not None else 7.5

    def __repr__(self) -> str:
        kind = self.family.upper()
        return (f"SDEditPipeline({kind}, {self.prediction_type}, T={self.schedule.num_timesteps}, "
                f"controlnet={self.controlnet is not None}, lora_scale={self.lora_scale}, device={self.device})")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model, *, controlnet=None, allow_download: bool = False, torch_dtype=None,
                        device=None, variant: str | None = None, **kwargs) -> "SDEditPipeline":
        """Load a diffusers folder (or a cached hub id; downloads only with ``allow_download=True``)."""
        pipe = load_diffusers_pipeline(model, allow_download=allow_download, torch_dtype=torch_dtype, variant=variant, **kwargs)
        cn = load_controlnet(controlnet, allow_download=allow_download, torch_dtype=torch_dtype) if controlnet is not None else None
        return cls(pipe, cn, device)

    @classmethod
    def from_single_file(cls, path, *, config=None, controlnet=None, allow_download: bool = False, torch_dtype=None,
                         device=None, **kwargs) -> "SDEditPipeline":
        """Load an original-format ``.safetensors`` checkpoint (pickle formats are refused)."""
        pipe = load_single_file_pipeline(path, config=config, allow_download=allow_download, torch_dtype=torch_dtype, **kwargs)
        cn = load_controlnet(controlnet, allow_download=allow_download, torch_dtype=torch_dtype) if controlnet is not None else None
        return cls(pipe, cn, device)

    @classmethod
    def load(cls, model, **kwargs) -> "SDEditPipeline":
        """``from_single_file`` for a file path, ``from_pretrained`` otherwise (used by the CLI)."""
        from pathlib import Path

        return cls.from_single_file(model, **kwargs) if Path(str(model)).expanduser().is_file() else \
            cls.from_pretrained(model, **{k: v for k, v in kwargs.items() if k != "config"})

    @property
    def unet(self):
        """The denoising network: the UNet, or a flow model's transformer."""
        return self.pipe.transformer if self.flow is not None else self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def is_xl(self) -> bool:
        return getattr(self.unet.config, "addition_embed_type", None) == "text_time"

    def set_controlnet(self, controlnet, allow_download: bool = False) -> None:
        """Attach (path or ``ControlNetModel``) or detach (None) a ControlNet."""
        self.controlnet = None if controlnet is None else load_controlnet(controlnet, allow_download=allow_download).to(self.device)

    def load_lora_weights(self, path, scale: float = 1.0, adapter_name: str | None = None) -> None:
        """Load a diffusers/peft (or kohya) LoRA from a ``.safetensors`` file or folder; ``scale`` weights it."""
        src = check_lora_path(path)
        kw = {"adapter_name": adapter_name} if adapter_name else {}
        try:
            if hasattr(src, "is_file") and src.is_file():
                self.pipe.load_lora_weights(str(src.parent), weight_name=src.name, **kw)
            else:
                self.pipe.load_lora_weights(str(src), **kw)
        except (ValueError, OSError, KeyError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load LoRA {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.lora_scale = float(scale)

    def unload_lora_weights(self) -> None:
        self.pipe.unload_lora_weights()
        self.lora_scale = None

    def enable_vae_tiling(self, enabled: bool = True, tile_size: int | None = None, overlap: int | None = None) -> None:
        """Encode/decode in overlapping pixel tiles (default: the VAE's native size, ≥ 256 px; overlap ¼).

        Tiles are blended straight into one preallocated output (:func:`~sdedit_engine.core.tiling.blend_tiles`),
        so the VAE's memory follows the tile, not the image; diffusers' own tiling keeps every decoded
        tile until the end. Decoded pixels are assembled on the CPU, so the GPU holds one tile.
        """
        native = max(int(getattr(self.vae.config, "sample_size", 512) or 512), 256)
        self.vae_tiling = self._tiling(enabled, tile_size or native, overlap, "VAE")
        self.vae.disable_tiling()  # ours replaces diffusers' (it would tile again inside each tile)

    def enable_unet_tiling(self, enabled: bool = True, tile_size: int | None = None, overlap: int | None = None) -> None:
        """Denoise in overlapping latent tiles (:class:`~sdedit_engine.core.tiling.TiledDenoiser`).

        ``tile_size``/``overlap`` in pixels (default: the UNet's native size, ≥ 256 px; overlap ¼). For
        images far above the model's resolution: memory follows the tile. Each tile sees only its own
        context, so keep t0 moderate; ControlNet images and SDXL crop coordinates are cropped per tile.
        """
        native = max(int(getattr(self.unet.config, "sample_size", 0) or 128) * self.vae_scale_factor, 256)
        self.unet_tiling = self._tiling(enabled, tile_size or native, overlap, "UNet")

    def _tiling(self, enabled: bool, tile_px: int, overlap_px: int | None, what: str) -> Optional[tuple[int, int]]:
        if not enabled:
            return None
        f = self.vae_scale_factor
        overlap_px = tile_px // 4 // f * f if overlap_px is None else overlap_px
        for name, v in (("tile_size", tile_px), ("overlap", overlap_px)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % f:
                raise ValueError(f"{what} {name} must be a non-negative multiple of {f} pixels, got {v!r}")
        return check_tiling(tile_px // f, overlap_px // f, f"{what} ")

    # ------------------------------------------------------------------ VAE
    def vae_dtype(self) -> torch.dtype:
        """The VAE's working dtype (an fp16 VAE with ``force_upcast`` is moved to float32 first)."""
        if self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)
        return self.vae.dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0,1] (H, W multiples of 8) → scaled latents (posterior mode, as ComfyUI)."""
        dtype = self.vae_dtype()

        def encode_tile(pixels, region=None):
            return self.vae.encode((pixels.to(self.device, dtype) * 2 - 1)).latent_dist.mode().float()

        if self.vae_tiling is None:
            lat = encode_tile(images)
        else:
            lat = blend_tiles(encode_tile, images, *self.vae_tiling, in_scale=self.vae_scale_factor, out_device=self.device)
        if self.flow is not None:  # Flux's dynamic shift follows the image size
            self.flow.set_resolution(*images.shape[-2:])
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return lat.sub_(shift).mul_(self.vae.config.scaling_factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → ``(B,3,H,W)`` in [0,1] (float32)."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        dtype = self.vae_dtype()

        def decode_tile(lat, region=None):
            return self.vae.decode(lat.to(self.device, dtype), return_dict=False)[0]

        if self.vae_tiling is None:
            img = decode_tile(z).float()
        else:
            img = blend_tiles(decode_tile, z, *self.vae_tiling, out_scale=self.vae_scale_factor, out_device="cpu")
        return img.add_(1).div_(2).clamp_(0, 1)  # in place: at 4096² every full-size copy is 192 MiB

    # ------------------------------------------------------------------ model
    def encode_prompt(self, prompt, negative_prompt, n: int, guidance_scale: float, height: int, width: int) -> TextConditioning:
        if self.flow is not None:
            return self.flow.encode_text(prompt, negative_prompt, n, guidance_scale, self.device, lora_scale=self.lora_scale)
        return encode_text(self.pipe, prompt, negative_prompt, n, guidance_scale, self.device,
                           height=height, width=width, lora_scale=self.lora_scale)

    def make_denoiser(self, guidance_scale: float = 7.5, control_image: Optional[torch.Tensor] = None,
                      control_scale: float = 1.0) -> DiscreteTimeDenoiser:
        """The σ-space denoiser of this model; call it with ``**TextConditioning.as_extra_args()``."""
        if control_image is not None and self.controlnet is None:
            raise ValueError("control_image given but no ControlNet is loaded (controlnet=... / set_controlnet)")
        if self.flow is not None:
            den = self.flow.make_denoiser(guidance_scale, self.lora_scale, self.t0_scale)
            return den if self.unet_tiling is None else TiledDenoiser(den, *self.unet_tiling, region_arg="region")
        fn = make_model_fn(self.unet, guidance_scale, self.controlnet if control_image is not None else None,
                           control_image, control_scale, self.lora_scale, self.vae_scale_factor)
        den = DiscreteTimeDenoiser(fn, self.schedule, self.prediction_type)
        return den if self.unet_tiling is None else TiledDenoiser(den, *self.unet_tiling, region_arg="region")

    # ------------------------------------------------------------------ framing
    def mask_tensor(self, mask, image: torch.Tensor) -> Optional[torch.Tensor]:
        """``mask`` (PIL / numpy / tensor, 1 = edit) as (1 or B, 1, H, W) float, checked against ``image``."""
        if mask is None:
            return None
        m = imaging.mask_to_tensor(mask)
        imaging.check_same_size(image, m)
        if m.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"mask batch {m.shape[0]} does not match the image batch {image.shape[0]}")
        return m

    def frame(self, image: torch.Tensor, mask: Optional[torch.Tensor] = None, *, grow: int = 0, feather: float = 0.0,
              crop: Optional[framing.Crop] = None) -> framing.Frame:
        """Prepare pixels (B, 3, H, W) and a pixel mask for this model: :func:`sdedit_engine.core.framing.frame`
        with this VAE (latent and latent mask filled in, on the pipeline's device)."""
        return framing.frame(image, mask, factor=self.pad_factor, encode=self.encode, grow=grow,
                             feather=feather, crop=crop)

    def finish(self, fr: framing.Frame, latents: torch.Tensor, composite: bool = True, output_type: str = "pil"):
        """Decode ``latents`` of ``fr``'s working region and put them back into the image
        (:func:`sdedit_engine.core.framing.finish`), as PIL / numpy / tensor; ``latent`` returns them as is."""
        if output_type == "latent":
            return latents
        result = framing.finish(fr, self.decode(latents).cpu(), composite)
        if output_type == "pil":
            return imaging.to_pil(result)
        return result.permute(0, 2, 3, 1).numpy() if output_type == "np" else result

    @torch.no_grad()
    def __call__(self, image, mask=None, prompt: str | Sequence[str] = "", negative_prompt: str | Sequence[str] | None = None,
                 *, t0: float = 0.5, steps: int = 20, sampler: str = "dpmpp_2m_sde", guidance_scale: float | None = None,
                 repeats: int = 1, seed: int | Sequence[int] | None = None, generator=None, num_images: int = 1,
                 output_type: str = "pil", control_image=None, controlnet_conditioning_scale: float = 1.0,
                 spacing: str = "uniform", known_noise: str = "fresh", mask_grow: int = 0, mask_blur: float = 0,
                 composite: bool = True, crop_padding: int | None = None, crop_resolution: int | None = None,
                 sigmas: Optional[torch.Tensor] = None,
                 conditioning: Optional[TextConditioning] = None, progress: bool = True,
                 callback: Optional[Callable] = None) -> SDEditOutput:
        """Edit ``image`` (PIL, numpy, tensor or list) with SDEdit.

        t0 is the paper's noise level (σ of timestep round(t0·T)−1), not diffusers' ``strength``.
        With a ``mask`` (1 = edit) only the masked area is regenerated, and after decoding the
        original pixels are pasted back wherever the (grown/feathered) mask is 0, bit for bit.
        ``num_images`` copies of each input get seeds seed, seed+1, …; ``repeats`` is the paper's K.
        ``crop_padding`` (with a mask) edits only the mask's bounding box plus that many pixels and
        stitches it back: less compute for small edits in large images; ``crop_resolution`` (long
        side, pixels) also resizes that region for the model, None keeps it native (the ComfyUI node's
        ``crop_to_mask`` + ``crop_resolution``; :class:`sdedit_engine.core.framing.Crop`). The pixel →
        latent mask rule and the padding are those of :mod:`sdedit_engine.core.framing`.
        ``conditioning`` replaces prompt encoding with precomputed :class:`TextConditioning`.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        t0 = check_t0(t0)
        guidance_scale = check_guidance_scale(self.default_guidance_scale if guidance_scale is None else guidance_scale)
        original = imaging.to_tensor(image).float()
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
        n_in = original.shape[0]
        pmask = self.mask_tensor(mask, original)
        if pmask is not None:
            pmask = pmask.expand(n_in, -1, -1, -1).repeat_interleave(num_images, dim=0)
        original = original.repeat_interleave(num_images, dim=0) if num_images > 1 else original
        b = original.shape[0]
        seeds = _seeds(seed, generator, b)
        crop = None
        if crop_padding is not None:
            if pmask is None:
                raise ValueError("crop_padding needs a mask (the crop is the mask's bounding box)")
            if output_type == "latent":
                raise ValueError("crop_padding cannot return latents: they would cover only the crop")
            crop = framing.Crop(int(crop_padding), crop_resolution)
        fr = self.frame(original, pmask, grow=mask_grow, feather=mask_blur, crop=crop)
        guide, lmask = fr.latent, fr.latent_mask
        ph, pw = fr.padded.shape[-2:]

        ctrl = None
        if control_image is not None:
            ctrl = imaging.resize(imaging.to_tensor(control_image, "control_image").float(), (ph, pw))
            if ctrl.shape[0] not in (1, n_in):
                raise ValueError(f"got {ctrl.shape[0]} control images for {n_in} input images (use 1 or {n_in})")
            ctrl = ctrl.expand(n_in, -1, -1, -1).repeat_interleave(num_images, dim=0).to(self.device)
        cond = conditioning if conditioning is not None else \
            self.encode_prompt(prompt, negative_prompt, b, guidance_scale, ph, pw)
        denoiser = CountingDenoiser(self.make_denoiser(guidance_scale, ctrl, controlnet_conditioning_scale))
        grid = check_sigmas(sigmas) if sigmas is not None else sdedit_sigmas(self.schedule, t0, steps, spacing)
        n_steps = len(grid) - 1

        bar = tqdm(total=n_steps * repeats, desc="sdedit", disable=not progress, leave=False)

        def on_step(info):
            bar.update(1)
            return callback(info) if callback is not None else None

        try:
            latents = sdedit(denoiser, guide, t0=t0, steps=steps, sampler=sampler, mask=lmask, repeats=repeats,
                             seed=seeds, spacing=spacing, known_noise=known_noise, callback=on_step,
                             extra_args=cond.as_extra_args(), sigmas=grid)
        finally:
            bar.close()
        out = SDEditOutput(None, latents, t0, float(grid[0]), n_steps, denoiser.calls, seeds, grid, lmask)
        out.images = self.finish(fr, latents, composite, output_type)
        return out

    # ------------------------------------------------------------------ the SDE editing family
    def drag(self, image, points, mask=None, prompt: str = "", **kwargs):
        """SDE-Drag (Nie et al., ICLR 2024); see :func:`sdedit_engine.pipelines.drag_pipeline.drag`."""
        from .drag_pipeline import drag

        return drag(self, image, points, mask, prompt, **kwargs)

    def inpaint(self, image, mask, prompt: str = "", **kwargs):
        """SDE / ODE inpainting; see :func:`sdedit_engine.pipelines.drag_pipeline.inpaint`."""
        from .drag_pipeline import inpaint

        return inpaint(self, image, mask, prompt, **kwargs)

    def diffedit(self, image, source_prompt: str, target_prompt: str, mask=None, **kwargs):
        """DiffEdit-SDE / DiffEdit-ODE; see :func:`sdedit_engine.pipelines.drag_pipeline.diffedit`."""
        from .drag_pipeline import diffedit

        return diffedit(self, image, source_prompt, target_prompt, mask, **kwargs)

    def tune_lora(self, image, prompt: str = "", **kwargs):
        """Fine-tune a removable LoRA on ``image``; see :func:`sdedit_engine.pipelines.lora_tuning.tune_lora`."""
        from .lora_tuning import tune_lora

        padded = framing.frame(imaging.to_tensor(image).float(), factor=self.pad_factor).padded
        return tune_lora(self, padded, prompt, **kwargs)
