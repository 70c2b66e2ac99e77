"""The pack's nodes inside a real ComfyUI server (POST /prompt), with the tiny SD1.5 checkpoint."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.comfy import harness
from tests.comfy.conftest import CKPT, CONTROLNET, LORA

PACK_NODES = ["SDEdit", "SDEditT0Sweep", "SDEditSigmas", "SDEditSampler", "SDEditStrokeGuide", "SDEditCompositeGuide"]
H = W = 64


def stroke_image(h=H, w=W) -> np.ndarray:
    """A flat-colour 'stroke painting': sky, ground and a red block."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (90, 140, 230)
    img[h // 2 :] = (60, 160, 60)
    img[h // 4 : h // 2 + 8, w // 3 : w // 3 + 16] = (200, 40, 40)
    return img


def box_mask(h=H, w=W, box=(16, 16, 48, 40)) -> np.ndarray:
    return harness.box_mask(h, w, box)


def base_prompt(server, guide=None, seed=0, prefix="sdedit", **sdedit_inputs) -> dict:
    """CheckpointLoader → prompts → LoadImage(guide) → SDEdit → SaveImage, plus the guide saved as-is."""
    name = server.upload_image(stroke_image() if guide is None else guide)
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red house in a field", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "guide": {"class_type": "LoadImage", "inputs": {"image": name}},
        "sdedit": {"class_type": "SDEdit", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2],
            "guide": ["guide", 0], "t0": 0.5, "steps": 4, "cfg": 3.0, "sampler": "dpmpp_2m_sde", "repeats": 1,
            "seed": seed, "mask_grow": 0, "mask_feather": 0.0, "keep_unmasked_pixels": True,
            "crop_to_mask": False, "crop_padding": 16, "crop_resolution": 64}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["sdedit", 0], "filename_prefix": prefix}},
        "save_guide": {"class_type": "SaveImage", "inputs": {"images": ["guide", 0], "filename_prefix": prefix + "_guide"}},
    }
    p["sdedit"]["inputs"].update(sdedit_inputs)
    return p


def add_mask(server, p, mask_rgb=None) -> dict:
    name = server.upload_image(box_mask() if mask_rgb is None else mask_rgb)
    p["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": name, "channel": "red"}}
    p["sdedit"]["inputs"]["mask"] = ["mask", 0]
    return p


def image_of(out, node="save") -> np.ndarray:
    return out[node]["images"][0]


# -- registration -------------------------------------------------------------------------------------
def test_pack_imports_and_every_node_is_documented(comfy_server):
    comfy_server.assert_pack_loaded()
    info = comfy_server.object_info()
    for node in PACK_NODES:
        assert node in info, node
        spec = info[node]
        assert spec["description"] and spec["category"].startswith("SDEdit"), node
        for group in ("required", "optional"):
            for name, (_kind, *opts) in spec["input"].get(group, {}).items():
                assert opts and opts[0].get("tooltip"), f"{node}.{name} has no tooltip"
    assert info["SDEdit"]["input"]["required"]["t0"][1]["default"] == 0.5
    assert "NOT KSampler's 'denoise'" in info["SDEdit"]["input"]["required"]["t0"][1]["tooltip"]


# -- behaviour -----------------------------------------------------------------------------------------
def test_sdedit_edits_inside_the_mask_and_keeps_other_pixels_bit_identical(comfy_server):
    out = comfy_server.run(add_mask(comfy_server, base_prompt(comfy_server, seed=1, prefix="masked")))
    result, guide = image_of(out), image_of(out, "save_guide")
    assert result.shape == guide.shape == (H, W, 3)
    inside = box_mask()[..., 0] > 0
    assert np.array_equal(result[~inside], guide[~inside])  # keep_unmasked_pixels: exact
    assert np.abs(result[inside].astype(int) - guide[inside]).mean() > 3  # the masked box was edited


def test_without_keep_unmasked_pixels_the_vae_round_trip_shows(comfy_server):
    textured = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)  # the tiny VAE is lossless on flat 8x8 blocks
    p = add_mask(comfy_server, base_prompt(comfy_server, guide=textured, seed=1, prefix="nokeep", keep_unmasked_pixels=False))
    out = comfy_server.run(p)
    inside = box_mask()[..., 0] > 0
    assert not np.array_equal(image_of(out)[~inside], image_of(out, "save_guide")[~inside])


