"""Flow-matching models through the engine: the schedule, the S = s/(1 − s) bridge, and every algorithm
on the analytic prior written in flow coordinates (``GaussianMixturePrior.flow_denoise``, an exact
denoiser derived directly for x_s = (1 − s)·x0 + s·ε, so it checks the bridge rather than reusing it).

Statistical tolerances are those of ``tests/test_engine_statistics.py``: energy distance below the
largest of 20 exact-vs-exact re-splits, χ² p-values of component frequencies > 1e-3, per-component
variance ratios within the grid's closed-form bias + 5 standard errors.
"""

import math

import pytest
import torch

from sdedit_engine import sdedit
from sdedit_engine.core import conversions as cv
from sdedit_engine.core.analytic import GaussianMixturePrior, energy_distance
from sdedit_engine.core.cycle import cycle_decode, cycle_encode, cycle_reconstruct, cycle_sigmas
from sdedit_engine.core.drag import guidance_ramp, sde_drag
from sdedit_engine.core.flow import FlowDenoiser, FlowSchedule, check_shift, flow_to_ve, flux_mu, ve_to_flow
from sdedit_engine.core.samplers import get_sampler
from sdedit_engine.core.schedules import DiscreteSchedule
from sdedit_engine.core.sde_edits import diffedit, sde_inpaint
from tests.test_engine_statistics import _chi2_pvalue, _component_stats, _linear_gaussian_moments

SHAPE = (4, 8, 8)
D = 256
N = 1000
WEIGHTS = [0.5, 0.3, 0.2]
SD3 = FlowSchedule.sd3(3.0)
FLUX = FlowSchedule.flux_resolution(1024, 1024)
SD15 = DiscreteSchedule.scaled_linear()


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixturePrior.random(3, SHAPE, spread=1.0, std=0.5, seed=0, weights=WEIGHTS)


def flow_model(prior, schedule=SD3, prediction="denoised"):
    if prediction == "velocity":
        return FlowDenoiser(lambda x, s: (x - prior.flow_denoise(x, s)) / s.reshape(-1, 1, 1, 1), schedule, "velocity")
    return FlowDenoiser(prior.flow_denoise, schedule)


def _batch(x, n=N):
    return x.reshape(1, *SHAPE).expand(n, *SHAPE).clone()


@pytest.fixture(scope="module")
def stroke_guide(mixture):
    g = torch.Generator().manual_seed(5)
    return 0.5 * (mixture.means[0] + mixture.means[1]) + 0.3 * torch.randn(SHAPE, generator=g, dtype=torch.float64)


# -- the schedule ----------------------------------------------------------------------------------------
def test_shifts_match_the_published_formulas():
    assert SD3.t0_to_flow_sigma(0.5) == pytest.approx(0.75, abs=1e-15)  # 3·0.5/(1 + 2·0.5)
    assert flux_mu(1024, 1024) == pytest.approx(1.15, abs=1e-12)
    assert flux_mu(512, 512) == pytest.approx(0.5 + (1024 - 256) * 0.65 / 3840, abs=1e-12)
    e = math.exp(1.15)
    assert FLUX.t0_to_flow_sigma(0.5) == pytest.approx(e / (e + 1), abs=1e-15)
    assert FlowSchedule().t0_to_flow_sigma(0.3) == pytest.approx(0.3, abs=1e-15)
    for sch in (SD3, FLUX, FlowSchedule.sd3(1.73), FlowSchedule.from_sigmas(SD3.flow_sigma(torch.arange(1, 1001) / 1000))):
        t = torch.linspace(0.001, 0.999, 57, dtype=torch.float64)
        assert torch.allclose(sch.model_time(sch.flow_sigma(t)), t, atol=1e-12)
        assert sch.flow_sigma_to_t0(sch.t0_to_flow_sigma(0.37)) == pytest.approx(0.37, abs=1e-12)


