"""bench/gpu_check.py in its CPU mode on the tiny models: every check passes and the table is written."""

import csv

from bench import gpu_check


def test_gpu_check_tiny_cpu_mode_passes_and_writes_a_table(tmp_path):
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--families", "sd15,sd3,flux", "--steps", "2", "--memory", "64,128",
                         "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "gpu_check_cpu_tiny.csv")))
    assert rc == 0, [r for r in rows if r["ok"] != "yes"]
    assert {r["family"] for r in rows} == {"sd15", "sd3", "flux", "sd15 (tiled)"}
    paths = {r["path"] for r in rows}
    assert {"SDEdit", "masked SDEdit (kept pixels exact)", "Cycle-SDE reconstruction", "SDE-Drag (masked)"} <= paths
    calls = {r["family"]: r["note"] for r in rows if r["path"].startswith("diffusers")}
    assert all(v == "2 calls" for v in calls.values()), calls  # equal model calls on both sides
    assert (tmp_path / "gpu_check_cpu_tiny.md").read_text().count("| yes |") == len(rows)


def test_img2img_call_counts_match_diffusers_truncation():
    assert gpu_check.img2img_calls(10, 0.6, flow=False) == 6
    assert gpu_check.img2img_calls(7, 0.6, flow=True) == 5  # t_start = int(7 − 4.2) = 2
