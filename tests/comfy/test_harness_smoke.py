"""Smoke tests of the ComfyUI test harness: the server, core sampling with the tiny models, LoRA,
ControlNet, interruption, progress/preview messages and a UI-format workflow in the frontend."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest

from tests.comfy import harness
from tests.comfy.conftest import CKPT, CONTROLNET, LORA, UI_DATA


def _single_image(outputs: dict, node: str = "save") -> np.ndarray:
    imgs = outputs[node]["images"]
    assert len(imgs) == 1
    return imgs[0].astype(np.float32)


def test_server_starts_and_lists_core_nodes(comfy_server):
    info = comfy_server.object_info()
    for cls in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
                "VAEEncode", "SaveImage", "LoadImage", "LoraLoader", "ControlNetLoader",
                "ControlNetApplyAdvanced", "SamplerCustomAdvanced", "SetLatentNoiseMask"):
        assert cls in info, cls
    ckpts = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert CKPT in ckpts
    assert LORA in info["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert CONTROLNET in info["ControlNetLoader"]["input"]["required"]["control_net_name"][0]
    comfy_server.assert_pack_loaded()
    assert "ComfyUI version: 0.3.75" in comfy_server.log()


def test_core_txt2img_produces_an_image_with_progress_and_previews(comfy_server):
    steps = 4
    prompt = harness.txt2img_prompt(CKPT, seed=1, steps=steps, filename_prefix="smoke_txt2img")
    pid = comfy_server.queue_prompt(prompt)
    entry = comfy_server.wait(pid)
    outputs = {nid: comfy_server._with_images(o) for nid, o in entry["outputs"].items()}
    img = _single_image(outputs)
    assert img.shape == (64, 64, 3)
    assert img.std() > 1.0  # not a constant image
    # a different seed gives a different image
    other = _single_image(comfy_server.run(harness.txt2img_prompt(CKPT, seed=2, steps=steps,
                                                                  filename_prefix="smoke_txt2img")))
    assert np.abs(other - img).mean() > 1.0
    # websocket: one progress message per step, previews (latent2rgb) and a success message
    prog = comfy_server.progress_events(pid)
    assert [e.data["value"] for e in prog] == list(range(1, steps + 1))
    assert all(e.data["max"] == steps and e.data["node"] == "sampler" for e in prog)
    assert comfy_server.preview_frames(pid), "no preview images arrived over /ws"
    types = [e.type for e in comfy_server.ws.for_prompt(pid)]
    assert types[0] == "execution_start" and types[-1] == "execution_success"


def _with_lora(strength: float, prefix: str) -> dict:
    p = harness.txt2img_prompt(CKPT, seed=3, steps=3, filename_prefix=prefix)
    p["lora"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": LORA,
        "strength_model": strength, "strength_clip": strength}}
    p["sampler"]["inputs"]["model"] = ["lora", 0]
    p["pos"]["inputs"]["clip"] = ["lora", 1]
    p["neg"]["inputs"]["clip"] = ["lora", 1]
    return p


def test_lora_is_applied_and_changes_the_output(comfy_server):
    base = _single_image(comfy_server.run(harness.txt2img_prompt(CKPT, seed=3, steps=3, filename_prefix="lora_base")))
    off = _single_image(comfy_server.run(_with_lora(0.0, "lora_off")))
    on = _single_image(comfy_server.run(_with_lora(1.0, "lora_on")))
    assert np.abs(off - base).max() <= 1.0  # strength 0 == no LoRA
    assert np.abs(on - base).mean() > 1.0
    assert "lora key not loaded" not in comfy_server.log()


def test_controlnet_is_applied_and_changes_the_output(comfy_server):
    hint = np.zeros((64, 64, 3), np.uint8)
    hint[16:48, 16:48] = 255
    hint_name = comfy_server.upload_image(hint, "smoke_hint.png")

    def prompt(strength: float, prefix: str) -> dict:
        p = harness.txt2img_prompt(CKPT, seed=4, steps=3, filename_prefix=prefix)
        p["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
        p["hint"] = {"class_type": "LoadImage", "inputs": {"image": hint_name}}
        p["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0, "vae": ["ckpt", 2]}}
        p["sampler"]["inputs"]["positive"] = ["apply", 0]
        p["sampler"]["inputs"]["negative"] = ["apply", 1]
        return p

    base = _single_image(comfy_server.run(harness.txt2img_prompt(CKPT, seed=4, steps=3, filename_prefix="cn_base")))
    off = _single_image(comfy_server.run(prompt(0.0, "cn_off")))
    on = _single_image(comfy_server.run(prompt(1.0, "cn_on")))
    assert np.abs(off - base).max() <= 1.0
    assert np.abs(on - base).mean() > 1.0
    assert "missing controlnet keys" not in comfy_server.log()


def test_errors_carry_the_server_message(comfy_server, tmp_path):
    p = harness.txt2img_prompt(CKPT, seed=5, steps=2, filename_prefix="err")
    p["img"] = {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}}
    p["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["ckpt", 2]}}
    p["sampler"]["inputs"]["latent_image"] = ["enc", 0]
    # validation error at POST /prompt
    with pytest.raises(harness.ComfyPromptError, match="does_not_exist"):
        comfy_server.queue_prompt(p)
    # runtime error: the file exists but is not an image
    broken = tmp_path / "broken_smoke.png"
    broken.write_bytes(b"this is not a png")
    p["img"]["inputs"]["image"] = comfy_server.upload_image(broken)
    with pytest.raises(harness.ComfyExecutionError) as ei:
        comfy_server.run(p)
    assert ei.value.data.get("node_id") == "img"
    assert ei.value.data.get("exception_message")
    assert "img" in str(ei.value) and "LoadImage" in str(ei.value)


def test_interrupt_stops_a_long_ksampler_run_and_the_next_prompt_runs(comfy_server):
    long_prompt = harness.txt2img_prompt(CKPT, seed=6, steps=400, width=256, height=256, filename_prefix="long")
    pid = comfy_server.queue_prompt(long_prompt)
    comfy_server.ws.wait_for(lambda e: e.type == "progress" and e.data.get("prompt_id") == pid
                             and e.data.get("value", 0) >= 2, timeout=120)
    t0 = time.monotonic()
    comfy_server.interrupt()
    with pytest.raises(harness.ComfyInterrupted):
        comfy_server.wait(pid, timeout=60)
    assert time.monotonic() - t0 < 30
    last = max(e.data["value"] for e in comfy_server.progress_events(pid))
    assert last < 400
    img = _single_image(comfy_server.run(harness.txt2img_prompt(CKPT, seed=7, steps=2, filename_prefix="after")))
    assert img.shape == (64, 64, 3)


def test_ui_workflow_runs_through_the_frontend(ui_server, run_ui):
    workflow = json.loads((UI_DATA / "txt2img_ui.json").read_text())
    entry = run_ui(copy.deepcopy(workflow), {"4": {"ckpt_name": CKPT}, "SaveImage": {"filename_prefix": "ui_smoke_a"}})
    images = ui_server.output_images(entry)
    assert list(images) == ["9"]
    (img,) = images["9"]
    assert img.shape == (64, 64, 3)
    # the same graph queued over the API gives the same pixels (same seed, fixed)
    p = harness.txt2img_prompt(CKPT, seed=42, steps=4, cfg=4.0, positive="a red square on a blue background",
                               negative="blurry", filename_prefix="ui_smoke_api")
    api_img = ui_server.run(p)["save"]["images"][0]
    assert np.abs(api_img.astype(np.float32) - img.astype(np.float32)).max() <= 1.0


def test_ui_workflow_refused_by_the_server_reports_node_errors(run_ui):
    from tests.comfy.browser import CDPError

    workflow = json.loads((UI_DATA / "txt2img_ui.json").read_text())  # names a checkpoint we lack
    with pytest.raises(CDPError, match="v1-5-pruned-emaonly"):
        run_ui(workflow, check_console=False)