def test_grids_start_exactly_at_t0_and_end_at_zero():
    for sch in (SD3, FLUX):
        for spacing in ("uniform", "karras"):
            g = sch.flow_sigma_grid(0.6, 12, spacing)
            assert g.numel() == 13 and float(g[-1]) == 0.0 and float(g[0]) == sch.t0_to_flow_sigma(0.6)
            assert bool((g[1:] < g[:-1]).all())
            assert torch.allclose(sch.sigma_grid(0.6, 12, spacing), flow_to_ve(g))
        # uniform: equal steps in model time down to 1/T
        t = sch.model_time(sch.flow_sigma_grid(0.6, 12)[:-1])
        assert torch.allclose(t[:-1] - t[1:], torch.full((11,), (0.6 - 1 / sch.num_timesteps) / 11, dtype=torch.float64))


def test_pure_noise_start_is_explicit():
    """t0 = 1: S(1) = ∞, so the start is model time 1 − 1e-4 (ComfyUI's percent_to_sigma(1e-4))."""
    assert SD3.t0_to_flow_sigma(1.0) == pytest.approx(3 * 0.9999 / (1 + 2 * 0.9999), abs=1e-15)
    assert math.isfinite(SD3.t0_to_sigma(1.0)) and SD3.t0_to_sigma(1.0) > 1e4
    den = flow_model(GaussianMixturePrior.random(2, SHAPE, seed=1))
    with pytest.raises(ValueError, match="inf"):
        den(torch.zeros(1, *SHAPE, dtype=torch.float64), torch.tensor([math.inf], dtype=torch.float64))


def test_sd15_snr_scale_matches_sd15_log_snr():
    sch = SD3.with_t0_scale("sd15_snr")
    for t0 in (0.05, 0.3, 0.5, 0.8, 1.0):
        assert sch.t0_to_sigma(t0) == pytest.approx(SD15.t0_to_sigma(t0), rel=1e-12)
        info = sch.describe_t0(t0)
        assert info["log_snr"] == pytest.approx(-2 * math.log(SD15.t0_to_sigma(t0)), abs=1e-10)
        assert sch.flow_sigma_to_t0(info["flow_sigma"]) == pytest.approx(t0, abs=1e-9)
    # the same number destroys far more on the model's own scale (the "denoise cliff")
    assert SD3.t0_to_sigma(0.5) / sch.t0_to_sigma(0.5) > 1.8


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "x"])
def test_bad_shift_names_the_input(bad):
    with pytest.raises(ValueError, match="shift"):
        check_shift(bad)
    with pytest.raises(ValueError, match="shift"):
        FlowSchedule.sd3(bad)


def test_bad_t0_scale_names_the_input():
    with pytest.raises(ValueError, match="t0_scale"):
        FlowSchedule.sd3(3.0, t0_scale="snr")


# -- the bridge -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["denoised", "velocity"])
def test_adapter_is_the_ve_denoiser_of_the_same_prior(mixture, prediction):
    den = flow_model(mixture, prediction=prediction)
    x = 3 * torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for big_s in (0.003, 0.5, 3.0, 100.0, SD3.t0_to_sigma(1.0)):
        sig = torch.full((6,), big_s, dtype=torch.float64)
        assert float((den(x, sig) - mixture(x, sig)).abs().max()) < 1e-11 * max(1.0, big_s)


def test_ddim_is_the_closed_form_flow_euler_step(mixture, stroke_guide):
    guide = _batch(stroke_guide, 8)
    eps = torch.randn(guide.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for sch in (SD3, FLUX):
        out = sdedit(flow_model(mixture, sch), guide, t0=0.7, steps=25, sampler="ddim", init_noise=eps, seed=0,
                     spacing="uniform")
        grid = sch.flow_sigma_grid(0.7, 25)
        x = (1 - grid[0]) * guide + grid[0] * eps
        for s, s_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
            v = (x - mixture.flow_denoise(x, torch.full((8,), s, dtype=torch.float64))) / s
            x = x + (s_next - s) * v
        assert float((out - x).abs().max()) < 1e-11


def test_ancestral_step_is_the_flow_ddpm_posterior(mixture):
    """One ddpm step in S equals flow.md §2's posterior step in s: x' = (1 − s')D + sqrt(s'² − c²)ε̂ + c·z."""
    den = flow_model(mixture)
    s, s_next = 0.8, 0.55
    x = (1 - s) * mixture.sample(4, torch.Generator().manual_seed(0))[0] + s * torch.randn(4, *SHAPE, dtype=torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    big, big_next = s / (1 - s), s_next / (1 - s_next)
    out_ve = get_sampler("ddpm").fn(den, x / (1 - s), torch.tensor([big, big_next], dtype=torch.float64), noise_sampler=lambda a, b: z)
    d = mixture.flow_denoise(x, torch.full((4,), s, dtype=torch.float64))
    eps_hat = (x - (1 - s) * d) / s
    c = s_next * math.sqrt(1 - (big_next / big) ** 2)
    expected = (1 - s_next) * d + math.sqrt(s_next**2 - c * c) * eps_hat + c * z
    assert float((out_ve * (1 - s_next) - expected).abs().max()) < 1e-12


# -- the exact SDEdit law -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exact_flow(mixture, stroke_guide):
    """Exact SDEdit outputs at the flow start s(0.5) = 0.75 (S = 3) and the null of the energy distance."""
    sigma0 = SD3.t0_to_sigma(0.5)
    g = torch.Generator().manual_seed(7)
    a, _ = mixture.exact_sdedit(stroke_guide, sigma0, N, g)
    b, _ = mixture.exact_sdedit(stroke_guide, sigma0, N, g)
    pooled = torch.cat([a, b])
    null = [energy_distance(pooled[p[:N]], pooled[p[N:]])
            for p in (torch.randperm(2 * N, generator=torch.Generator().manual_seed(1000 + i)) for i in range(20))]
    return a, max(null)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 500), ("euler_maruyama", 500), ("dpmpp_2m_sde", 30)])
def test_flow_sdedit_matches_the_exact_sdedit_law(mixture, stroke_guide, exact_flow, sampler, steps):
    exact, null_max = exact_flow
    out = sdedit(flow_model(mixture), _batch(stroke_guide), t0=0.5, steps=steps, sampler=sampler, seed=200)
    ed = energy_distance(out, exact)
    assert ed < null_max, (ed, null_max)
    _, var, counts = _component_stats(mixture, out)
    f_ex, _, _ = _component_stats(mixture, exact)
    assert _chi2_pvalue(counts, f_ex.clamp_min(1e-4)) > 1e-3
    sigmas = SD3.sigma_grid(0.5, steps)
    if sampler != "dpmpp_2m_sde":
        _, v = _linear_gaussian_moments(sampler, sigmas, 0.25)
        s0 = float(sigmas[0])
        bias = abs(v / (0.0625 * s0**2 / (0.25 + s0**2) ** 2 + 0.25 * s0**2 / (0.25 + s0**2)) - 1)
    else:
        bias = 0.08
    tol = bias + 5 * torch.sqrt(2.0 / (counts.clamp_min(1).double() * D))
    major = f_ex > 0.05
    assert torch.all((var[major] - 1).abs() < tol[major]), (var, tol)


@pytest.mark.parametrize("sch", [SD3, FLUX], ids=["sd3", "flux"])
def test_pure_noise_start_reproduces_the_prior(mixture, sch):
    out = sdedit(flow_model(mixture, sch), torch.zeros(N, *SHAPE, dtype=torch.float64), t0=1.0, steps=30,
                 sampler="dpmpp_2m_sde", seed=100)
    _, var, counts = _component_stats(mixture, out)
    assert _chi2_pvalue(counts, torch.tensor(WEIGHTS, dtype=torch.float64)) > 1e-3
    assert torch.all((var - 1).abs() < 0.08 + 5 * torch.sqrt(2.0 / (counts.double() * D)))
    # the guide weighs 1e-4 of the start: another guide gives (almost) the same samples
    other = sdedit(flow_model(mixture, sch), torch.full((8, *SHAPE), 3.0, dtype=torch.float64), t0=1.0, steps=30,
                   sampler="dpmpp_2m_sde", seed=100)
    assert float((other - out[:8]).abs().mean()) < 0.02


# -- exactness properties ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sch", [SD3, FLUX], ids=["sd3", "flux"])
@pytest.mark.parametrize("t0", [0.6, 1.0])
def test_cycle_sde_reconstructs_in_float64(mixture, sch, t0):
    x0 = mixture.sample(4, torch.Generator().manual_seed(2))[0]
    den = flow_model(mixture, sch, "velocity")
    rec = cycle_reconstruct(den, x0, cycle_sigmas(sch, t0, 60), seed=5)
    rel = float((rec - x0).norm() / x0.norm())
    assert rel <= 1e-6, rel