def test_same_seed_same_image_and_other_seed_differs(comfy_server):
    a = image_of(comfy_server.run(base_prompt(comfy_server, seed=5, prefix="seed_a")))
    b = image_of(comfy_server.run(base_prompt(comfy_server, seed=5, prefix="seed_b")))
    c = image_of(comfy_server.run(base_prompt(comfy_server, seed=6, prefix="seed_c")))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_t0_trades_faithfulness_for_change(comfy_server):
    guide = stroke_image()
    dist = []
    for t0 in (0.1, 0.5, 0.9):
        img = image_of(comfy_server.run(base_prompt(comfy_server, seed=2, prefix=f"t0_{t0}", t0=t0)))
        dist.append(float(np.abs(img.astype(float) - guide).mean()))
    assert dist[0] < dist[1] < dist[2], dist


def test_lora_strength_changes_the_output(comfy_server):
    def with_lora(strength):
        p = base_prompt(comfy_server, seed=3, prefix=f"lora_{strength}")
        p["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": LORA,
                                                            "strength_model": strength, "strength_clip": strength}}
        p["sdedit"]["inputs"]["model"] = ["lora", 0]
        p["pos"]["inputs"]["clip"] = ["lora", 1]
        p["neg"]["inputs"]["clip"] = ["lora", 1]
        return image_of(comfy_server.run(p))

    base = image_of(comfy_server.run(base_prompt(comfy_server, seed=3, prefix="lora_none")))
    assert np.array_equal(with_lora(0.0), base)
    assert np.abs(with_lora(1.0).astype(int) - base).mean() > 1


def test_controlnet_in_the_conditioning_changes_the_output(comfy_server):
    def run(strength):
        p = base_prompt(comfy_server, seed=4, prefix=f"cn_{strength}")
        p["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
        p["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["guide", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0, "vae": ["ckpt", 2]}}
        p["sdedit"]["inputs"]["positive"] = ["apply", 0]
        p["sdedit"]["inputs"]["negative"] = ["apply", 1]
        return image_of(comfy_server.run(p))

    assert np.abs(run(1.0).astype(int) - run(0.0)).mean() > 1


def test_progress_and_previews_arrive_for_every_step_of_every_repeat(comfy_server):
    p = base_prompt(comfy_server, seed=8, prefix="progress", steps=3, repeats=2)
    pid = comfy_server.queue_prompt(p)
    comfy_server.wait(pid)
    events = [e for e in comfy_server.progress_events(pid) if e.data.get("node") == "sdedit"]
    values = [e.data["value"] for e in events]
    assert values[-1] == 6 and {e.data["max"] for e in events} == {6}
    assert comfy_server.preview_frames(pid), "no latent previews were sent"


def test_batches_of_guides_match_single_runs(comfy_server):
    one = image_of(comfy_server.run(base_prompt(comfy_server, seed=10, prefix="single")))
    p = base_prompt(comfy_server, seed=10, prefix="batch")
    p["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["guide", 0], "amount": 2}}
    p["sdedit"]["inputs"]["guide"] = ["rep", 0]
    out = comfy_server.run(p)
    images = out["save"]["images"]
    assert len(images) == 2
    assert np.array_equal(images[0], one)  # item 0 uses seed 10 whatever the batch
    assert not np.array_equal(images[1], one)  # item 1 uses seed 11


def test_crop_to_mask_edits_only_the_box_and_keeps_the_rest(comfy_server):
    big = np.zeros((128, 128, 3), np.uint8)
    big[:] = (120, 120, 120)
    big[40:70, 50:90] = (220, 30, 30)
    p = add_mask(comfy_server, base_prompt(comfy_server, guide=big, seed=12, prefix="crop", crop_to_mask=True,
                                           crop_padding=8, crop_resolution=64),
                 box_mask(128, 128, (48, 40, 88, 72)))
    out = comfy_server.run(p)
    result, guide = image_of(out), image_of(out, "save_guide")
    assert result.shape == (128, 128, 3)
    inside = box_mask(128, 128, (48, 40, 88, 72))[..., 0] > 0
    assert np.array_equal(result[~inside], guide[~inside])
    assert np.abs(result[inside].astype(int) - guide[inside]).mean() > 3


def test_sizes_not_a_multiple_of_8_are_padded_and_cropped_back(comfy_server):
    out = comfy_server.run(base_prompt(comfy_server, guide=stroke_image(60, 68), seed=1, prefix="odd"))
    assert image_of(out).shape == (60, 68, 3)


def test_custom_sampler_pieces_run_in_sampler_custom_advanced(comfy_server):
    name = comfy_server.upload_image(stroke_image())
    mask_name = comfy_server.upload_image(box_mask())
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "guide": {"class_type": "LoadImage", "inputs": {"image": name}},
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": mask_name, "channel": "red"}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["guide", 0], "vae": ["ckpt", 2]}},
        "setmask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["mask", 0]}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 3.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "sigmas": {"class_type": "SDEditSigmas", "inputs": {"model": ["ckpt", 0], "t0": 0.6, "steps": 4, "spacing": "uniform"}},
        "sampler": {"class_type": "SDEditSampler", "inputs": {"sampler": "ddpm", "repeats": 2, "known_noise": "fresh"}},
        "run": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                  "sigmas": ["sigmas", 0], "latent_image": ["setmask", 0]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["run", 0], "vae": ["ckpt", 2]}},
        "dec_in": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "custom"}},
        "save_in": {"class_type": "SaveImage", "inputs": {"images": ["dec_in", 0], "filename_prefix": "custom_in"}},
    }
    out = comfy_server.run(p)
    result, recon = image_of(out).astype(int), image_of(out, "save_in").astype(int)
    inside = box_mask()[..., 0] > 0
    # the kept latent comes back exactly, so outside the mask (minus one latent cell of bilinear
    # mask blur) the decode equals the guide's own VAE round trip
    far = ~_dilate(inside, 8)
    assert np.array_equal(result[far], recon[far])
    assert np.abs(result[inside] - recon[inside]).mean() > 3


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    out[max(ys.min() - r, 0): ys.max() + r + 1, max(xs.min() - r, 0): xs.max() + r + 1] = True
    return out


