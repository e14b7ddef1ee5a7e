"""benchmarks/gpu/flip_power.py on planted generates: the A/A generates cut into shorter blocks keep every real
switch at a boundary, a cost planted on their "on" blocks is read back at its size for each block length, a
length that does not divide the run's own is refused by name, and the table's runs-needed figure follows its SD."""
import json
import math

import pytest

from gpu_scripts import load
from test_flip_steps import planted

flip_power = load("flip_power")


def test_recut_keeps_every_real_switch_as_a_boundary_and_starts_at_the_first():
    g = planted(0.0, real=False, start_on=True, seed=1, steps=700, every=64)
    real = [s["after"] for s in g["switches"]]
    cut = flip_power.recut(g, 16)
    assert cut[0] == real[0] == 64 and set(real) <= set(cut)
    assert all(b - a == 16 for a, b in zip(cut, cut[1:])) and cut[-1] < 700
    with pytest.raises(ValueError, match="--every 24"):
        flip_power.recut(g, 24)
    with pytest.raises(ValueError, match="--every 0"):
        flip_power.recut(g, 0)
    assert flip_power.recut(dict(g, switches=[], every=64), 16) == []     # stopped before its first switch


def test_planted_steps_lengthen_the_on_blocks_only():
    steps = [100] * 40
    out = flip_power.planted_steps(steps, [10, 20, 30], start_on=True, pct=10.0)
    # block 0 (before the first switch) is never read; from there the labels alternate from "off" (k = 1)
    assert out[:20] == [100] * 20 and out[20:30] == [pytest.approx(110.0)] * 10 and out[30:] == [100] * 10
    out = flip_power.planted_steps(steps, [10, 20, 30], start_on=False, pct=10.0)
    assert out[10:20] == [pytest.approx(110.0)] * 10 and out[20:30] == [100] * 10


@pytest.mark.parametrize("every", [16, 32, 64])
def test_a_cost_planted_on_aa_generates_is_read_at_its_size(every):
    runs = {f"run{r}": [planted(0.0, real=False, start_on=(g % 2 == 0), seed=10 * r + g) for g in range(4)]
            for r in range(3)}
    p = flip_power.power(runs, every, 8, plant=1.0, half=0.5)
    assert p["runs"] == 3 and p["planted"] == pytest.approx(1.0, abs=0.1)
    assert abs(p["aa_mean"]) < 0.5                   # nothing planted in the A/A itself
    assert p["runs_for_half"] == math.ceil((flip_power.Z90 * p["aa_sd"] / 0.5) ** 2)


def test_the_real_generates_are_left_out():
    runs = {"a": [planted(5.0, real=True, start_on=True, seed=1), planted(0.0, real=False, start_on=True, seed=2)],
            "b": [planted(5.0, real=True, start_on=False, seed=3), planted(0.0, real=False, start_on=False, seed=4)]}
    p = flip_power.power(runs, 64, 8, plant=0.0, half=0.5)
    assert abs(p["aa_mean"]) < 0.5 and p["planted"] is None  # a real flip's 5 % would show


def test_cli_table_and_clear_errors(tmp_path, capsys):
    files = []
    for r in range(2):
        gs = [dict(planted(0.0, real=g % 2 == 0, start_on=g < 2, seed=10 * r + g), workload="flip1", every=64)
              for g in range(4)]
        f = tmp_path / f"run{r}.json"
        f.write_text(json.dumps({"flips": gs}))
        files.append(str(f))
    out = tmp_path / "power.json"
    flip_power.main([*files, "--out", str(out)])
    text = capsys.readouterr().out
    assert "| 16 | 8 | 2 |" in text and "| 64 | 8 | 2 |" in text        # default: the own length, 1/2 and 1/4
    assert [x["every"] for x in json.loads(out.read_text())["lengths"]] == [16, 32, 64]
    with pytest.raises(SystemExit, match="--every 'x'"):
        flip_power.main([*files, "--every", "x"])
    with pytest.raises(SystemExit, match="--every 48: must divide"):
        flip_power.main([*files, "--every", "48"])
