"""SDEdit's contract: masks, determinism, repeats, the per-step hook, the official loop, and errors."""

import math

import pytest
import torch

from sdedit_engine import SAMPLER_NAMES, DiscreteSchedule, MaskedDenoiser, SamplingCancelled, sdedit
from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.samplers import sample_ddpm

SHAPE = (4, 8, 8)


@pytest.fixture()
def prior():
    return GaussianMixturePrior.random(3, SHAPE, spread=1.0, std=0.5, seed=0)


@pytest.fixture()
def guide(prior):
    g = torch.Generator().manual_seed(1)
    return (0.5 * (prior.means[0] + prior.means[2]) + 0.2 * torch.randn(SHAPE, generator=g, dtype=torch.float64))[None]


def _half_mask(dtype=torch.float64):
    m = torch.zeros(1, 1, 8, 8, dtype=dtype)
    m[..., :, 4:] = 1.0
    return m


# -- masks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("known_noise", ["fresh", "fixed"])
def test_kept_area_is_bit_identical_and_edited_area_changes(prior, guide, sampler, known_noise):
    mask = _half_mask()
    out = sdedit(prior, guide.repeat(2, 1, 1, 1), t0=0.6, steps=8, sampler=sampler, mask=mask, known_noise=known_noise, seed=3)
    kept = (mask == 0).expand_as(out)
    assert torch.equal(out[kept], guide.repeat(2, 1, 1, 1)[kept])
    assert float((out - guide)[~kept].abs().mean()) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kept_area_exact_in_low_precision(prior, guide, dtype):
    g = guide.to(dtype)
    out = sdedit(prior, g, t0=0.5, steps=6, mask=_half_mask(dtype), seed=0)
    assert out.dtype == dtype
    kept = (_half_mask() == 0).expand_as(out)
    assert torch.equal(out[kept], g[kept])


def test_soft_mask_values_are_honoured(prior, guide):
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :, 3:6] = 0.5
    mask[..., :, 6:] = 1.0
    seen = []
    out = sdedit(prior, guide.repeat(64, 1, 1, 1), t0=0.6, steps=10, mask=mask, seed=0, callback=lambda i: seen.append(i.denoised))
    change = (out - guide).abs().mean(dim=(0, 1))  # (8, 8)
    zero, half, full = float(change[:, :3].max()), float(change[:, 3:6].mean()), float(change[:, 6:].mean())
    assert zero == 0.0 and 0.0 < half < full
    # the last step returns the blended estimate m·D + (1 − m)·guide, so m = 0.5 lies halfway
    assert torch.equal(out, seen[-1])


def test_kept_area_is_renoised_to_the_current_sigma(prior, guide):
    """The model sees the guide at the step's own noise level in the kept area (fresh noise each call)."""
    calls = []

    def spy(x, sigma):
        calls.append((x.clone(), float(sigma[0])))
        return prior(x, sigma)

    mask = _half_mask()
    sdedit(spy, guide.repeat(512, 1, 1, 1), sigmas=prior.schedule.sigma_grid(0.5, 5), mask=mask, seed=0)
    kept = (mask == 0).expand(512, *SHAPE)
    for x, sigma in calls:
        resid = (x - guide)[kept]
        assert float(resid.std()) == pytest.approx(sigma, rel=0.02)
    # fresh noise: consecutive calls see independent noise in the kept area
    a, b = ((x - guide)[kept] / s for x, s in calls[:2])
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.05


def test_fixed_known_noise_follows_one_straight_path(prior, guide):
    calls = []
    spy = lambda x, sigma: (calls.append((x.clone(), float(sigma[0]))), prior(x, sigma))[1]  # noqa: E731
    mask = _half_mask()
    sdedit(spy, guide.repeat(4, 1, 1, 1), sigmas=prior.schedule.sigma_grid(0.5, 5), mask=mask, seed=0, known_noise="fixed")
    kept = (mask == 0).expand(4, *SHAPE)
    (x0, s0), (x1, s1) = calls[:2]
    assert torch.allclose((x0 - guide)[kept] / s0, (x1 - guide)[kept] / s1, atol=1e-12)


def test_empty_mask_returns_the_guide_without_calling_the_model(prior, guide):
    out = sdedit(prior, guide, mask=torch.zeros(1, 1, 8, 8, dtype=torch.float64), seed=0)
    assert prior.calls == 0
    assert torch.equal(out, guide)
    out = sdedit(prior, guide, mask=torch.zeros(8, 8, dtype=torch.bool), seed=0)
    assert prior.calls == 0 and torch.equal(out, guide)