def test_masks_keep_coordinates_bit_exact(mixture, stroke_guide):
    den = flow_model(mixture, FLUX)
    mask = torch.zeros(1, *SHAPE, dtype=torch.float64)
    mask[..., 2:6, 1:5] = 1.0
    guide = _batch(stroke_guide, 3)
    for known in ("fresh", "fixed"):
        out = sdedit(den, guide, t0=0.8, steps=12, sampler="dpmpp_2m_sde", mask=mask, seed=1, known_noise=known)
        assert torch.equal(out[mask.expand_as(out) == 0], guide[mask.expand_as(out) == 0])
        assert not torch.equal(out, guide)
    x0 = guide
    traj = cycle_encode(den, x0, cycle_sigmas(FLUX, 0.6, 20), seed=3)
    out = cycle_decode(den, traj.start + 0.3 * mask, traj, mask=mask)
    assert torch.equal(out[mask.expand_as(out) == 0], x0[mask.expand_as(out) == 0])
    inp = sde_inpaint(den, guide, mask, steps=10, seed=2)
    assert torch.equal(inp[mask.expand_as(inp) == 0], guide[mask.expand_as(inp) == 0])
    dragged = sde_drag(den, guide, [((2, 3), (4, 3))], mask=mask, t0=0.6, steps=10, seed=0)
    assert torch.equal(dragged[mask.expand_as(dragged) == 0], guide[mask.expand_as(dragged) == 0])
    assert not torch.equal(dragged, guide)


def test_diffedit_sde_runs_on_the_flow_adapter(mixture, stroke_guide):
    """Prompts as two different priors behind one denoiser: outside the mask the input returns exactly."""
    other = GaussianMixturePrior.random(3, SHAPE, spread=1.0, std=0.5, seed=9)

    def den_fn(x, s, prompt="src"):
        return (mixture if prompt == "src" else other).flow_denoise(x, s)

    den = FlowDenoiser(den_fn, SD3)
    mask = torch.zeros(1, *SHAPE, dtype=torch.float64)
    mask[..., :, 4:] = 1.0
    guide = _batch(stroke_guide, 2)
    out = diffedit(den, guide, mask, source_args={"prompt": "src"}, target_args={"prompt": "tgt"},
                       t0=0.6, steps=20, seed=0)
    keep = mask.expand_as(out) == 0
    assert torch.equal(out[keep], guide[keep])
    same = diffedit(den, guide, mask, source_args={"prompt": "src"}, target_args={"prompt": "src"},
                        t0=0.6, steps=20, seed=0)
    assert float((same - guide).norm() / guide.norm()) < 1e-9  # unchanged prompt: Cycle-SDE returns the input
    assert float((out - guide).abs().max()) > 0.1


def test_same_seed_same_tensors_and_batch_equals_singles(mixture, stroke_guide):
    den = flow_model(mixture, FLUX)
    g2 = torch.stack([stroke_guide, mixture.means[2]])
    a = sdedit(den, g2, t0=0.7, steps=10, seed=[11, 12])
    b = sdedit(den, g2, t0=0.7, steps=10, seed=[11, 12])
    assert torch.equal(a, b)
    singles = torch.cat([sdedit(den, g2[i:i + 1], t0=0.7, steps=10, seed=[11 + i]) for i in range(2)])
    assert torch.equal(a, singles)
    assert not torch.equal(a, sdedit(den, g2, t0=0.7, steps=10, seed=[13, 14]))