def test_guide_builders_feed_sdedit(comfy_server):
    base = np.full((H, W, 3), 128, np.uint8)
    strokes = base.copy()
    strokes[20:30, 10:50] = (250, 250, 0)
    patch = np.zeros((16, 16, 3), np.uint8)
    patch[:] = (0, 0, 255)
    names = [comfy_server.upload_image(a) for a in (base, strokes, patch)]
    p = base_prompt(comfy_server, guide=base, seed=1, prefix="guides")
    p["base"] = {"class_type": "LoadImage", "inputs": {"image": names[0]}}
    p["strokes"] = {"class_type": "LoadImage", "inputs": {"image": names[1]}}
    p["patch"] = {"class_type": "LoadImage", "inputs": {"image": names[2]}}
    p["stroke_guide"] = {"class_type": "SDEditStrokeGuide", "inputs": {"base": ["base", 0], "strokes": ["strokes", 0], "grow": 2, "threshold": 0.02}}
    p["comp"] = {"class_type": "SDEditCompositeGuide", "inputs": {"base": ["stroke_guide", 0], "patch": ["patch", 0], "x": 40, "y": 40, "grow": 0}}
    p["sdedit"]["inputs"].update({"guide": ["comp", 0], "mask": ["comp", 1]})
    p["save_guide"]["inputs"]["images"] = ["comp", 0]
    p["mask_img"] = {"class_type": "MaskToImage", "inputs": {"mask": ["stroke_guide", 1]}}
    p["save_mask"] = {"class_type": "SaveImage", "inputs": {"images": ["mask_img", 0], "filename_prefix": "guides_mask"}}
    out = comfy_server.run(p)
    guide = image_of(out, "save_guide")
    assert (guide[25, 30] == (250, 250, 0)).all() and (guide[45, 45] == (0, 0, 255)).all() and (guide[5, 5] == 128).all()
    stroke_mask = image_of(out, "save_mask")[..., 0] > 127
    assert stroke_mask[18:32, 8:52].all() and not stroke_mask[:17].any()  # strokes grown by 2 px
    result = image_of(out)
    patch_area = np.zeros((H, W), bool)
    patch_area[40:56, 40:56] = True
    assert np.array_equal(result[~patch_area], guide[~patch_area])


def test_t0_sweep_returns_results_grid_and_faithfulness(comfy_server):
    name = comfy_server.upload_image(stroke_image())
    p = base_prompt(comfy_server, seed=1, prefix="sweep")
    del p["sdedit"]
    p["sweep"] = {"class_type": "SDEditT0Sweep", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "guide": ["guide", 0],
        "t0_values": "0.2, 0.5, 0.8", "steps": 3, "cfg": 1.0, "sampler": "ddpm", "repeats": 1, "seed": 0,
        "mask_grow": 0, "mask_feather": 0.0, "keep_unmasked_pixels": True, "crop_to_mask": False,
        "crop_padding": 16, "crop_resolution": 64}}
    p["guide"]["inputs"]["image"] = name
    p["save"]["inputs"]["images"] = ["sweep", 0]
    p["save_grid"] = {"class_type": "SaveImage", "inputs": {"images": ["sweep", 1], "filename_prefix": "sweep_grid"}}
    out = comfy_server.run(p)
    assert len(out["save"]["images"]) == 3
    grid = image_of(out, "save_grid")
    assert grid.shape[1] > 3 * W and grid.shape[0] > H
    text = "".join(out["sweep"]["text"]) if "text" in out["sweep"] else ""
    csv, info = text.strip().split("\n\n")  # the CSV, then where each t0 starts (sigma, log-SNR)
    assert info.count("log-SNR") == 3
    rows = [r.split(",") for r in csv.splitlines()[1:]]
    assert [float(t) for t, _ in rows] == [0.2, 0.5, 0.8]
    l2 = [float(v) for _, v in rows]
    assert l2[0] < l2[1] < l2[2], l2


