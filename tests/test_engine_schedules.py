"""t0 as an exact noise level, σ grids, and the strength/denoise conversions (numbers from sdedit.md §1.3, §3)."""

import math

import pytest
import torch

from sdedit_engine import DiscreteSchedule, DiscreteTimeDenoiser
from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.conversions import (
    comfy_denoise_sigmas,
    comfy_denoise_to_t0,
    strength_to_t0,
    t0_to_comfy_denoise,
    t0_to_strength,
)

SD15 = DiscreteSchedule.scaled_linear()
DDPM = DiscreteSchedule.linear()


def test_sd15_table_ends():
    assert SD15.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert SD15.sigma_max == pytest.approx(14.615, abs=1e-3)


@pytest.mark.parametrize("t0, sigma0", [(0.3, 0.830), (0.4, 1.161), (0.5, 1.613), (0.6, 2.276)])
def test_t0_to_sigma_sd15_matches_paper_definition(t0, sigma0):
    # σ(t0) is the σ of discrete timestep round(t0·T) − 1
    assert SD15.t0_to_timestep(t0) == round(t0 * 1000) - 1
    assert SD15.t0_to_sigma(t0) == pytest.approx(sigma0, abs=1e-3)
    assert SD15.t0_to_sigma(t0) == float(SD15.sigmas[round(t0 * 1000) - 1])


@pytest.mark.parametrize("t0, sqrt_abar", [(0.3, 0.630), (0.4, 0.442), (0.5, 0.280), (0.6, 0.161)])
def test_t0_pixel_ddpm_signal_level(t0, sqrt_abar):
    sigma = DDPM.t0_to_sigma(t0)
    assert 1 / math.sqrt(1 + sigma**2) == pytest.approx(sqrt_abar, abs=1e-3)


def test_t0_one_is_the_top_of_the_table_and_tiny_t0_clamps_to_first_step():
    assert SD15.t0_to_sigma(1.0) == SD15.sigma_max
    assert SD15.t0_to_sigma(1e-5) == SD15.sigma_min


def test_uniform_grid_with_tau_steps_visits_every_discrete_timestep():
    grid = SD15.sigma_grid(0.5, 500, "uniform")
    assert grid.shape == (501,)
    assert grid[-1] == 0
    assert torch.equal(grid[:-1], SD15.sigmas[:500].flip(0))


@pytest.mark.parametrize("spacing", ["uniform", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_grids_descend_from_sigma_t0_to_zero(spacing, steps):
    grid = SD15.sigma_grid(0.6, steps, spacing)
    assert grid.shape == (steps + 1,)
    assert float(grid[0]) == SD15.t0_to_sigma(0.6)
    assert float(grid[-1]) == 0.0
    assert bool((grid[1:] < grid[:-1]).all())
    if steps > 1:
        assert float(grid[-2]) == pytest.approx(SD15.sigma_min)


def test_karras_spends_more_steps_at_low_noise_than_uniform():
    uni, kar = SD15.sigma_grid(0.8, 20, "uniform"), SD15.sigma_grid(0.8, 20, "karras")
    assert int((kar[:-1] < 0.5).sum()) > int((uni[:-1] < 0.5).sum())


def test_sigma_t_round_trip():
    t = torch.tensor([0.0, 1.0, 10.5, 499.0, 998.25, 999.0], dtype=torch.float64)
    assert torch.allclose(SD15.sigma_to_t(SD15.t_to_sigma(t)), t, atol=1e-9)
    assert SD15.sigma_to_t0(SD15.t0_to_sigma(0.37)) == pytest.approx(0.37, abs=1e-9)


def test_from_sigmas_reproduces_the_schedule():
    again = DiscreteSchedule.from_sigmas(SD15.sigmas)
    assert torch.allclose(again.alphas_cumprod, SD15.alphas_cumprod, rtol=1e-12)


@pytest.mark.parametrize(
    "scheduler, sigma0",
    [("normal", 1.548), ("simple", 1.613), ("sgm_uniform", 1.616), ("karras", 1.182)],
)
def test_comfy_denoise_half_start_sigma(scheduler, sigma0):
    # ComfyUI KSampler(steps=20, denoise=0.5) on SD1.5 (sdedit.md §3 table)
    sig = comfy_denoise_sigmas(SD15, 0.5, 20, scheduler)
    assert sig.shape == (21,)
    assert float(sig[0]) == pytest.approx(sigma0, abs=1e-3)


def test_comfy_denoise_is_a_different_noise_level_than_t0():
    assert comfy_denoise_to_t0(SD15, 0.5, 20, "simple") == pytest.approx(0.5, abs=1e-6)
    assert comfy_denoise_to_t0(SD15, 0.5, 20, "karras") == pytest.approx(0.4055, abs=1e-3)
    # the inverse lands on a start σ within one schedule step of σ(t0)
    for scheduler in ("normal", "karras"):
        d = t0_to_comfy_denoise(SD15, 0.5, 20, scheduler)
        start = float(comfy_denoise_sigmas(SD15, d, 20, scheduler)[0])
        assert abs(math.log(start / SD15.t0_to_sigma(0.5))) < 0.02
        assert d > 0.5  # both need a larger "denoise" for the same noise level


def test_diffusers_strength_conversions():
    # DDIM-style "leading" timesteps, N = 50, steps_offset = 1: 981, 961, …, 1
    timesteps = [981 - 20 * i for i in range(50)]
    assert strength_to_t0(0.5, timesteps) == pytest.approx(0.482)  # starts at t = 481 (sdedit.md §3)
    assert strength_to_t0(0.0, timesteps) == 0.0
    s = t0_to_strength(0.5, timesteps)
    assert int(50 * s) == 26 and timesteps[50 - int(50 * s)] == 501  # nearest grid point to t = 499
    for t0 in (0.13, 0.37, 0.71):
        s = t0_to_strength(t0, timesteps)
        first = timesteps[50 - int(50 * s)]
        assert abs(first - (round(t0 * 1000) - 1)) <= 10


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0001, float("nan"), float("inf"), "half", None])
def test_bad_t0_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="t0"):
        SD15.t0_to_sigma(bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_steps_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="steps"):
        SD15.sigma_grid(0.5, bad)


