"""Every model-backed ``sdedit`` subcommand on the tiny SD3 and FLUX.1 pipelines, ``sdedit info``, and the
one-line errors of bad flow-model input."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.io.imaging import save_image
from tests.cli_helpers import one_error_line, run
from tests.fixtures.tiny_diffusers import tiny_sd_path
from tests.fixtures.tiny_flow import tiny_flow_single_file_path, tiny_flux_path, tiny_sd3_path

MODELS = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}
FAST = ["--steps", "2", "-q"]


@pytest.fixture(params=["sd3", "flux"])
def family(request):
    return request.param


@pytest.fixture
def files(tmp_path):
    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    save_image(img, tmp_path / "guide.png")
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:40, 8:40] = 1
    save_image(m, tmp_path / "mask.png")
    save_image(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), tmp_path / "patch.png")
    return tmp_path


def test_edit_keeps_unmasked_pixels_and_t0_scale(family, files, capsys):
    model = MODELS[family]()
    for scale in ("model", "sd15_snr"):
        out = files / f"out_{scale}.png"
        rc, _, err = run(["edit", files / "guide.png", "--mask", files / "mask.png", "--model", model, "--t0", "0.5",
                          "--t0-scale", scale, "--prompt", "a red house", "-o", out, *FAST], capsys)
        assert rc == 0, err
        g, o = np.asarray(Image.open(files / "guide.png")), np.asarray(Image.open(out))
        m = np.asarray(Image.open(files / "mask.png").convert("L"))
        assert np.array_equal(o[m == 0], g[m == 0])
    a, b = np.asarray(Image.open(files / "out_model.png")), np.asarray(Image.open(files / "out_sd15_snr.png"))
    assert not np.array_equal(a, b)  # a different start noise level


def test_composite_sweep_and_batch(family, files, capsys):
    model = MODELS[family]()
    rc, _, err = run(["composite", files / "guide.png", files / "patch.png", "--at", "8,8", "--model", model,
                      "-o", files / "comp.png", *FAST], capsys)
    assert rc == 0, err and (files / "comp.png").is_file()
    rc, _, err = run(["sweep", files / "guide.png", "--t0", "0.3,0.6", "--model", model, "-o", files / "sweep", *FAST],
                     capsys)
    assert rc == 0, err
    assert (files / "sweep" / "grid.png").is_file() and (files / "sweep" / "sweep.csv").is_file()
    src = files / "in"
    src.mkdir()
    shutil.copy(files / "guide.png", src / "a.png")
    rc, _, err = run(["batch", src, "--model", model, "-o", files / "batch", *FAST], capsys)
    assert rc == 0, err and (files / "batch" / "a.png").is_file()


def test_drag_dragbench_inpaint_diffedit(family, files, capsys):
    model = MODELS[family]()
    rc, _, err = run(["drag", files / "guide.png", "--points", "[[16, 24], [40, 24]]", "--mask", files / "mask.png",
                      "--model", model, "--radius", "1", "-o", files / "drag.png", *FAST], capsys)
    assert rc == 0, err
    g, o = np.asarray(Image.open(files / "guide.png")), np.asarray(Image.open(files / "drag.png"))
    m = np.asarray(Image.open(files / "mask.png").convert("L"))
    assert np.array_equal(o[m == 0], g[m == 0])
    bench = files / "bench" / "animals" / "1"
    bench.mkdir(parents=True)
    shutil.copy(files / "guide.png", bench / "origin_image.png")
    (bench / "prompt.json").write_text(json.dumps({"source": [[12, 32]], "target": [[28, 32]], "prompt": "a box"}))
    rc, _, err = run(["dragbench", files / "bench", "--model", model, "--radius", "1", "-o", files / "db", *FAST], capsys)
    assert rc == 0, err and (files / "db" / "animals_1.png").is_file()
    for mode in ("sde", "ode"):
        rc, _, err = run(["inpaint", files / "guide.png", "--mask", files / "mask.png", "--mode", mode, "--model", model,
                          "-o", files / f"inpaint_{mode}.png", *FAST], capsys)
        assert rc == 0, err
        o = np.asarray(Image.open(files / f"inpaint_{mode}.png"))
        assert np.array_equal(o[m == 0], g[m == 0])
    rc, _, err = run(["diffedit", files / "guide.png", "--source-prompt", "a cat", "--target-prompt", "a dog",
                      "--mask", files / "mask.png", "--model", model, "-o", files / "de.png", *FAST], capsys)
    assert rc == 0, err


def test_info_prints_family_shift_and_t0_starts(capsys):
    rc, out, err = run(["info", "--model", tiny_flux_path(), "--width", "512", "--height", "512"], capsys)
    assert rc == 0, err
    assert "family:     flux" in out and "mu = 0.6300 at 512x512" in out and "sd15_snr" in out
    rc, out, err = run(["info", "--model", tiny_sd3_path()], capsys)
    assert rc == 0 and "SD3-style shift 3" in out
    row = next(ln for ln in out.splitlines() if ln.split()[:2] == ["0.5", "model"])
    assert row.split()[3] == "0.7500"  # SD3 shift 3: t0 0.5 starts at s = 0.75
    rc, out, err = run(["info", "--model", tiny_sd_path()], capsys)
    assert rc == 0 and "family:     sd " in out and "epsilon" in out
    rc, out, err = run(["info", "--model", tiny_flow_single_file_path("flux"), "--config", tiny_flux_path()], capsys)
    assert rc == 0 and "family:     flux" in out


def test_single_file_flux_transformer_with_config(files, capsys):
    rc, _, err = run(["edit", files / "guide.png", "--model", tiny_flow_single_file_path("flux"), "--config",
                      tiny_flux_path(), "-o", files / "o.png", *FAST], capsys)
    assert rc == 0, err


def test_bad_flow_inputs_are_one_line_errors(files, tmp_path, capsys):
    guide, out = files / "guide.png", files / "o.png"
    rc, _, err = run(["edit", guide, "--model", tiny_flux_path(), "--negative-prompt", "blurry", "-o", out, *FAST], capsys)
    assert rc == 1 and "negative prompt" in one_error_line(err)
    rc, _, err = run(["edit", guide, "--model", tiny_flow_single_file_path("flux"), "-o", out, *FAST], capsys)
    assert rc == 1 and "--config" in one_error_line(err)
    ckpt = tmp_path / "flux1-dev.ckpt"
    torch.save({"x": torch.zeros(1)}, str(ckpt))
    rc, _, err = run(["edit", guide, "--model", ckpt, "-o", out, *FAST], capsys)
    assert rc == 1 and "pickle" in one_error_line(err)
    no_te = tmp_path / "no_te"
    shutil.copytree(tiny_sd3_path(), no_te)
    spec = json.loads((no_te / "model_index.json").read_text())
    spec["text_encoder_2"], spec["tokenizer_2"] = [None, None], [None, None]
    (no_te / "model_index.json").write_text(json.dumps(spec))
    rc, _, err = run(["edit", guide, "--model", no_te, "-o", out, *FAST], capsys)
    assert rc == 1 and "text_encoder_2" in one_error_line(err)
    wrong = tmp_path / "wrong_vae"
    shutil.copytree(tiny_sd3_path(), wrong)
    shutil.rmtree(wrong / "vae")
    shutil.copytree(tiny_sd_path() / "vae", wrong / "vae")  # a 4-channel VAE under a 16-channel transformer
    rc, _, err = run(["edit", guide, "--model", wrong, "-o", out, *FAST], capsys)
    assert rc == 1 and "latent channels" in one_error_line(err)
    rc, _, err = run(["info", "--model", tmp_path / "nope"], capsys)
    assert rc == 1 and "not found" in one_error_line(err)
