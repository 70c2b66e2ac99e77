"""One framing for both front ends (sdedit_engine.core.framing): the diffusers pipeline and the ComfyUI
node give the same latent mask and keep the same pixels for the same pixel mask, and a stroke thinner
than a latent cell is edited, not silently dropped (issue 14 item 2). Real ComfyUI in-process (its own
mask handling runs: the latent mask is read where ComfyUI hands it to our sampler) and the tiny
diffusers model."""

from __future__ import annotations

import pytest
import torch

from tests.comfy import harness
from tests.fixtures.tiny_diffusers import tiny_sd_path


@pytest.fixture(scope="module")
def comfy(comfy_inprocess, tiny_models):
    import comfy.sd

    harness.import_pack()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(tiny_models["checkpoint"]), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    from comfyui_sdedit.nodes import backend, sde_family, sdedit_nodes

    return {"model": model, "vae": vae, "pos": pos, "neg": neg, "backend": backend, "nodes": sdedit_nodes,
            "family": sde_family}


@pytest.fixture(scope="module")
def pipe():
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    return SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))


@pytest.fixture
def node_latent_mask(comfy, monkeypatch):
    """The latent mask as ComfyUI hands it to the node's sampler (after its own prepare_mask)."""
    seen = {}
    cls = comfy["backend"].SDEditKSampler
    original = cls.sample

    def recording(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                  disable_pbar=False):
        seen["mask"] = None if denoise_mask is None else denoise_mask.detach().float().cpu().clone()
        return original(self, model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)

    monkeypatch.setattr(cls, "sample", recording)
    return seen


def _image(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _node(comfy, image, mask, **kw):
    args = dict(t0=0.5, steps=2, cfg=2.0, sampler="ddpm", repeats=1, seed=0, mask=mask[:, 0], mask_grow=0,
                mask_feather=0.0, keep_unmasked_pixels=True, crop_to_mask=False, crop_padding=8, crop_resolution=64)
    args.update(kw)
    out = comfy["nodes"].SDEdit.execute(comfy["model"], comfy["pos"], comfy["neg"], comfy["vae"],
                                        image.permute(0, 2, 3, 1).contiguous(), **args).args
    return out[0].permute(0, 3, 1, 2)


def _kept(out, image):
    return (out == image).all(dim=1, keepdim=True)


CASES = {
    # odd size (padding), grown and feathered mask with a thin stroke
    "padded": dict(size=(60, 76), node={"mask_grow": 3, "mask_feather": 2.0}, pipe={"mask_grow": 3, "mask_blur": 2.0}),
    # crop to the mask, resized to 48 px on the long side
    "crop": dict(size=(96, 128), node={"mask_grow": 2, "mask_feather": 2.0, "crop_to_mask": True, "crop_padding": 8,
                                       "crop_resolution": 48},
                 pipe={"mask_grow": 2, "mask_blur": 2.0, "crop_padding": 8, "crop_resolution": 48}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_and_node_share_the_latent_mask_and_the_kept_pixels(comfy, pipe, node_latent_mask, case):
    from sdedit_engine.core import masks

    spec = CASES[case]
    h, w = spec["size"]
    image = _image(h, w)
    mask = torch.zeros(1, 1, h, w)
    mask[..., 21:23, 10:40] = 1.0  # a 2-px stroke between ComfyUI's bilinear sample rows
    mask[..., 30:50, 44:60] = 0.7
    node_out = _node(comfy, image, mask, **spec["node"])
    ours = pipe(image, mask=mask, prompt="a red house", t0=0.5, steps=2, sampler="ddpm", seed=0, output_type="pt",
                progress=False, **spec["pipe"])
    node_lm = node_latent_mask["mask"]
    assert node_lm is not None and ours.latent_mask is not None
    assert node_lm.shape[-2:] == ours.latent_mask.shape[-2:]
    assert torch.equal(node_lm[:, :1], ours.latent_mask.cpu())  # ComfyUI passes our latent mask through unchanged
    prepared = masks.grow_and_feather(mask, spec["pipe"]["mask_grow"], spec["pipe"]["mask_blur"])
    kept_node, kept_pipe = _kept(node_out, image), _kept(ours.images, image)
    assert torch.equal(kept_node, kept_pipe)
    assert torch.equal(kept_node, prepared == 0)  # exactly the unpainted pixels are kept, bit for bit


@pytest.mark.parametrize("node", ["SDEdit", "SDEditCycleInpaint"])
def test_a_stroke_thinner_than_a_latent_cell_is_edited(comfy, node):
    """Before the framing module the node resized the mask bilinearly: this stroke vanished on the
    latent grid and the node returned the VAE round trip there, silently."""
    image = _image(64, 64, seed=4)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 21:23, 8:56] = 1.0  # rows 8·2 + 5 and 8·2 + 6
    if node == "SDEdit":
        out = _node(comfy, image, mask, t0=0.6, steps=3)
    else:
        out = comfy["family"].SDEditCycleInpaint.execute(
            comfy["model"], comfy["pos"], comfy["neg"], comfy["vae"], image.permute(0, 2, 3, 1).contiguous(),
            mask[:, 0], steps=3, cfg=2.0, mode="sde", seed=0, mask_grow=0, mask_feather=0.0).args[0].permute(0, 3, 1, 2)
    vae = comfy["vae"]
    with torch.no_grad():
        round_trip = vae.decode(vae.encode(image.permute(0, 2, 3, 1).contiguous())).float().cpu().permute(0, 3, 1, 2)
    stroke = (mask > 0).expand_as(image)
    assert float((out[stroke] - round_trip[stroke]).abs().mean()) > 1e-2  # edited, not the round trip
    assert torch.equal(out[~stroke], image[~stroke])
