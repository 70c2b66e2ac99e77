"""A tiny real MMDiT (SD3 layout) checkpoint that ComfyUI's own detection loads as **SD3**, generated
(seeded, byte-identical) into the test cache on first use and never committed.

``tiny_sd3.safetensors`` (in ``tiny_sd15.cache_dir()``, next to the SD1.5 fixtures):

* ``model.diffusion_model.*``: ComfyUI's ``MMDiT`` with depth 2 (``model_detection`` reads
  depth = hidden/64, so hidden 128 and 2 heads), patch 2, 16 latent channels, a 4096-wide context
  embedder and a 2048-wide pooled embedder (what the SD3 text encoder produces with CLIP-L alone:
  hidden states zero-padded to 4096, pooled CLIP-L + 1280 zeros), pos_embed for 16x16 patches
  (images up to 256x256). Names and shapes are read from ComfyUI's own class, so the file follows
  the installed ComfyUI; every tensor is seeded by its name (fan-in scaled normal, norms = 1) and
  written in fp16. About 1.6 M parameters.
* ``first_stage_model.*``: the hand-set pass-through TAESD of ``tiny_sd15`` with 16 latent
  channels (encode = 8x8 average pooling into channels 0-3, decode = nearest upsampling).
* ``text_encoders.clip_l.*``: the seeded CLIP-L of ``tiny_sd15`` (``CLIPTextEncode`` works; ComfyUI
  ships the tokenizer).

:func:`checkpoint_path` needs ComfyUI importable (``harness.add_comfyui_to_sys_path``);
:func:`ensure` writes the file from a subprocess, so the calling process never imports ComfyUI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.fixtures import tiny_sd15

CHECKPOINT_NAME = "tiny_sd3.safetensors"
DEPTH = 2
LATENT_CHANNELS = 16
CONTEXT_WIDTH = 4096
POOLED_WIDTH = 2048
POS_EMBED_MAX = 16
LATENT_MAGNITUDE = 0.8  # raw latent = (2*pixel - 1) * 0.8; SD3's latent format then scales by 1.5305


def unet_config() -> dict:
    """The MMDiT config ComfyUI's model_detection derives from the written keys."""
    hidden = 64 * DEPTH
    return {
        "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "patch_size": 2, "depth": DEPTH,
        "input_size": None, "adm_in_channels": POOLED_WIDTH,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": CONTEXT_WIDTH, "out_features": hidden}},
        "num_patches": POS_EMBED_MAX * POS_EMBED_MAX, "pos_embed_max_size": POS_EMBED_MAX,
        "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
    }


def mmdit_state_dict(seed: int = 5, prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    net = MMDiT(**unet_config(), operations=comfy.ops.disable_weight_init, device="meta")
    sd = {}
    for name, t in net.state_dict().items():
        key = prefix + name
        shape = tuple(t.shape)
        if name.endswith(".bias"):
            w = tiny_sd15._randn(seed, key, shape, 0.02)
        elif len(shape) == 1:  # norm scales
            w = torch.ones(shape)
        elif name == "pos_embed":
            w = tiny_sd15._randn(seed, key, shape, 0.1)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            w = tiny_sd15._randn(seed, key, shape, 1.0 / fan_in**0.5)
        sd[key] = w
    return sd


def checkpoint_state_dict() -> dict[str, torch.Tensor]:
    sd = tiny_sd15._fp16(mmdit_state_dict())
    sd.update(tiny_sd15.taesd_state_dict(latent_channels=LATENT_CHANNELS, latent_magnitude=LATENT_MAGNITUDE))
    sd.update(tiny_sd15._fp16(tiny_sd15.clip_state_dict(prefix="text_encoders.clip_l.transformer.text_model.")))
    return sd


def checkpoint_path(root=None) -> Path:
    """``tiny_sd3.safetensors`` (written on first call, ~250 MB, most of it the CLIP-L)."""
    return tiny_sd15._write(tiny_sd15.cache_dir(root) / CHECKPOINT_NAME, checkpoint_state_dict)


def ensure(comfyui_dir, root=None) -> Path:
    """The checkpoint's path, generating it in a subprocess (with ComfyUI on its path) when missing."""
    path = tiny_sd15.cache_dir(root) / CHECKPOINT_NAME
    if not path.is_file():
        repo = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
        if root is not None:
            env["SDEDIT_TEST_CACHE"] = str(root)
        subprocess.run([sys.executable, "-m", "tests.comfy.tiny_mmdit", str(comfyui_dir)], cwd=repo, env=env, check=True)
    return path


if __name__ == "__main__":  # python -m tests.comfy.tiny_mmdit COMFYUI_DIR -> writes the file
    from tests.comfy import harness

    harness.add_comfyui_to_sys_path(sys.argv[1] if len(sys.argv) > 1 else None)
    out = checkpoint_path()
    print(f"{out}  {out.stat().st_size / 1e6:.1f} MB  sha256={tiny_sd15.file_sha256(out)[:16]}")
