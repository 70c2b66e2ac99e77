"""Cycle-SDE, SDE-Drag, SDE inpainting and DiffEdit-SDE on the analytic prior."""

import json

import pytest
import torch

from sdedit_engine import DiscreteSchedule
from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.cycle import cycle_decode, cycle_encode, cycle_reconstruct, cycle_sigmas, forward_noise
from sdedit_engine.core.drag import (
    DragPair,
    copy_paste,
    drag_iterations,
    guidance_ramp,
    parse_points,
    sde_drag,
    to_latent_points,
)
from sdedit_engine.core.sde_edits import ddim_invert, diffedit, diffedit_mask, sde_inpaint

SD = DiscreteSchedule.scaled_linear()


def corr(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture()
def prior():
    return GaussianMixturePrior.random(3, (4, 16, 16), spread=1.0, std=0.5, seed=0, schedule=SD)


# -- Cycle-SDE ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_cycle_sde_reconstructs_the_input_exactly(prior, dtype, tol):
    x0 = prior.sample(3, torch.Generator().manual_seed(1))[0].to(dtype)
    levels = cycle_sigmas(SD, 0.6, 120)
    rec = cycle_reconstruct(prior, x0, levels, seed=5)
    assert float((rec - x0).norm() / x0.norm()) <= tol
    assert prior.calls == 2 * 120  # record + replay


def test_the_ode_twin_does_not_reconstruct_exactly(prior):
    x0 = prior.sample(2, torch.Generator().manual_seed(1))[0]
    levels = cycle_sigmas(SD, 0.6, 40)
    traj = ddim_invert(prior, x0, levels)
    rec = traj.start
    for s, s_next in zip(levels.tolist(), levels.tolist()[1:]):  # plain DDIM back down
        d = prior(rec, torch.full((2,), s, dtype=torch.float64))
        rec = d + (s_next / s) * (rec - d)
    assert float((rec - x0).norm() / x0.norm()) > 1e-3


def test_cycle_grid_and_forward_marginals(prior):
    levels = cycle_sigmas(SD, 0.6, 120)
    assert levels.shape == (121,) and float(levels[0]) == SD.t0_to_sigma(0.6) and float(levels[-1]) == SD.sigma_min
    x0 = torch.zeros(4000, 1, dtype=torch.float64)
    states = forward_noise(x0, levels, seed=list(range(4000)))
    assert float(states[0].std()) == pytest.approx((float(levels[0]) ** 2 - float(levels[-1]) ** 2) ** 0.5, rel=0.05)
    assert torch.equal(states[-1], x0)


def test_recorded_noise_is_standard_normal_on_fine_grids_and_replay_keeps_the_chain(prior):
    """On a fine grid the recorded noise is ≈ N(0, 1); on a coarse one it also carries the x0-posterior
    spread the ancestral step leaves out (std > 1 near σ = 0), which is what makes replay exact."""
    x0 = prior.sample(64, torch.Generator().manual_seed(2))[0]
    stds = {}
    for n in (20, 300):
        traj = cycle_encode(prior, x0, cycle_sigmas(SD, 0.5, n), seed=0)
        w = torch.stack(traj.noises)
        assert abs(float(w.mean())) < 0.02
        stds[n] = float(w.std())
        assert torch.allclose(cycle_decode(prior, traj.start, traj), x0, atol=1e-10)
    assert stds[300] == pytest.approx(1.0, abs=0.03) and stds[20] > 1.2


def test_an_edit_is_contracted_back_toward_the_data(prior):
    """The blessing of randomness: a perturbed start comes back closer to the data than it left."""
    x0 = prior.sample(32, torch.Generator().manual_seed(3))[0]
    traj = cycle_encode(prior, x0, cycle_sigmas(SD, 0.6, 60), seed=0)
    bump = 2.0 * torch.randn(traj.start.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = cycle_decode(prior, traj.start + bump, traj)
    assert float((out - x0).norm()) < 0.5 * float(bump.norm())
    _, dist = prior.nearest_component(out)
    assert float(dist.mean()) < 0.6  # on the manifold (component std 0.5)


def test_masked_cycle_decode_restores_the_chain_outside(prior):
    x0 = prior.sample(2, torch.Generator().manual_seed(1))[0]
    traj = cycle_encode(prior, x0, cycle_sigmas(SD, 0.6, 30), seed=0)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    mask[..., 4:12, 4:12] = 1
    out = cycle_decode(prior, traj.start + 1.0, traj, mask=mask)
    assert torch.equal(out[(mask == 0).expand_as(out)], x0[(mask == 0).expand_as(out)])
    assert float((out - x0)[(mask == 1).expand_as(out)].abs().mean()) > 1e-3


def test_per_step_arguments_reach_both_passes(prior):
    seen = []

    def den(x, sigma, scale=None):
        seen.append(scale)
        return prior(x, sigma)

    x0 = prior.sample(1, torch.Generator().manual_seed(1))[0]
    ramp = guidance_ramp(3.0, 5)
    rec = cycle_reconstruct(den, x0, cycle_sigmas(SD, 0.5, 5), extra_args_fn=lambda i: {"scale": ramp[i]})
    assert seen == ramp + ramp and torch.allclose(rec, x0, atol=1e-12)
    assert ramp[0] == pytest.approx(1 + 2 * 5 / 4) and ramp[-1] == pytest.approx(1 + 2 / 4)  # g(n) = 1 + (s-1)·n/(N-1)
    g = guidance_ramp(3.0, 120)
    assert g[0] == pytest.approx(1 + 2 * 120 / 119) and g[-1] == pytest.approx(1 + 2 / 119)


# -- SDE-Drag ------------------------------------------------------------------------------------------------
def test_drag_iteration_count_follows_the_paper():
    assert [drag_iterations(d, 2) for d in (1, 2, 3, 5, 9, 20)] == [1, 1, 2, 3, 5, 10]


def test_copy_paste_geometry():
    z = torch.arange(16 * 16, dtype=torch.float64).reshape(1, 1, 16, 16)
    out = copy_paste(z, [((4, 4), (6, 5))], radius=2, beta=0.0, alpha=1.0, noise=torch.zeros_like(z), noise_scale=1.0)
    assert torch.equal(out[..., 3:7, 4:8], z[..., 2:6, 2:6])  # target = source patch (half-open 4x4)
    assert float(out[..., 2, 2]) == 0.0  # trailing strip of the source: noised (β = 0, zero noise)
    edge = copy_paste(z, [((0, 0), (15, 15))], radius=3, beta=1.0, alpha=1.0, noise=torch.zeros_like(z), noise_scale=1.0)
    assert torch.equal(edge, z)  # radii clipped jointly to zero at the borders: nothing moves


def test_drag_moves_content_toward_the_target_and_keeps_the_rest():
    prior = GaussianMixturePrior(torch.zeros(1, 4, 24, 24, dtype=torch.float64), [3.0], schedule=SD)
    x0 = prior.sample(1, torch.Generator().manual_seed(0))[0]
    src = x0[..., 0:10, 0:10]
    before = corr(x0[..., 8:18, 8:18], src)
    out = sde_drag(prior, x0, [((5, 5), (13, 13))], t0=0.6, steps=40, step_size=20, seed=0)
    after = corr(out[..., 8:18, 8:18], src)
    assert before < 0.2 and after > 0.5, (before, after)
    assert corr(out[..., 19:, 19:], x0[..., 19:, 19:]) > 0.999  # far from the drag nothing changes
    assert prior.calls == 2 * 40


def test_drag_mask_confines_changes():
    prior = GaussianMixturePrior(torch.zeros(1, 4, 24, 24, dtype=torch.float64), [3.0], schedule=SD)
    x0 = prior.sample(1, torch.Generator().manual_seed(0))[0]
    mask = torch.zeros(1, 1, 24, 24, dtype=torch.float64)
    mask[..., :16, :16] = 1
    out = sde_drag(prior, x0, [((5, 5), (9, 9))], mask=mask, t0=0.6, steps=20, seed=0)
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], x0[keep])
    assert float((out - x0)[~keep].abs().mean()) > 0.05


