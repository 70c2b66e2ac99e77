"""The one step loop (core.samplers.Stepper) and the one call counter (core.denoisers.CountingDenoiser)."""

import ast
from pathlib import Path

import pytest
import torch

from sdedit_engine import CountingDenoiser, SamplingCancelled, Stepper
from sdedit_engine.core.analytic import GaussianMixturePrior
from sdedit_engine.core.cycle import cycle_encode, cycle_sigmas
from sdedit_engine.core.sde_edits import ddim_invert, diffedit_mask

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A denoiser that records the σ and conditioning of every call."""

    def __init__(self, schedule):
        self.schedule, self.seen = schedule, []

    def __call__(self, x, sigma, **cond):
        self.seen.append((float(sigma[0]), dict(cond)))
        return 0.5 * x


def test_stepper_merges_the_per_step_hook_over_the_fixed_args():
    den = Recorder(None)
    run = Stepper(den, [3.0, 2.0, 1.0], extra_args={"a": 1, "b": 2}, extra_args_fn=lambda i: {"b": 10 + i})
    x = torch.ones(2, 3)
    for i, s, _ in run.steps():
        run.denoise(x, s, i)
    assert den.seen == [(3.0, {"a": 1, "b": 10}), (2.0, {"a": 1, "b": 11})]
    with pytest.raises(ValueError, match="step index"):
        run.denoise(x, 3.0)  # per-step conditioning needs the step


def test_cycle_encode_and_ddim_inversion_run_through_the_stepper():
    prior = GaussianMixturePrior.random(2, (1, 4, 4), seed=0)
    den = Recorder(prior.schedule)
    levels = cycle_sigmas(prior.schedule, 0.5, 4)
    x0 = torch.zeros(1, 1, 4, 4)
    cycle_encode(den, x0, levels, extra_args={"p": "src"}, extra_args_fn=lambda i: {"w": i})
    assert [c for _, c in den.seen] == [{"p": "src", "w": i} for i in range(4)]
    assert [s for s, _ in den.seen] == pytest.approx(levels[:-1].tolist())
    den.seen.clear()
    infos = []
    ddim_invert(den, x0, levels, callback=lambda info: infos.append((info.step, info.sigma, info.sigma_next)))
    asc = levels.flip(0).tolist()
    assert infos == [(k, pytest.approx(asc[k]), pytest.approx(asc[k + 1])) for k in range(4)]  # walks upward


def test_cancellation_names_the_loop_and_its_unit():
    prior = GaussianMixturePrior.random(2, (1, 4, 4), seed=0)
    x0 = torch.zeros(1, 1, 4, 4)
    stop_at_1 = lambda info: info.step == 1  # noqa: E731
    with pytest.raises(SamplingCancelled, match=r"Cycle-SDE recording cancelled at step 2/4"):
        cycle_encode(prior, x0, cycle_sigmas(prior.schedule, 0.5, 4), callback=stop_at_1)
    with pytest.raises(SamplingCancelled, match=r"DiffEdit mask cancelled at draw 2/3"):
        diffedit_mask(prior, x0, source_args={}, target_args={}, repeats=3, callback=stop_at_1)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        diffedit_mask(prior, x0, source_args={}, target_args={}, repeats=0)


def test_counting_denoiser_counts_and_forwards():
    prior = GaussianMixturePrior.random(2, (1, 4, 4), seed=0)
    counted = CountingDenoiser(prior)
    assert counted.schedule is prior.schedule  # attributes pass through
    x = torch.randn(3, 1, 4, 4)
    out = counted(x, torch.full((3,), 2.0))
    assert torch.equal(out, prior.denoise(x, torch.full((3,), 2.0)))
    assert counted.calls == 1 and prior.calls == 1  # the prior counts its own calls through the same class
    with pytest.raises(AttributeError):
        _ = counted.no_such_attribute


def test_nothing_outside_samplers_uses_its_private_helpers():
    offenders = []
    for path in sorted((ROOT / "sdedit_engine").rglob("*.py")) + sorted((ROOT / "nodes").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("samplers"):
                offenders += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []
