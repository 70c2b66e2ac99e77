"""The shipped landscape model as an :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline` (imports diffusers lazily).

:class:`BuiltinPipeline` is the one adapter: the "VAE" is the exact pixel (un)shuffle of
:mod:`~sdedit_engine.builtin.spec` (latent factor 2), the network a diffusers ``UNet2DModel``
(unconditional, ε-prediction) wrapped by the engine's :class:`DiscreteTimeDenoiser` — so ``sdedit``,
``sde_drag``, ``cycle_encode/decode``, ``sde_inpaint`` and ``diffedit`` run on it through exactly the
code paths of a Stable Diffusion checkpoint. Prompts and guidance have nothing to condition and are
ignored; ControlNet, LoRA and VAE tiling are refused with a message.

    pipe = load_builtin()                      # offline, ~6 MB fp16 weights inside the package
    out = pipe(guide, t0=0.5, steps=50, sampler="ddpm", seed=0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..core.denoisers import DiscreteTimeDenoiser
from ..core.tiling import TiledDenoiser
from ..pipelines.loading import ModelLoadError
from ..pipelines.pipeline import SDEditPipeline
from ..pipelines.text import TextConditioning
from . import spec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PAINTINGS_DIR = Path(__file__).resolve().parent / "paintings"
BUILTIN_NAME = "builtin"


def load_unet(weights: str | Path | None = None, device=None):
    """The shipped ``UNet2DModel`` in float32 (weights are stored as fp16 safetensors)."""
    from diffusers import UNet2DModel

    folder = Path(weights) if weights is not None else WEIGHTS_DIR
    if not (folder / "diffusion_pytorch_model.safetensors").is_file():
        raise ModelLoadError(f"built-in model weights not found in {folder} (diffusion_pytorch_model.safetensors); "
                             "reinstall the package or train them with scripts/train_builtin.py")
    unet = UNet2DModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    return unet.float().eval().requires_grad_(False).to(device or "cpu")


def load_builtin(weights: str | Path | None = None, device=None):
    """:class:`BuiltinPipeline` with the shipped weights (or a diffusers UNet folder, e.g. a training run's ``ema/``)."""
    return BuiltinPipeline(load_unet(weights, device), device)


class _ClipDenoiser:
    """``D(x, σ)`` clamped to the data range [−1, 1] — diffusers' ``clip_sample=True`` for pixel-space DDPMs.

    An ε-model's x0 estimate ``x − σ·ε̂`` multiplies the ε error by σ (up to 157 here); pixel models are
    sampled with this clip. It is deterministic, so Cycle-SDE still reconstructs exactly.
    """

    def __init__(self, denoiser):
        self.denoiser, self.schedule = denoiser, denoiser.schedule

    def __call__(self, x, sigma, **cond):
        return self.denoiser(x, sigma, **cond).clamp(-1.0, 1.0)


class BuiltinPipeline(SDEditPipeline):
    """SDEdit and the SDE editing family on the shipped unconditional 64² landscape model."""

    vae_tiling = None  # no VAE, so no VAE tiling (shadows SDEditPipeline's codec-backed property)

    def __init__(self, unet, device=None):  # noqa: D401 - no diffusers pipeline object behind it
        self.pipe = None
        self._unet = unet
        self.controlnet = None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._unet.to(self.device)
        self.lora_scale = None
        self.unet_tiling: Optional[tuple[int, int]] = None
        self._schedule = spec.schedule()  # SDEditPipeline.schedule reads it
        self.prediction_type = spec.PREDICTION_TYPE
        self.vae_scale_factor = spec.LATENT_FACTOR
        self.pad_factor = spec.LATENT_FACTOR
        self.flow = None
        self.t0_scale = "model"

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self._unet.parameters())
        return f"BuiltinPipeline(landscapes 64², {n / 1e6:.2f} M params, unshuffle x{spec.LATENT_FACTOR}, device={self.device})"

    def to(self, device):
        self.device = torch.device(device)
        self._unet.to(self.device)
        return self

    @property
    def unet(self):
        return self._unet

    @property
    def vae(self):
        return None

    @property
    def is_xl(self) -> bool:
        return False

    def set_controlnet(self, controlnet, allow_download: bool = False) -> None:
        if controlnet is not None:
            raise ModelLoadError("the built-in model takes no ControlNet")

    def load_lora_weights(self, path, scale: float = 1.0, adapter_name: str | None = None) -> None:
        raise ModelLoadError("the built-in model takes no LoRA (it is a plain UNet2DModel)")

    def unload_lora_weights(self) -> None:
        self.lora_scale = None

    def enable_vae_tiling(self, enabled: bool = True, tile_size: int | None = None, overlap: int | None = None) -> None:
        if enabled:
            raise ValueError("vae tiling: the built-in model has no VAE (its latent is an exact pixel unshuffle)")

    def vae_dtype(self) -> torch.dtype:
        return torch.float32  # the exact pixel-unshuffle "VAE" works in float32

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return spec.encode(images.float()).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return spec.decode(latents.float())

    def encode_prompt(self, prompt, negative_prompt, n: int, guidance_scale: float, height: int, width: int):
        # unconditional model: a placeholder batched like the latents, ignored by the model function
        return TextConditioning(cond=torch.zeros(n, 1, device=self.device))

    def make_denoiser(self, guidance_scale: float = 7.5, control_image=None, control_scale: float = 1.0):
        if control_image is not None:
            raise ValueError("control_image: the built-in model takes no ControlNet")
        unet = self._unet

        def model_fn(x_in, t, **_ignored):
            return unet(x_in.to(unet.dtype), t.to(x_in.device)).sample

        den = _ClipDenoiser(DiscreteTimeDenoiser(model_fn, self.schedule, self.prediction_type))
        return den if self.unet_tiling is None else TiledDenoiser(den, *self.unet_tiling, region_arg="region")