# -- cancellation and bad input --------------------------------------------------------------------------
def test_interrupt_mid_run_stops_sdedit_and_the_next_prompt_runs(comfy_server):
    p = base_prompt(comfy_server, guide=stroke_image(256, 256), seed=21, prefix="long", steps=400, t0=0.9)
    pid = comfy_server.queue_prompt(p)
    comfy_server.ws.wait_for(lambda e: e.type == "progress" and e.data.get("prompt_id") == pid
                             and e.data.get("node") == "sdedit" and e.data.get("value", 0) >= 2, timeout=180)
    started = time.monotonic()
    comfy_server.interrupt()
    with pytest.raises(harness.ComfyInterrupted):
        comfy_server.wait(pid, timeout=60)
    assert time.monotonic() - started < 30
    assert max(e.data["value"] for e in comfy_server.progress_events(pid) if e.data.get("node") == "sdedit") < 400
    out = comfy_server.run(base_prompt(comfy_server, seed=22, prefix="after_interrupt"))
    assert image_of(out).shape == (H, W, 3)


BAD_INPUTS = [
    ("mask size", {"mask_rgb": box_mask(32, 32, (4, 4, 20, 20))}, "mask is 32x32 but the guide is 64x64"),
    ("empty mask", {"mask_rgb": np.zeros((H, W, 3), np.uint8)}, "mask is empty"),
    ("crop without mask", {"crop_to_mask": True}, "crop_to_mask: needs a mask"),
    ("mask batch", {"mask_batch": 3}, "mask batch is 3 but the guide batch is 2"),
]


@pytest.mark.parametrize("label, change, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_an_execution_error_naming_the_input_and_the_server_keeps_serving(comfy_server, label, change, message):
    p = base_prompt(comfy_server, seed=30, prefix="bad_" + label.replace(" ", "_"))
    if "mask_rgb" in change:
        add_mask(comfy_server, p, change["mask_rgb"])
    if "crop_to_mask" in change:
        p["sdedit"]["inputs"]["crop_to_mask"] = True
    if "mask_batch" in change:
        add_mask(comfy_server, p)
        p["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["guide", 0], "amount": 2}}
        p["mrep"] = {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}}
        p["mrep3"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["mrep", 0], "amount": 3}}
        p["m3"] = {"class_type": "ImageToMask", "inputs": {"image": ["mrep3", 0], "channel": "red"}}
        p["sdedit"]["inputs"].update({"guide": ["rep", 0], "mask": ["m3", 0]})
    with pytest.raises(harness.ComfyExecutionError) as err:
        comfy_server.run(p)
    assert message in str(err.value)
    assert comfy_server.alive
    assert image_of(comfy_server.run(base_prompt(comfy_server, seed=31, prefix="ok_after_" + label.replace(" ", "_")))).shape == (H, W, 3)


def test_t0_zero_is_refused_by_comfyuis_prompt_validation(comfy_server):
    """t0 inputs have min = 0.01 (the engine refuses t0 = 0): the UI never offers it, and a prompt that
    sends it anyway is rejected before anything runs, naming t0."""
    p = base_prompt(comfy_server, seed=30, prefix="bad_t0")
    p["sdedit"]["inputs"]["t0"] = 0.0
    with pytest.raises(harness.ComfyPromptError) as err:
        comfy_server.run(p)
    assert "t0" in str(err.value) and "0.01" in str(err.value)
    assert comfy_server.alive


def _with_model_sampling(server, prefix, node, inputs):
    p = base_prompt(server, seed=40, prefix=prefix)
    p["ms"] = {"class_type": node, "inputs": {"model": ["ckpt", 0], **inputs}}
    p["sdedit"]["inputs"]["model"] = ["ms", 0]
    return p


def test_model_patches_apply_v_prediction_runs_and_differs(comfy_server):
    eps = image_of(comfy_server.run(_with_model_sampling(comfy_server, "ms_eps", "ModelSamplingDiscrete", {"sampling": "eps", "zsnr": False})))
    v = image_of(comfy_server.run(_with_model_sampling(comfy_server, "ms_v", "ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False})))
    plain = image_of(comfy_server.run(base_prompt(comfy_server, seed=40, prefix="ms_plain")))
    assert np.array_equal(eps, plain)  # the patch itself is honoured (eps = the checkpoint's own type)
    assert np.abs(v.astype(int) - plain).mean() > 1  # SD2.x-style v-prediction goes through the model