def test_drag_progress_counts_both_passes_of_every_iteration():
    prior = GaussianMixturePrior(torch.zeros(1, 4, 16, 16, dtype=torch.float64), [2.0], schedule=SD)
    x0 = prior.sample(1, torch.Generator().manual_seed(0))[0]
    infos = []
    sde_drag(prior, x0, [((2, 2), (8, 2))], t0=0.5, steps=5, step_size=2, seed=0, callback=infos.append)
    assert [i.step for i in infos] == list(range(30)) and {i.total for i in infos} == {30}  # 3 iterations × 2 × 5


def test_parse_points_formats_and_errors():
    ours = parse_points('[{"source": [10, 20], "target": [30, 40]}]', 64, 64)
    assert ours == [DragPair((10.0, 20.0), (30.0, 40.0))]
    bench = parse_points({"source": [[10, 20], [1, 1]], "target": [[30, 40], [5, 5]], "prompt": "x"}, 64, 64)
    assert len(bench) == 2 and bench[1].target == (5.0, 5.0)
    kj = parse_points(json.dumps([{"x": 10, "y": 20}, {"x": 30, "y": 40}]), 64, 64)
    assert kj == ours
    assert to_latent_points(ours) == [((1, 2), (3, 5))]
    for bad, match in [
        ("[{oops", "not valid JSON"),
        ("[]", "no point pairs"),
        ('[{"source": [10, 20], "target": [10, 20]}]', "source == target"),
        ('[{"source": [70, 20], "target": [10, 20]}]', "outside the 64x64 image"),
        ('[{"source": [10], "target": [10, 20]}]', r"must be \[x, y\]"),
        ('[[1, 2], [3, 4], [5, 6]]', "even number of points"),
        ('{"source": [[1, 2]], "target": []}', "same length"),
        ("42", "expected a JSON list"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_points(bad, 64, 64)


def test_drag_bad_arguments():
    prior = GaussianMixturePrior(torch.zeros(1, 4, 8, 8, dtype=torch.float64), [1.0], schedule=SD)
    x0 = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="outside the 8x8 latent"):
        sde_drag(prior, x0, [((1, 1), (9, 1))])
    with pytest.raises(ValueError, match="no point pairs"):
        sde_drag(prior, x0, [])
    with pytest.raises(ValueError, match="mask shape"):
        sde_drag(prior, x0, [((1, 1), (3, 1))], mask=torch.ones(1, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="beta"):
        sde_drag(prior, x0, [((1, 1), (3, 1))], beta=1.5)


# -- inpainting and DiffEdit ----------------------------------------------------------------------------------
def _half_mask(size=16):
    m = torch.zeros(1, 1, size, size, dtype=torch.float64)
    m[..., :, size // 2 :] = 1
    return m


def test_sde_inpainting_keeps_the_known_area_and_the_ode_twin_is_deterministic(prior):
    x0 = prior.sample(1, torch.Generator().manual_seed(1))[0]
    mask = _half_mask()
    a = sde_inpaint(prior, x0, mask, steps=20, mode="sde", seed=0)
    b = sde_inpaint(prior, x0, mask, steps=20, mode="sde", seed=1)
    keep = (mask == 0).expand_as(a)
    assert torch.equal(a[keep], x0[keep]) and not torch.equal(a, b)
    k = int(prior.nearest_component(x0)[0])
    # the filled half continues the component the known half belongs to
    assert float((a - prior.means[k])[~keep].pow(2).mean().sqrt()) < 0.6
    ode1 = sde_inpaint(prior, x0, mask, steps=20, mode="ode", seed=0)
    ode2 = sde_inpaint(prior, x0, mask, steps=20, mode="ode", seed=0)
    assert torch.equal(ode1, ode2) and torch.equal(ode1[keep], x0[keep])


class TwoPromptPrior:
    """A conditional analytic model: prompt "a" is one Gaussian, prompt "b" another."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.priors = {p: GaussianMixturePrior(torch.randn(1, 4, 16, 16, generator=g, dtype=torch.float64), [0.4], schedule=SD) for p in "ab"}
        self.schedule = SD

    def __call__(self, x, sigma, prompt="a"):
        return self.priors[prompt](x, sigma)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_diffedit_turns_source_content_into_target_content_inside_the_mask(mode):
    model = TwoPromptPrior()
    x0 = model.priors["a"].sample(1, torch.Generator().manual_seed(1))[0]
    mask = _half_mask()
    out = diffedit(model, x0, mask, source_args={"prompt": "a"}, target_args={"prompt": "b"}, t0=0.7, steps=30, mode=mode, seed=0)
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], x0[keep])
    mu_a, mu_b = model.priors["a"].means[0], model.priors["b"].means[0]
    edited = out[~keep]
    assert float((edited - mu_b[~keep[0]]).pow(2).mean()) < float((edited - mu_a[~keep[0]]).pow(2).mean())


def test_diffedit_sde_with_equal_prompts_is_exact_and_the_ode_is_not():
    model = TwoPromptPrior()
    x0 = model.priors["a"].sample(1, torch.Generator().manual_seed(1))[0]
    same = {"prompt": "a"}
    sde = diffedit(model, x0, None, source_args=same, target_args=same, t0=0.7, steps=30, mode="sde")
    ode = diffedit(model, x0, None, source_args=same, target_args=same, t0=0.7, steps=30, mode="ode")
    assert float((sde - x0).abs().max()) < 1e-8
    assert float((ode - x0).abs().max()) > 1e-3


def test_diffedit_mask_finds_where_the_prompts_disagree():
    model = TwoPromptPrior()
    model.priors["b"].means.copy_(model.priors["a"].means)
    model.priors["b"].means[..., :, 8:] += 2.0  # the prompts disagree on the right half only
    x0 = model.priors["a"].sample(1, torch.Generator().manual_seed(1))[0]
    m = diffedit_mask(model, x0, source_args={"prompt": "a"}, target_args={"prompt": "b"}, repeats=4)
    assert m.shape == (1, 1, 16, 16)
    assert float(m[..., :, :8].mean()) < 0.1 and float(m[..., :, 8:].mean()) > 0.6


def test_mode_is_checked(prior):
    with pytest.raises(ValueError, match="mode"):
        sde_inpaint(prior, torch.zeros(1, 4, 16, 16, dtype=torch.float64), _half_mask(), mode="euler")


# -- plans shared by the diffusers pipeline and the nodes ---------------------------------------------------
def test_drag_plan_maps_points_to_cells_iterations_ramp_and_total_steps():
    from sdedit_engine.core.drag import plan_drag

    plan = plan_drag('[{"source": [17, 40], "target": [70, 40]}]', 128, 96, factor=8, schedule=SD, t0=0.6, steps=12,
                     guidance_scale=3.0, step_size=2.0)
    assert plan.cells == (((2, 5), (8, 5)),) and plan.pairs == (DragPair((17.0, 40.0), (70.0, 40.0)),)
    assert plan.iterations == drag_iterations(6.0, 2.0) == 3 and plan.total_steps == 2 * 12 * 3
    assert plan.ramp == tuple(guidance_ramp(3.0, 12)) and len(plan.ramp) == 12 and plan.ramp[0] > plan.ramp[-1]
    assert torch.equal(plan.sigmas, cycle_sigmas(SD, 0.6, 12))
    same = plan_drag([DragPair((17, 40), (70, 40))], 128, 96, factor=8, schedule=SD, t0=0.6, steps=12)
    assert same.cells == plan.cells
    for bad, message in (({"step_size": 0}, "step_size"), ({"step_size": float("nan")}, "step_size"),
                         ({"t0": 0}, "t0"), ({"guidance_scale": float("nan")}, "guidance_scale")):
        with pytest.raises(ValueError, match=message):
            plan_drag([[17, 40], [70, 40]], 128, 96, factor=8, schedule=SD, **bad)
    with pytest.raises(ValueError, match="shorter than one latent cell"):
        plan_drag([[17, 40], [20, 41]], 128, 96, factor=8, schedule=SD)


def test_drag_plan_runs_sde_drag_with_the_ramp_as_a_per_step_argument():
    from sdedit_engine.core.drag import plan_drag

    prior = GaussianMixturePrior(torch.zeros(1, 4, 16, 16, dtype=torch.float64), [2.0], schedule=SD)
    x0 = prior.sample(1, torch.Generator().manual_seed(0))[0]
    seen = []

    def model(x, sigma, cfg=None):
        seen.append(cfg)
        return prior(x, sigma)

    plan = plan_drag([[20, 20], [68, 20]], 128, 128, factor=8, schedule=SD, t0=0.5, steps=5, guidance_scale=4.0)
    infos = []
    out = plan.run(model, x0, cfg_arg="cfg", seed=0, callback=infos.append)
    assert [i.step for i in infos] == list(range(plan.total_steps))
    assert seen == list(plan.ramp) * (2 * plan.iterations)  # recording and replay see the same scale per step
    ref = sde_drag(prior, x0, list(plan.cells), sigmas=plan.sigmas, step_size=plan.step_size, seed=0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("given", [True, False])
def test_auto_diffedit_numbers_every_step_of_the_run(given):
    from sdedit_engine.core.sde_edits import auto_diffedit, diffedit_steps

    model = TwoPromptPrior()
    x0 = model.priors["a"].sample(1, torch.Generator().manual_seed(1))[0]
    infos = []
    mask = _half_mask() if given else None
    out, used = auto_diffedit(model, x0, mask, source_args={"prompt": "a"}, target_args={"prompt": "b"},
                              sigmas=cycle_sigmas(SD, 0.7, 6), mask_repeats=3, seed=0, callback=infos.append)
    total = diffedit_steps(6, given, 3)
    assert total == 12 + (0 if given else 3)
    assert [i.step for i in infos] == list(range(total)) and {i.total for i in infos} == {total}
    if given:
        assert used is mask
    else:
        assert torch.equal(used, diffedit_mask(model, x0, source_args={"prompt": "a"}, target_args={"prompt": "b"},
                                               repeats=3, seed=0))
    ref = diffedit(model, x0, used, source_args={"prompt": "a"}, target_args={"prompt": "b"},
                   sigmas=cycle_sigmas(SD, 0.7, 6), seed=0)
    assert torch.equal(out, ref)
    for bad, message in (({"mask_threshold": float("nan")}, "mask_threshold"), ({"mask_t0": 0.0}, "mask_t0"),
                         ({"mask_repeats": 0}, "mask_repeats")):
        with pytest.raises(ValueError, match=message):
            auto_diffedit(model, x0, None, source_args={"prompt": "a"}, target_args={"prompt": "b"},
                          sigmas=cycle_sigmas(SD, 0.7, 6), **bad)


# -- the drag default (BENCHMARKS.md §7) -------------------------------------------------------------------
def test_the_default_drag_costs_a_quarter_of_the_papers_evaluations_and_every_front_end_shares_it(prior):
    """30 steps: 2 x 30 denoiser calls per iteration (record + replay), i.e. 120 CFG image evaluations,
    a quarter of the paper's 480; the pipeline, the engine plan and the CLI all default to the one constant."""
    import inspect

    from sdedit_engine.cli import build_parser
    from sdedit_engine.core.defaults import DEFAULT_DRAG_STEPS
    from sdedit_engine.core.drag import plan_drag
    from sdedit_engine.pipelines.drag_pipeline import drag

    assert DEFAULT_DRAG_STEPS == 30
    x0 = prior.sample(1, torch.Generator().manual_seed(3))[0]
    calls = prior.calls
    sde_drag(prior, x0, [((4, 8), (6, 8))], seed=0)  # one iteration: a 2-cell move at the default step size
    assert prior.calls - calls == 2 * DEFAULT_DRAG_STEPS
    plan = plan_drag('[{"source": [32, 64], "target": [48, 64]}]', 128, 128, factor=8, schedule=SD)
    assert plan.steps == DEFAULT_DRAG_STEPS and len(plan.sigmas) == DEFAULT_DRAG_STEPS + 1
    assert 2 * 2 * plan.steps * plan.iterations == 120  # CFG batch 2, record + replay: 120 evaluations
    assert inspect.signature(drag).parameters["steps"].default == DEFAULT_DRAG_STEPS
    assert inspect.signature(sde_drag).parameters["steps"].default == DEFAULT_DRAG_STEPS
    args = build_parser().parse_args(["drag", "in.png", "--points", "[[0, 0], [16, 0]]", "--model", "m", "-o", "out.png"])
    assert args.steps == DEFAULT_DRAG_STEPS
