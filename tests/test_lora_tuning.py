"""LoRA fine-tuning on the input image (SDE-Drag §2.1) with PEFT adapters on the tiny diffusers UNet."""

import pytest
import torch

from sdedit_engine.core.samplers import SamplingCancelled
from sdedit_engine.pipelines.lora_tuning import check_tuning_options, lora_scale_ramp, tune_lora, tuning_losses
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from tests.fixtures.tiny_diffusers import tiny_lora_path, tiny_sd_path


@pytest.fixture(scope="module")
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(4)
    img = 0.2 + 0.2 * torch.rand(1, 3, 32, 32, generator=g)
    img[..., 8:24, 8:24] = 0.8
    return img


def probe(pipe):
    """A fixed UNet output (CFG on, so both branches go through the adapters)."""
    cond = pipe.encode_prompt("a cat", "", 1, 3.0, 32, 32).as_extra_args()
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return pipe.make_denoiser(3.0)(x, torch.tensor([2.0]), **cond)


def test_tuning_lowers_the_loss_changes_weights_and_removes_exactly(pipe, image):
    n = 20
    before_out, before_loss = probe(pipe), tuning_losses(pipe, image, "a square", steps=n, seed=0)
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    seen = []
    tuned = tune_lora(pipe, image, "a square", steps=n, rank=4, learning_rate=1e-2, seed=0,
                      callback=lambda i, total, loss: seen.append((i, total, loss)))
    try:
        assert [s[:2] for s in seen] == [(i, n) for i in range(1, n + 1)] and len(tuned.losses) == n
        assert tuned.losses[0] == pytest.approx(before_loss[0])  # the first step sees the original UNet
        # the loss on the very batches it trained on (the image, seeded t and noise) went down
        after_loss = tuning_losses(pipe, image, "a square", steps=n, seed=0)
        assert sum(after_loss) < 0.98 * sum(before_loss), (sum(before_loss) / n, sum(after_loss) / n)
        lora_b = [p for n, p in pipe.unet.named_parameters() if "lora_B" in n and tuned.adapter_name in n]
        assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero
        assert not torch.equal(probe(pipe), before_out)
        # base weights untouched, LoRA weights frozen again after training
        sd = pipe.unet.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in base.items() if k in sd)
        assert not any(p.requires_grad for n, p in pipe.unet.named_parameters() if "lora_" in n)
        tuned.set_scale(0.0)
        assert torch.allclose(probe(pipe), before_out, atol=1e-6)
        tuned.set_scale(1.0)
    finally:
        tuned.remove()
    assert torch.equal(probe(pipe), before_out)
    assert tuning_losses(pipe, image, "a square", steps=n, seed=0) == before_loss
    tuned.remove()  # idempotent


def test_tuning_is_seeded(pipe, image):
    a = tune_lora(pipe, image, "x", steps=3, rank=2, seed=5)
    la, out_a = a.losses, probe(pipe)
    a.remove()
    b = tune_lora(pipe, image, "x", steps=3, rank=2, seed=5)
    lb, out_b = b.losses, probe(pipe)
    b.remove()
    assert la == lb and torch.equal(out_a, out_b)
    c = tune_lora(pipe, image, "x", steps=3, rank=2, seed=6)
    c.remove()
    assert c.losses != la


def test_cancel_removes_the_adapter(pipe, image):
    before = probe(pipe)
    with pytest.raises(SamplingCancelled, match="step 2/10"):
        tune_lora(pipe, image, "x", steps=10, rank=2, callback=lambda i, n, loss: i == 2)
    assert not (getattr(pipe.unet, "peft_config", None) or {})
    assert torch.equal(probe(pipe), before)


def test_a_loaded_lora_stays_active_alongside_and_after():
    pipe = SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))
    plain = probe(pipe)
    pipe.load_lora_weights(tiny_lora_path())
    with_user = probe(pipe)
    assert not torch.equal(with_user, plain)
    active = list(pipe.unet.active_adapters())
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pipe.tune_lora(img, "x", steps=2, rank=2, learning_rate=1e-2) as tuned:
        assert sorted(pipe.unet.active_adapters()) == sorted(active + [tuned.adapter_name])
    assert list(pipe.unet.active_adapters()) == active
    assert torch.equal(probe(pipe), with_user)


def test_ramp_and_option_checks():
    r = lora_scale_ramp(120, 0.5)
    assert r[0] == pytest.approx(0.5, abs=1e-3) and r[-1] == pytest.approx(1.0, abs=1e-3) and len(r) == 120
    assert lora_scale_ramp(1, 0.3) == [0.3]
    assert check_tuning_options({"steps": 5})["rank"] == 16
    for bad, msg in [({"steps": 0}, "steps"), ({"rank": 1.5}, "rank"), ({"foo": 1}, "unknown"),
                     ({"scale_min": 2}, "scale_min"), ("yes", "dict")]:
        with pytest.raises(ValueError, match=msg):
            check_tuning_options(bad)


def test_bad_tuning_inputs(pipe, image):
    with pytest.raises(ValueError, match="steps"):
        tune_lora(pipe, image, steps=0)
    with pytest.raises(ValueError, match="one RGB image"):
        tune_lora(pipe, torch.cat([image, image]), steps=1)