def test_bad_spacing_and_tables():
    with pytest.raises(ValueError, match="spacing"):
        SD15.sigma_grid(0.5, 10, "cosine")
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiscreteSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiscreteSchedule(torch.tensor([1.0, 0.5]))


# -- ε / v network wrappers --------------------------------------------------------------------------
def _vp_network(prior: GaussianMixturePrior, schedule: DiscreteSchedule, prediction: str):
    """An exact VP network (ε or v) built from the analytic denoiser, called like a UNet(x_in, t)."""

    def net(x_in, t):
        sigma = schedule.t_to_sigma(t).to(x_in.dtype).reshape(-1, 1, 1, 1)
        x = x_in * (1 + sigma**2).sqrt()
        x0 = prior(x, sigma.flatten())
        eps = (x - x0) / sigma
        if prediction == "epsilon":
            return eps
        alpha, beta = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
        return alpha * eps - beta * x0

    return net


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("schedule", [SD15, DDPM], ids=["scaled_linear", "linear"])
def test_eps_and_v_wrappers_give_the_exact_denoiser(prediction, schedule):
    prior = GaussianMixturePrior.random(3, (4, 8, 8), seed=1, schedule=schedule)
    den = DiscreteTimeDenoiser(_vp_network(prior, schedule, prediction), schedule, prediction)
    g = torch.Generator().manual_seed(0)
    for t in (0.0, 3.5, 250.0, 999.0):
        sigma = schedule.t_to_sigma(torch.tensor([t, t], dtype=torch.float64))
        x = prior.sample(2, g)[0] + sigma.reshape(-1, 1, 1, 1) * torch.randn((2, 4, 8, 8), generator=g, dtype=torch.float64)
        assert torch.allclose(den(x, sigma), prior(x, sigma), rtol=1e-9, atol=1e-9)


def test_wrapper_feeds_model_dtype_and_returns_input_dtype():
    seen = {}

    def net(x_in, t):
        seen["dtype"], seen["t"] = x_in.dtype, t
        return torch.zeros_like(x_in)

    den = DiscreteTimeDenoiser(net, SD15, "epsilon", model_dtype=torch.bfloat16)
    x = torch.randn(2, 4, 8, 8)
    out = den(x, torch.tensor(SD15.t0_to_sigma(0.5)))
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.float32
    assert torch.allclose(seen["t"], torch.tensor([499.0, 499.0]))
    assert torch.equal(out, x)  # ε = 0 → D = x


def test_wrapper_rejects_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        DiscreteTimeDenoiser(lambda x, t: x, SD15, "sample")
