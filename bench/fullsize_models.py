"""Full-size random-weight diffusers pipelines built from the official config dicts (nothing downloaded).

The denoisers (UNet / MMDiT / Flux transformer) and VAEs have exactly the published architectures, so
time per step and memory are those of the real models; the weights are PyTorch's default random init
(seeded), which keeps activations finite in fp16/bf16 for a few steps. Text encoders are full size for
SD1.5/SDXL (CLIP-L, OpenCLIP-bigG); for SD3/Flux the T5-XXL encoder (4.7 B parameters) is replaced by a
one-layer T5 with the real width (4096), and the CLIP encoders keep their real widths with fewer layers
(``small_text=True``, the default there): the text encoders run once per call and equally in every path
compared, and this keeps an SD3-size run inside 24 GB of RAM. The tokenizers are the tiny local ones of
the test fixtures (ids stay within the real vocabularies).

    from bench.fullsize_models import build
    pipe = build("sd15", device="cuda", dtype=torch.float16)   # a diffusers StableDiffusionPipeline

Families: ``sd15``, ``sdxl``, ``sd3`` (SD3-medium MMDiT, 2 B), ``flux`` (FLUX.1-dev, 12 B; GPU only in
practice: 24 GB in bf16), ``flux-schnell``. Building on ``device`` allocates and initialises the weights
there (``with torch.device(device)``), so a 12 B model is created on the GPU in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "flux-schnell")

# --------------------------------------------------------------------------- official configs
SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, sample_size=64, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
SD_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], in_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816,
    sample_size=128, transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"])
SD3_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=192)
FLUX_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=[16, 56, 56])
FLOW_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=1024,
    up_block_types=["UpDecoderBlock2D"] * 4, use_quant_conv=False, use_post_quant_conv=False)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
              projection_dim=1280, hidden_act="gelu")


def _clip(kind, tok, cfg: dict, layers: int | None = None):
    from transformers import CLIPTextConfig

    c = dict(cfg, vocab_size=49408, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, layer_norm_eps=1e-5)
    if layers is not None:
        c["num_hidden_layers"] = layers
    return kind(CLIPTextConfig(**c))


def _t5(tok, layers: int = 1):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=max(len(tok), 128), d_model=4096, d_kv=64, d_ff=1024,
                                   num_layers=layers, num_heads=64, dropout_rate=0.0, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id, feed_forward_proj="gated-gelu"))


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(family: str, device="cpu", dtype=None, seed: int = 0, small_text: bool | None = None):
    """A full-size random-weight diffusers pipeline of ``family`` on ``device`` in ``dtype``."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tests.fixtures.tiny_diffusers import tiny_tokenizer
    from tests.fixtures.tiny_flow import tiny_t5_tokenizer

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    small = family in ("sd3", "flux", "flux-schnell") if small_text is None else small_text
    tok = tiny_tokenizer()
    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        if family == "sd15":
            from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

            pipe = StableDiffusionPipeline(
                vae=AutoencoderKL.from_config(SD_VAE), text_encoder=_clip(CLIPTextModel, tok, CLIP_L, 2 if small else None),
                tokenizer=tok, unet=UNet2DConditionModel.from_config(SD15_UNET),
                scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        elif family == "sdxl":
            from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

            pipe = StableDiffusionXLPipeline(
                vae=AutoencoderKL.from_config(dict(SD_VAE, scaling_factor=0.13025, sample_size=1024, force_upcast=False)),
                text_encoder=_clip(CLIPTextModel, tok, CLIP_L, 2 if small else None),
                text_encoder_2=_clip(CLIPTextModelWithProjection, tok, CLIP_G, 2 if small else None),
                tokenizer=tok, tokenizer_2=tok, unet=UNet2DConditionModel.from_config(SDXL_UNET),
                scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 steps_offset=1, timestep_spacing="leading"))
        elif family == "sd3":
            from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

            t5tok = tiny_t5_tokenizer()
            pipe = StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel.from_config(SD3_MEDIUM),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                vae=AutoencoderKL.from_config(dict(FLOW_VAE, scaling_factor=1.5305, shift_factor=0.0609)),
                text_encoder=_clip(CLIPTextModelWithProjection, tok, CLIP_L, 2 if small else None), tokenizer=tok,
                text_encoder_2=_clip(CLIPTextModelWithProjection, tok, CLIP_G, 2 if small else None), tokenizer_2=tok,
                text_encoder_3=_t5(t5tok, 1 if small else 24), tokenizer_3=t5tok)
        else:
            from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

            schnell = family == "flux-schnell"
            t5tok = tiny_t5_tokenizer()
            sched = FlowMatchEulerDiscreteScheduler(shift=1.0) if schnell else FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                max_image_seq_len=4096)
            pipe = FluxPipeline(
                scheduler=sched, vae=AutoencoderKL.from_config(dict(FLOW_VAE, scaling_factor=0.3611, shift_factor=0.1159)),
                text_encoder=_clip(CLIPTextModel, tok, CLIP_L, 2 if small else None), tokenizer=tok,
                text_encoder_2=_t5(t5tok, 1 if small else 24), tokenizer_2=t5tok,
                transformer=FluxTransformer2DModel.from_config(dict(FLUX_DEV, guidance_embeds=not schnell)))
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoiser_of(pipe):
    return getattr(pipe, "transformer", None) or pipe.unet
