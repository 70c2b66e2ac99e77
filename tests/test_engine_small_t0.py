"""t0 below one timestep (issue 14 item 1): a σ grid never holds a repeated value, and every sampler
runs at the paper's t0 = 1/T and at t0 = 1 (numbers, not just "no crash")."""

import pytest
import torch

from sdedit_engine import DiscreteSchedule, sdedit
from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.cycle import cycle_sigmas
from sdedit_engine.core.samplers import SAMPLER_NAMES, get_sampler
from sdedit_engine.core.schedules import SPACINGS
from sdedit_engine.core.validation import check_sigmas

SCHEDULES = {"sd15": DiscreteSchedule.scaled_linear(), "ddpm": DiscreteSchedule.linear()}
SHAPE = (4, 8, 8)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_no_grid_holds_a_repeated_sigma(name, spacing):
    schedule = SCHEDULES[name]
    for t0 in (1e-6, 0.001, 0.0014, 0.0015, 0.002, 0.0025, 0.003, 0.01, 0.5, 1.0):
        for steps in (1, 2, 3, 4, 7, 20, 50, 1000):
            grid = schedule.sigma_grid(t0, steps, spacing)
            assert bool((grid[1:] < grid[:-1]).all()), (t0, steps, grid)
            assert float(grid[0]) == schedule.t0_to_sigma(t0) and float(grid[-1]) == 0.0
            # steps below one timestep: the grid interpolates σ, so it keeps every asked step unless
            # σ(t0) is the lowest level itself (then it is the single denoise [σ_min, 0])
            expected = 1 if schedule.t0_to_sigma(t0) == schedule.sigma_min else steps
            assert grid.numel() == expected + 1, (t0, steps)


@pytest.mark.parametrize("t0", [0.001, 0.0004])
def test_the_papers_smallest_t0_is_one_denoise_at_sigma_min(t0):
    grid = SCHEDULES["sd15"].sigma_grid(t0, 20)
    assert grid.tolist() == [SCHEDULES["sd15"].sigma_min, 0.0]


def test_explicit_grids_drop_repeats_and_keep_their_order():
    assert check_sigmas([3.0, 3.0, 2.0, 2.0, 2.0, 0.5, 0.0, 0.0]).tolist() == [3.0, 2.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="2 distinct"):
        check_sigmas([1.0, 1.0])
    with pytest.raises(ValueError, match="non-increasing"):
        check_sigmas([1.0, 2.0, 0.0])


@pytest.fixture(scope="module")
def prior():
    return GaussianMixturePrior.random(2, SHAPE, spread=1.0, std=0.5, seed=1, schedule=SCHEDULES["sd15"])


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 20])
def test_every_sampler_at_t0_one_over_T_is_the_exact_one_step_denoise(prior, sampler, steps):
    guide = prior.means[0].reshape(1, *SHAPE).expand(3, *SHAPE).clone() + 0.2
    prior.calls = 0
    out = sdedit(prior, guide, t0=0.001, steps=steps, sampler=sampler, seed=4)
    assert prior.calls == 1
    # one step from σ_min to 0 returns D(guide + σ_min·z) — whatever the sampler
    sigma = SCHEDULES["sd15"].sigma_min
    init = sdedit(lambda x, s: x, guide, t0=0.001, steps=steps, sampler=sampler, seed=4, sigmas=[sigma, 0.0])
    assert torch.allclose(out, prior(init, torch.full((3,), sigma, dtype=torch.float64)), atol=1e-12)
    assert float((out - guide).abs().max()) < 0.1  # σ_min = 0.029: the guide barely moves


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("t0", [0.002, 1.0])
def test_every_sampler_runs_at_both_ends_of_the_t0_range(prior, sampler, t0):
    guide = torch.zeros(64, *SHAPE, dtype=torch.float64)
    prior.calls = 0
    out = sdedit(prior, guide, t0=t0, steps=6, sampler=sampler, seed=5)
    assert prior.calls == 6 and bool(torch.isfinite(out).all())
    if t0 == 1.0:  # from σ_max = 14.6 the outputs land near a component (its std is 0.5, the means ≈ 1.4 apart)
        _, rms = prior.nearest_component(out)
        if sampler != "euler_maruyama":  # its step noise is consistent on fine grids only
            assert float(rms.mean()) < 0.9
    else:  # 0.002 = two timesteps: six interpolated steps between σ_1 and σ_0, the guide stays put
        assert float(out.std()) < 1.5 * SCHEDULES["sd15"].t0_to_sigma(t0)  # exact law: ≈ √2·σ(t0)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_samplers_called_directly_skip_repeated_sigmas(sampler):
    """No division by zero in the multistep solvers: a repeated σ is a zero-length step, dropped."""
    prior = GaussianMixturePrior.random(2, SHAPE, seed=2, schedule=SCHEDULES["sd15"])
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = get_sampler(sampler).fn
    a = fn(prior, x, torch.tensor([2.0, 2.0, 1.0, 0.5, 0.5, 0.1, 0.1, 0.0]), noise_sampler=lambda s, t: torch.zeros_like(x))
    b = fn(prior, x, torch.tensor([2.0, 1.0, 0.5, 0.1, 0.0]), noise_sampler=lambda s, t: torch.zeros_like(x))
    assert torch.equal(a, b)


def test_cycle_sde_at_the_lowest_level_is_a_clear_error():
    with pytest.raises(ValueError, match=r"t0 = 0\.001 .*lowest noise level.*t0 >= 0\.002"):
        cycle_sigmas(SCHEDULES["sd15"], 0.001, 10)
    levels = cycle_sigmas(SCHEDULES["sd15"], 0.002, 10)
    assert levels.numel() == 11 and bool((levels[1:] < levels[:-1]).all())
