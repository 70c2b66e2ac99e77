"""One-line errors that name the argument (issue 14 item 7): devices, decompression bombs, step bound,
guidance given as text, non-integer drag cells, inpainting without a mask, --crop-to-mask without a mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.drag import sde_drag
from sdedit_engine.core.schedules import MAX_STEPS, check_steps
from sdedit_engine.core.sde_edits import sde_inpaint
from tests.cli_helpers import one_error_line, run
from tests.fixtures.tiny_diffusers import tiny_sd_path


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(d / "g.png")
    return d / "g.png"


def _fails(args, capsys, rc=1):
    code, _, err = run([*args, "-q"], capsys)
    assert code == rc, err
    return one_error_line(err)


@pytest.mark.parametrize("device", ["nonsense", "cuda:x", "cuda", "cuda:7", "mps"])
def test_unusable_device_names_the_argument(device, guide, tmp_path, capsys):
    torch_device_ok = device in ("cuda", "cuda:7", "mps")
    if device == "cuda" and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"{device} exists here")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8+ CUDA devices")
    # the model path does not exist: the device is checked before any model is loaded
    line = _fails(["edit", guide, "--model", tmp_path / "no-model", "--device", device, "-o", tmp_path / "o.png"],
                  capsys)
    assert "--device" in line and device.split(":")[0] in line and "internal error" not in line
    assert ("not available" in line or "device(s)" in line) if torch_device_ok else "is not a device" in line


def test_decompression_bomb_is_a_one_line_image_error(guide, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 > 2x the limit: Pillow's bomb error
    line = _fails(["edit", guide, "--model", tmp_path / "no-model", "-o", tmp_path / "o.png"], capsys)
    assert str(guide) in line and "decompression bomb" in line and "internal error" not in line
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # the guide loads (warning only), the mask does not
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(mask)
    line = _fails(["edit", guide, "--mask", mask, "--model", tmp_path / "no-model", "-o", tmp_path / "o.png"], capsys)
    assert str(mask) in line and "decompression bomb" in line


@pytest.mark.parametrize("command", ["edit", "drag", "inpaint", "diffedit"])
def test_steps_have_an_upper_bound(command, guide, tmp_path, capsys):
    extra = {"edit": [], "drag": ["--points", "[[1,1],[9,9]]"], "inpaint": ["--mask", guide],
             "diffedit": ["--source-prompt", "a", "--target-prompt", "b"]}[command]
    line = _fails([command, guide, *extra, "--model", tmp_path / "m", "--steps", str(10**12), "-o", tmp_path / "o.png"],
                  capsys, rc=2)
    assert "--steps" in line and f"1..{MAX_STEPS}" in line
    with pytest.raises(ValueError, match=f"steps must be in 1..{MAX_STEPS}"):
        check_steps(MAX_STEPS + 1)
    assert check_steps(MAX_STEPS) == MAX_STEPS


@pytest.mark.parametrize("flag", ["--guidance-scale", "--cfg", "--guidance"])
def test_guidance_flag_and_its_aliases_share_one_check(flag, guide, tmp_path, capsys):
    for command in ("edit", "drag"):
        extra = ["--points", "[[1,1],[9,9]]"] if command == "drag" else []
        line = _fails([command, guide, *extra, "--model", tmp_path / "m", flag, "nan", "-o", tmp_path / "o.png"],
                      capsys, rc=2)
        assert "--guidance-scale must be in [0, inf]" in line


def test_crop_to_mask_without_a_mask_is_refused(guide, tmp_path, capsys):
    line = _fails(["edit", guide, "--model", tmp_path / "m", "--crop-to-mask", "16", "-o", tmp_path / "o.png"], capsys)
    assert "--crop-to-mask needs --mask" in line
    line = _fails(["composite", guide, guide, "--at", "0,0", "--whole-image", "--crop-to-mask", "8", "--model",
                   tmp_path / "m", "-o", tmp_path / "o.png"], capsys)
    assert "--crop-to-mask" in line and "--whole-image" in line


def test_python_api_guidance_as_text_is_a_value_error():
    from sdedit_engine.pipelines.drag_pipeline import inpaint
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    pipe = SDEditPipeline.from_pretrained(tiny_sd_path())
    img = torch.rand(1, 3, 32, 32)
    for bad in ("7", float("nan"), -1.0, True):  # None = the model family's default (7.5 here)
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            pipe(img, t0=0.5, steps=2, guidance_scale=bad, progress=False)
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            inpaint(pipe, img, torch.ones(1, 1, 32, 32), guidance_scale=bad, steps=2, progress=False)


def test_engine_refuses_non_integer_drag_cells_and_a_missing_inpaint_mask():
    prior = GaussianMixturePrior.random(2, (4, 8, 8), seed=0)
    x = torch.zeros(1, 4, 8, 8)
    for pairs in ([((1.5, 2), (3, 4))], [((1, 2), (3, "4"))], [((1, 2),)], [((1, 2, 3), (3, 4))]):
        with pytest.raises(ValueError, match="pair 0 must be .* integer latent cells"):
            sde_drag(prior, x, pairs, steps=2)
    assert prior.calls == 0  # refused before any model call
    with pytest.raises(ValueError, match="mask is required"):
        sde_inpaint(prior, x, None, steps=2)
