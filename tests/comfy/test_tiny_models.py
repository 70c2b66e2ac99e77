"""The tiny fixture models, checked in-process against ComfyUI's own loaders (``comfy_inprocess``)."""

from __future__ import annotations

import pytest
import torch

from tests.comfy import harness
from tests.fixtures import tiny_sd15


@pytest.fixture(scope="module")
def loaded(comfy_inprocess, tiny_models):
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(tiny_models["checkpoint"]), output_vae=True, output_clip=True, embedding_directory=None)
    return model, clip, vae


def test_files_are_byte_identical_when_regenerated(tiny_models, tmp_path):
    # LoRA and ControlNet are cheap to rebuild; the checkpoint is checked the same way below.
    assert tiny_sd15.file_sha256(tiny_sd15.lora_path(tmp_path)) == tiny_sd15.file_sha256(tiny_models["lora"])
    assert tiny_sd15.file_sha256(tiny_sd15.controlnet_path(tmp_path)) == tiny_sd15.file_sha256(tiny_models["controlnet"])
    assert tiny_sd15.file_sha256(tiny_sd15.checkpoint_path(tmp_path)) == tiny_sd15.file_sha256(tiny_models["checkpoint"])


def test_checkpoint_loads_as_sd15_with_taesd_and_clip(loaded):
    import comfy.model_detection  # noqa: F401  (in-process import works)
    import comfy.samplers  # noqa: F401

    model, clip, vae = loaded
    assert type(model.model.model_config).__name__ == "SD15"
    assert type(vae.first_stage_model).__name__ == "TAESD"
    assert clip is not None
    # our hand-written key layout is exactly ComfyUI's UNetModel for the detected config
    theirs = model.model.diffusion_model.state_dict()
    mine = {k[len("model.diffusion_model."):]: v for k, v in tiny_sd15.unet_state_dict().items()}
    assert set(theirs) == set(mine)
    assert all(theirs[k].shape == mine[k].shape for k in mine)
    assert 15e6 < sum(v.numel() for v in mine.values()) < 25e6


def test_tiny_vae_is_pooling_and_nearest_upsampling(loaded):
    _, _, vae = loaded
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy)], -1)[None]  # smooth
    lat = vae.encode(img)
    assert lat.shape == (1, 4, 8, 8)
    assert torch.allclose(lat, tiny_sd15.reference_encode(img), atol=1e-3)
    assert 0.18215 * lat.abs().max() <= 1.01  # SD15 scaled latents in about [-1, 1]
    out = vae.decode(lat)
    assert out.shape == img.shape
    assert torch.allclose(out, tiny_sd15.reference_decode(lat), atol=3e-3)
    # round trip = 8x8 block average (up to float error), which is close for a smooth image
    blocks = torch.nn.functional.avg_pool2d(img.movedim(-1, 1), 8)
    blocky = torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest").movedim(1, -1)
    assert (out - blocky).abs().max() < 3e-3
    assert (out - img).abs().mean() < 0.05
    flat = torch.full((1, 64, 64, 3), 0.25)
    assert (vae.decode(vae.encode(flat)) - flat).abs().max() < 2e-3  # exact up to float error


def test_clip_encodes_text(loaded):
    _, clip, _ = loaded
    a = clip.encode_from_tokens(clip.tokenize("a red square"))
    b = clip.encode_from_tokens(clip.tokenize("a blue circle"))
    assert a.shape == (1, 77, 768) and torch.isfinite(a).all()
    assert (a - b).abs().mean() > 1e-3


def test_pack_imports_in_process(comfy_inprocess):
    pack = harness.import_pack()
    assert hasattr(pack, "comfy_entrypoint")
    import nodes  # ComfyUI's nodes.py, not this repo's nodes/ package

    assert hasattr(nodes, "NODE_CLASS_MAPPINGS")