def test_masked_denoiser_is_usable_on_its_own(prior, guide):
    mask = _half_mask()
    den = MaskedDenoiser(prior, guide, mask, torch.zeros_like(guide))
    d = den(guide + 2.0, torch.tensor([1.0], dtype=torch.float64))
    kept = (mask == 0).expand_as(d)
    assert torch.equal(d[kept], guide[kept])


# -- determinism ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_same_seed_same_result_and_batch_of_two_equals_two_singles(prior, guide, sampler):
    other = guide.flip(-1)
    batch = torch.cat([guide, other])
    a = sdedit(prior, batch, t0=0.5, steps=6, sampler=sampler, seed=[7, 8], repeats=2, mask=_half_mask())
    b = sdedit(prior, batch, t0=0.5, steps=6, sampler=sampler, seed=[7, 8], repeats=2, mask=_half_mask())
    assert torch.equal(a, b)
    s1 = sdedit(prior, guide, t0=0.5, steps=6, sampler=sampler, seed=7, repeats=2, mask=_half_mask())
    s2 = sdedit(prior, other, t0=0.5, steps=6, sampler=sampler, seed=8, repeats=2, mask=_half_mask())
    assert torch.equal(a[:1], s1) and torch.equal(a[1:], s2)
    # an int seed s means items s, s+1
    assert torch.equal(sdedit(prior, batch, t0=0.5, steps=6, sampler=sampler, seed=7, repeats=2, mask=_half_mask()), a)
    c = sdedit(prior, guide, t0=0.5, steps=6, sampler=sampler, seed=9, repeats=2, mask=_half_mask())
    assert not torch.equal(c, s1)


