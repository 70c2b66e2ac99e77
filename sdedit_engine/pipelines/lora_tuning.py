"""LoRA fine-tuning of the UNet on the input image (SDE-Drag's optional identity-preserving step).

Recipe of the paper's code (``utils/train_lora.py``), on the modern diffusers/PEFT API instead of the
removed ``LoRAAttnProcessor``: a LoRA on every attention projection (``to_q``, ``to_k``, ``to_v``,
``to_out.0``, self- and cross-attention) added with ``unet.add_adapter(LoraConfig(...))``; 100 steps
of AdamW (lr 2e-4, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8), batch 1, a fresh VAE posterior
sample each step, ``t ~ U{0..999}``, DDPM ``add_noise`` and MSE on ε (on v for v-prediction models).
Rank 4 in the paper's DragBench script, 16 in its UI.

    tuned = tune_lora(pipe, image, "a photo of a cat", steps=100, rank=16, seed=0)
    ...                       # the UNet now carries the adapter; tuned.set_scale(0.5) weights it
    tuned.remove()            # the UNet is exactly what it was before

The base weights never change, so removing the adapter restores the original outputs bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..core.samplers import SamplingCancelled

TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_NAME = "sdedit_tuned"

# callback(step, total, loss) -> truthy to cancel (step counts from 1)
LoRACallback = Callable[[int, int, float], Optional[bool]]


@dataclass
class TunedLoRA:
    """A LoRA adapter trained on one image and attached to ``unet`` (see :func:`tune_lora`)."""

    unet: object
    adapter_name: str
    rank: int
    losses: list[float] = field(default_factory=list)
    previous_adapters: list[str] = field(default_factory=list)
    removed: bool = False

    def _layers(self):
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not hasattr(self, "_cache"):
            self._cache = [m for m in self.unet.modules()
                           if isinstance(m, BaseTunerLayer) and self.adapter_name in getattr(m, "lora_A", {})]
        return self._cache

    def set_scale(self, scale: float) -> None:
        """Weight of this adapter in later UNet calls (1 = as trained, 0 = off)."""
        if self.removed:
            raise RuntimeError("the tuned LoRA was removed")
        for layer in self._layers():
            layer.set_scale(self.adapter_name, float(scale))

    def remove(self) -> None:
        """Delete the adapter and reactivate the adapters that were active before (idempotent)."""
        if self.removed:
            return
        self.unet.delete_adapters(self.adapter_name)
        if self.previous_adapters:
            self.unet.set_adapter(list(self.previous_adapters))
        self.removed = True
        self.__dict__.pop("_cache", None)

    def __enter__(self) -> "TunedLoRA":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def lora_scale_ramp(steps: int, scale_min: float = 0.5) -> list[float]:
    """The paper's LoRA weight per reverse step (step 0 starts at t0), indexed like
    :func:`~sdedit_engine.core.drag.guidance_ramp`: ``lam(n) = 1 − (1 − min)·(1 − cos(π·n/L))/2`` with
    ``n = steps − i`` and ``L = steps − 1``, i.e. about ``scale_min`` at t0 and about 1 near t = 0."""
    n = int(steps)
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if n == 1:
        return [float(scale_min)]
    return [1.0 - (1.0 - scale_min) * (1.0 - math.cos(math.pi * (n - i) / (n - 1))) / 2.0 for i in range(n)]


def _active_adapters(unet) -> list[str]:
    if not getattr(unet, "_hf_peft_config_loaded", False):
        return []
    try:
        return list(unet.active_adapters())
    except (ValueError, AttributeError):
        return []


def check_tuning_options(options: dict) -> dict:
    """Validate ``lora_tuning=`` options (unknown keys are an error); returns them with defaults."""
    allowed = {"steps": 100, "rank": 16, "learning_rate": 2e-4, "weight_decay": 1e-2, "scale_min": 0.5,
               "prompt": None, "seed": None}
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"lora_tuning must be a dict of options or None, got {type(options).__name__}")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"lora_tuning: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    out = {**allowed, **options}
    for key in ("steps", "rank"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"lora_tuning: {key} must be an integer >= 1, got {out[key]!r}")
    if not (isinstance(out["learning_rate"], (int, float)) and out["learning_rate"] > 0):
        raise ValueError(f"lora_tuning: learning_rate must be > 0, got {out['learning_rate']!r}")
    if not (isinstance(out["scale_min"], (int, float)) and 0 <= out["scale_min"] <= 1):
        raise ValueError(f"lora_tuning: scale_min must be in [0, 1], got {out['scale_min']!r}")
    return out


def tune_lora(pipe, image, prompt: str = "", *, steps: int = 100, rank: int = 16, learning_rate: float = 2e-4,
              weight_decay: float = 1e-2, betas=(0.9, 0.999), seed: int = 0,
              adapter_name: str = ADAPTER_NAME, callback: Optional[LoRACallback] = None) -> TunedLoRA:
    """Fine-tune a LoRA on ``image`` (``(1,3,H,W)`` in [0,1], H and W multiples of the VAE factor).

    ``pipe`` is an :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline`. Seeded: the LoRA initialisation,
    VAE samples, timesteps and noise all come from ``seed``. ``callback(step, steps, loss)`` runs after
    every step; a truthy return cancels (the adapter is removed and ``SamplingCancelled`` raised).
    Adapters that were active before (a loaded LoRA) stay active alongside the new one.
    """
    from peft import LoraConfig

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"LoRA steps must be an integer >= 1, got {steps!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    unet, device = pipe.unet, pipe.device
    image = torch.as_tensor(image).float()
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"LoRA tuning needs one RGB image (1,3,H,W), got shape {tuple(image.shape)}")
    previous = _active_adapters(unet)
    if adapter_name in (getattr(unet, "peft_config", None) or {}):
        raise ValueError(f"the UNet already has an adapter named {adapter_name!r}; remove it first")

    args = pipe.encode_prompt(prompt, None, 1, 1.0, image.shape[-2], image.shape[-1]).as_extra_args()
    model_fn = _model_fn(pipe)
    posterior = _posterior(pipe, image)

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # seeded init (kaiming A, zero B)
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # a loaded LoRA: intended
        torch.manual_seed(int(seed))
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                    target_modules=list(TARGET_MODULES)), adapter_name=adapter_name)
    if previous:
        unet.set_adapter(previous + [adapter_name])
    tuned = TunedLoRA(unet, adapter_name, rank, previous_adapters=previous)
    params = [p for n, p in unet.named_parameters() if f".{adapter_name}." in n and "lora_" in n]
    frozen = {n: p.requires_grad for n, p in unet.named_parameters()}
    for p in unet.parameters():
        p.requires_grad_(any(p is q for q in params))
    if not params:
        tuned.remove()
        raise ValueError("no attention projections (to_q/to_k/to_v/to_out.0) found in the UNet for the LoRA")
    for p in params:  # train in float32 even when the UNet is half precision
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=learning_rate, betas=tuple(betas), weight_decay=weight_decay, eps=1e-8)
    draws = (_flow_draws if pipe.flow is not None else _draws)(pipe, posterior, seed)
    # half-precision UNet (CUDA): mixed precision with loss scaling, as the paper's accelerate fp16 setup
    amp = device.type == "cuda" and unet.dtype in (torch.float16, torch.bfloat16)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and unet.dtype == torch.float16)
    was_training = unet.training
    unet.train()
    try:
        for step in range(steps):
            xt, t, target = next(draws)
            with torch.enable_grad(), torch.autocast(device.type, dtype=unet.dtype, enabled=amp):
                pred = model_fn(xt, t.float(), **args)
                loss = torch.nn.functional.mse_loss(pred.float(), target.float())
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            tuned.losses.append(float(loss.detach()))
            if callback is not None and callback(step + 1, steps, tuned.losses[-1]):
                raise SamplingCancelled(f"LoRA fine-tuning cancelled at step {step + 1}/{steps}")
    except BaseException:
        tuned.remove()
        raise
    finally:
        unet.train(was_training)
        for n, p in unet.named_parameters():
            p.requires_grad_(frozen.get(n, False))
    for p in params:
        p.requires_grad_(False)
    return tuned


def _posterior(pipe, image: torch.Tensor):
    with torch.no_grad():
        return pipe.vae.encode((image * 2 - 1).to(pipe.device, pipe.vae_dtype())).latent_dist


def _model_fn(pipe):
    """The network call trained on: the UNet without CFG (ε or v), or a flow transformer (velocity) with
    the pipeline's default guidance input (Flux dev's guidance embedding; SD3 without CFG)."""
    from .text import make_model_fn

    if pipe.flow is not None:
        return pipe.flow.make_model_fn(pipe.default_guidance_scale)
    return make_model_fn(pipe.unet, 1.0)


def _flow_draws(pipe, posterior, seed: int):
    """Flow-matching batches: (x_s, s, v) with s = shift(u), u ~ U(0, 1), ``x_s = (1 − s)·x0 + s·ε`` and
    the velocity target ``v = ε − x0`` (the flow models' training loss, on the model's own shift)."""
    vae, device = pipe.vae, pipe.device
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    schedule = pipe.schedule
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        with torch.no_grad():
            x0 = (posterior.sample(generator=gen).float() - shift) * vae.config.scaling_factor
            u = torch.rand(1, generator=gen, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
            s = schedule.flow_sigma(u).float().to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            xs = (1 - s.reshape(-1, 1, 1, 1)) * x0 + s.reshape(-1, 1, 1, 1) * noise
        yield xs, s, noise - x0


def _draws(pipe, posterior, seed: int):
    """The seeded training batches: (x_t, t, target) with a fresh VAE sample, t ~ U{0..T-1} and DDPM noise."""
    vae, device = pipe.vae, pipe.device
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    abar = pipe.schedule.alphas_cumprod.to(device, torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        with torch.no_grad():
            x0 = (posterior.sample(generator=gen).float() - shift) * vae.config.scaling_factor
            t = torch.randint(0, abar.numel(), (1,), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            a = abar[t].reshape(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise
            target = noise if pipe.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        yield xt, t, target


@torch.no_grad()
def tuning_losses(pipe, image, prompt: str = "", *, steps: int = 100, seed: int = 0) -> list[float]:
    """The current UNet's loss on exactly the batches :func:`tune_lora` (same ``seed``) trains on;
    before vs after tuning it measures the fit to the image."""
    image = torch.as_tensor(image).float()
    args = pipe.encode_prompt(prompt, None, 1, 1.0, image.shape[-2], image.shape[-1]).as_extra_args()
    model_fn = _model_fn(pipe)
    draws = (_flow_draws if pipe.flow is not None else _draws)(pipe, _posterior(pipe, image), seed)
    out = []
    for _ in range(int(steps)):
        xt, t, target = next(draws)
        out.append(float(torch.nn.functional.mse_loss(model_fn(xt, t.float(), **args).float(), target.float())))
    return out
