"""The analytic demo reports distances a reader can interpret (issue 14 item 10): an energy distance
that is never printed below 0, with a permutation p-value and a verdict, checked on known cases."""

from __future__ import annotations

import re

import torch

from sdedit_engine.cli.demo import main as demo_main
from sdedit_engine.core.analytic import energy_distance, energy_test


def test_energy_test_separates_equal_and_shifted_laws():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    ed, p = energy_test(a, b, permutations=200, seed=1)
    assert ed == energy_distance(a, b) or abs(ed - energy_distance(a, b)) < 1e-9
    assert p > 0.05  # same law: the observed split is unremarkable
    ed, p = energy_test(a, b + 0.5, permutations=200, seed=1)
    assert ed > 0.1 and p < 0.01


def test_demo_prints_no_negative_distance(capsys):
    assert demo_main(["--samples", "60"]) == 0
    out = capsys.readouterr().out
    assert "p < 0.01 = the sampler's law differs" in out
    table = out.split("verdict")[1].strip().splitlines()[1:]  # after the header's last column
    assert len(table) == 6  # exact-vs-exact + five sampler rows
    for row in table:
        distance, p, verdict = re.search(r"(\S+)\s+([01]\.\d\d)\s+(consistent|differs)", row).groups()
        assert distance == "~0" or float(distance) > 0, row
        assert (verdict == "differs") == (float(p) < 0.01), row
