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

from typing import Optional

import torch

from ..core import framing
from ..core.denoisers import DiscreteTimeDenoiser
from ..core.schedules import DiscreteSchedule
from ..core.tiling import TiledDenoiser
from ..io import imaging
from .flow import FlowBackend, is_flow_pipeline
from .loading import (
    ModelLoadError,
    check_lora_path,
    load_controlnet,
    load_diffusers_pipeline,
    load_single_file_pipeline,
)
from .sdedit_call import OUTPUT_TYPES, SDEditOutput, _seeds, run_sdedit  # noqa: F401 - public here too
from .text import TextConditioning, encode_text, make_model_fn
from .vae import VAECodec, tile_setting


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
        self.unet_tiling: Optional[tuple[int, int]] = None  # enable_unet_tiling
        self.t0_scale = "model"  # flow models: "model" (their own time) or "sd15_snr" (core.flow.FlowSchedule)
        self.codec = VAECodec(self.vae, self.device)  # pixels ↔ scaled latents, optional tiles
        self.vae_scale_factor = self.codec.factor
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
        self.codec.device = self.device
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
        """Encode/decode in overlapping pixel tiles; see :meth:`sdedit_engine.pipelines.vae.VAECodec.enable_tiling`."""
        self.codec.enable_tiling(enabled, tile_size, overlap)

    @property
    def vae_tiling(self) -> Optional[tuple[int, int]]:
        return self.codec.tiling

    def enable_unet_tiling(self, enabled: bool = True, tile_size: int | None = None, overlap: int | None = None) -> None:
        """Denoise in overlapping latent tiles (:class:`~sdedit_engine.core.tiling.TiledDenoiser`).

        ``tile_size``/``overlap`` in pixels (default: the UNet's native size, ≥ 256 px; overlap ¼). For
        images far above the model's resolution: memory follows the tile. Each tile sees only its own
        context, so keep t0 moderate; ControlNet images and SDXL crop coordinates are cropped per tile.
        """
        native = max(int(getattr(self.unet.config, "sample_size", 0) or 128) * self.vae_scale_factor, 256)
        self.unet_tiling = tile_setting(enabled, tile_size or native, overlap, self.vae_scale_factor, "UNet")

    # ------------------------------------------------------------------ VAE (pipelines/vae.py)
    def vae_dtype(self) -> torch.dtype:
        return self.codec.dtype()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0,1] (H, W multiples of the VAE factor) → scaled latents (posterior mode)."""
        latents = self.codec.encode(images)
        if self.flow is not None:  # Flux's dynamic shift follows the image size
            self.flow.set_resolution(*images.shape[-2:])
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → ``(B,3,H,W)`` in [0,1] (float32)."""
        return self.codec.decode(latents)

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

    __call__ = run_sdedit  # pipelines/sdedit_call.py: SDEdit of images (and masks) with this model

    # ------------------------------------------------------------------ the SDE editing family
    def drag(self, image, points, mask=None, prompt: str = "", **kwargs):
        """SDE-Drag (Nie et al., ICLR 2024); see :func:`sdedit_engine.pipelines.drag_pipeline.drag`."""
        from .drag_pipeline import drag

        return drag(self, image, points, mask, prompt, **kwargs)

    def inpaint(self, image, mask, prompt: str = "", **kwargs):
        """SDE / ODE inpainting; see :func:`sdedit_engine.pipelines.inpaint_diffedit.inpaint`."""
        from .inpaint_diffedit import inpaint

        return inpaint(self, image, mask, prompt, **kwargs)

    def diffedit(self, image, source_prompt: str, target_prompt: str, mask=None, **kwargs):
        """DiffEdit-SDE / DiffEdit-ODE; see :func:`sdedit_engine.pipelines.inpaint_diffedit.diffedit`."""
        from .inpaint_diffedit import diffedit

        return diffedit(self, image, source_prompt, target_prompt, mask, **kwargs)

    def tune_lora(self, image, prompt: str = "", **kwargs):
        """Fine-tune a removable LoRA on ``image``; see :func:`sdedit_engine.pipelines.lora_tuning.tune_lora`."""
        from .lora_tuning import tune_lora

        padded = framing.frame(imaging.to_tensor(image).float(), factor=self.pad_factor).padded
        return tune_lora(self, padded, prompt, **kwargs)