@pytest.mark.parametrize("t0_scale", ["model", "sd15_snr"])
def test_trade_off_is_monotone_in_t0(mixture, stroke_guide, t0_scale):
    den = flow_model(mixture, SD3.with_t0_scale(t0_scale))
    t0s = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8]
    l2, dist = [], []
    for t0 in t0s:
        out = sdedit(den, _batch(stroke_guide, 300), t0=t0, steps=30, sampler="dpmpp_2m_sde", seed=3)
        l2.append(float((out - stroke_guide).flatten(1).norm(dim=1).mean()))
        dist.append(float(mixture.nearest_component(out)[1].mean()))
    assert all(a < b for a, b in zip(l2, l2[1:])), l2  # faithfulness falls
    # realism rises until the samples sit on the manifold (RMS distance = component std 0.5)
    # (dpmpp_2m_sde's +5% variance bias puts the plateau at ≈ 0.5·sqrt(1.05) = 0.512)
    plateau = next(i for i, d in enumerate(dist) if d < 0.53)
    assert plateau >= 3 and all(a > b for a, b in zip(dist[:plateau + 1], dist[1:plateau + 1])), dist
    assert all(abs(d - 0.512) < 0.02 for d in dist[plateau:]), dist


# -- conversions ----------------------------------------------------------------------------------------------
def test_flow_strength_conversions_follow_the_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    sc = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sc.set_timesteps(20)
    for strength in (0.3, 0.5, 0.55, 0.77, 1.0):
        start = int(max(20 - min(20 * strength, 20), 0))
        t0 = cv.flow_strength_to_t0(SD3, strength, sc.sigmas)
        assert SD3.t0_to_flow_sigma(min(t0, 0.9999)) == pytest.approx(float(sc.sigmas[start]), abs=1e-6 if t0 < 1 else 1e-4)
        back = cv.t0_to_flow_strength(SD3, t0, sc.sigmas)
        assert int(max(20 - min(20 * back, 20), 0)) == start
    assert cv.flow_strength_to_t0(SD3, 0.0, sc.sigmas) == 0.0
    with pytest.raises(ValueError, match="FlowSchedule"):
        cv.flow_strength_to_t0(SD15, 0.5, sc.sigmas)


def test_comfy_denoise_on_flow_schedules():
    # documented side by side: "0.5" on SD3 shift 3, 20 steps
    starts = {name: float(cv.comfy_denoise_sigmas(SD3, 0.5, 20, name)[0]) for name in ("simple", "normal", "karras", "beta")}
    assert starts["simple"] == pytest.approx(0.75, abs=1e-9)
    assert starts["karras"] < 0.1 < 0.74 < starts["normal"] < starts["beta"] < 0.752
    assert cv.comfy_denoise_to_t0(SD3, 0.5, 20, "simple") == pytest.approx(0.5, abs=1e-9)
    for name in ("simple", "normal", "beta", "karras"):
        d = cv.t0_to_comfy_denoise(SD3, 0.4, 20, name)
        assert cv.comfy_denoise_to_t0(SD3, d, 20, name) == pytest.approx(0.4, abs=0.02), name
    snr = SD3.with_t0_scale("sd15_snr")  # the same denoise read on the SD1.5 log-SNR scale
    assert cv.comfy_denoise_to_t0(snr, 0.5, 20, "simple") > 0.6


# -- guidance-distilled models ----------------------------------------------------------------------------------
def test_drag_guidance_ramp_is_a_no_op_on_guidance_distilled_models(mixture):
    assert guidance_ramp(3.0, 7, guidance_distilled=True) == [1.0] * 7
    assert guidance_ramp(3.0, 7)[0] > 2.9
    calls = []

    def den_fn(x, s, cfg=1.0):
        calls.append(cfg)
        return mixture.flow_denoise(x, s)

    den = FlowDenoiser(den_fn, FLUX)
    latent = mixture.sample(1, torch.Generator().manual_seed(0))[0]
    ramp = guidance_ramp(3.0, 10, guidance_distilled=True)
    out = sde_drag(den, latent, [((1, 1), (3, 2))], t0=0.6, steps=10, seed=0, extra_args_fn=lambda i: {"cfg": ramp[i]})
    plain = sde_drag(FlowDenoiser(mixture.flow_denoise, FLUX), latent, [((1, 1), (3, 2))], t0=0.6, steps=10, seed=0)
    assert set(calls) == {1.0} and len(calls) == 2 * 10 * 1  # one call per level, recording + replay
    assert torch.equal(out, plain)


def test_flow_coordinates_round_trip():
    s = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    assert torch.allclose(ve_to_flow(flow_to_ve(s)), s)