def test_ode_twins_ignore_the_step_noise_but_sde_samplers_do_not(prior, guide):
    init = torch.randn(guide.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name, deterministic in (("ddim", True), ("dpmpp_2m", True), ("ddpm", False), ("dpmpp_2m_sde", False)):
        a = sdedit(prior, guide, t0=0.5, steps=10, sampler=name, init_noise=init, seed=1)
        b = sdedit(prior, guide, t0=0.5, steps=10, sampler=name, init_noise=init, seed=2)
        assert torch.equal(a, b) == deterministic, name


# -- official loop ------------------------------------------------------------------------------------------
def test_ddpm_on_the_full_grid_is_the_official_sdedit_loop():
    """Our σ-space ddpm on the every-timestep grid = the official VP code (runners/image_editing.py)."""
    schedule = DiscreteSchedule.linear()
    prior = GaussianMixturePrior.random(2, SHAPE, seed=5, schedule=schedule)
    abar = schedule.alphas_cumprod
    tau = 120  # t0 = 0.12 keeps the test quick; the loop is the same for any τ
    g = torch.Generator().manual_seed(3)
    x0 = prior.sample(2, g)[0]
    e = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    zs = [torch.randn(x0.shape, generator=g, dtype=torch.float64) for _ in range(tau)]

    def eps_model(x_vp, i):  # exact ε-network at discrete timestep i
        sigma = float(schedule.sigmas[i])
        x = x_vp / math.sqrt(abar[i])
        return (x - prior(x, torch.full((x.shape[0],), sigma, dtype=torch.float64))) / sigma

    x = abar[tau - 1].sqrt() * x0 + (1 - abar[tau - 1]).sqrt() * e
    for n, i in enumerate(range(tau - 1, -1, -1)):
        a_prev = abar[i - 1] if i > 0 else torch.tensor(1.0, dtype=torch.float64)
        alpha = abar[i] / a_prev
        beta = 1 - alpha
        mu = (x - beta / (1 - abar[i]).sqrt() * eps_model(x, i)) / alpha.sqrt()
        var = (beta * (1 - a_prev) / (1 - abar[i])).clamp_min(1e-20)
        x = mu + (var.sqrt() * zs[n] if i > 0 else 0)
    official = x

    replay = iter(zs)
    ours = sample_ddpm(prior, x0 + schedule.sigmas[tau - 1] * e, schedule.sigma_grid(0.12, tau, "uniform"), noise_sampler=lambda s, sn: next(replay))
    assert torch.allclose(ours, official, rtol=0, atol=1e-9), float((ours - official).abs().max())


# -- hook, repeats, model calls -----------------------------------------------------------------------------
def test_callback_sees_every_step_of_every_repeat(prior, guide):
    infos = []
    sdedit(prior, guide, t0=0.4, steps=7, repeats=3, seed=0, callback=infos.append)
    assert [i.step for i in infos] == list(range(21))
    assert {i.total for i in infos} == {21}
    assert [i.repeat for i in infos] == [0] * 7 + [1] * 7 + [2] * 7
    assert infos[0].sigma == pytest.approx(prior.schedule.t0_to_sigma(0.4))
    assert infos[6].sigma_next == 0.0 and infos[7].sigma == infos[0].sigma
    assert prior.calls == 21  # one model call per step for these samplers


def test_callback_can_cancel(prior, guide):
    with pytest.raises(SamplingCancelled):
        sdedit(prior, guide, t0=0.4, steps=10, seed=0, callback=lambda info: info.step == 3)
    assert prior.calls == 4


def test_repeats_renoise_with_fresh_noise(prior, guide):
    one = sdedit(prior, guide, t0=0.4, steps=6, repeats=1, seed=0)
    three = sdedit(prior, guide, t0=0.4, steps=6, repeats=3, seed=0)
    assert not torch.equal(one, three)


def test_extra_args_reach_the_denoiser(prior, guide):
    seen = []

    def den(x, sigma, context=None):
        seen.append(context)
        return prior(x, sigma)

    sdedit(den, guide, sigmas=torch.tensor([1.0, 0.5, 0.0]), extra_args={"context": "cat"}, seed=0)
    assert seen == ["cat", "cat"]


# -- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t0": 0.0}, "t0"),
        ({"t0": 1.2}, "t0"),
        ({"t0": float("nan")}, "t0"),
        ({"steps": 0}, "steps"),
        ({"steps": 3.5}, "steps"),
        ({"repeats": 0}, "repeats"),
        ({"sampler": "euler_a"}, "sampler must be one of"),
        ({"spacing": "cosine"}, "spacing"),
        ({"known_noise": "frozen"}, "known_noise"),
        ({"seed": [1, 2]}, "seed"),
        ({"seed": "42"}, "seed"),
        ({"mask": torch.ones(1, 1, 16, 16, dtype=torch.float64)}, "mask shape"),
        ({"mask": torch.ones(3, 1, 8, 8, dtype=torch.float64)}, "mask shape"),
        ({"mask": torch.full((1, 1, 8, 8), float("nan"), dtype=torch.float64)}, "mask contains NaN"),
        ({"mask": torch.full((1, 1, 8, 8), 2.0, dtype=torch.float64)}, r"mask values must lie in \[0, 1\]"),
        ({"mask": torch.ones(1, 1, 8, 8, dtype=torch.float32)}, "mask dtype"),
        ({"mask": torch.ones(1, 1, 8, 8, dtype=torch.int64)}, "mask must be a bool or floating"),
        ({"mask": [[1.0]]}, "mask must be a torch.Tensor"),
        ({"sigmas": torch.tensor([0.5, 1.0, 0.0])}, "sigmas must be non-increasing"),
        ({"sigmas": torch.tensor([1.0])}, "sigmas must hold at least 2"),
        ({"init_noise": torch.zeros(1, 4, 4, 4, dtype=torch.float64)}, "init_noise has shape"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(prior, guide, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sdedit(prior, guide, **kwargs)
    assert prior.calls == 0  # rejected before any model call


@pytest.mark.parametrize(
    "bad_guide, match",
    [
        (torch.full((1, *SHAPE), float("inf"), dtype=torch.float64), "guide contains NaN or inf"),
        (torch.full((1, *SHAPE), float("nan"), dtype=torch.float64), "guide contains NaN or inf"),
        (torch.zeros((1, *SHAPE), dtype=torch.uint8), "guide must be a floating-point tensor"),
        (torch.zeros(8), "guide must have at least 2 dimensions"),
        ([[0.0]], "guide must be a torch.Tensor"),
    ],
)
def test_bad_guides_raise_a_clear_value_error(prior, bad_guide, match):
    with pytest.raises(ValueError, match=match):
        sdedit(prior, bad_guide)


def test_missing_schedule_is_explained():
    with pytest.raises(ValueError, match="no schedule"):
        sdedit(lambda x, s: x, torch.zeros(1, 4, 8, 8))
