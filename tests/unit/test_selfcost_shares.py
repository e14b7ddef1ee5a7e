"""The self-cost counter against the direct timing (benchmarks/selfcost_shares.py), on planted run records: each
figure is read as a share of its own run's step, so a host state that slows one run's step and hooks alike (both
doubled here) leaves the shares and the ratio as planted."""
import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "selfcost_shares.py"
_spec = importlib.util.spec_from_file_location("_w2ext_selfcost_shares", _path)
shares = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shares)


def _run(us_per_step: float, counter_wall: float, counter_cpu: float, step_ms: float) -> dict:
    return {"per_batch": [{"us_per_step": us_per_step, "step_ms": step_ms,
                           "selfcost_sampled": {"hook_wall_us_per_step": counter_wall,
                                                "hook_cpu_us_per_step": counter_cpu}}]}


def test_shares_of_each_runs_own_step(tmp_path, capsys):
    # pair 1: direct 20 µs of a 2 ms step (1 %), the timed run's counter 36 (1.8 %), counter-only 24 of 2 ms (1.2 %);
    # pair 2: a slow host state, every figure doubled, the counter-only run in the normal state
    runs = {"timed_1": _run(20.0, 36.0, 40.0, 2.0), "counter_1": _run(0.0, 24.0, 26.0, 2.0),
            "timed_2": _run(40.0, 72.0, 80.0, 4.0), "counter_2": _run(0.0, 24.0, 26.0, 2.0)}
    for name, doc in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    row = shares.pair_row(runs["timed_2"]["per_batch"][0], runs["counter_2"]["per_batch"][0])
    assert row["direct_pct"] == pytest.approx(1.0) and row["timed_counter_pct"] == pytest.approx(1.8)
    assert row["counter_pct"] == pytest.approx(1.2)
    assert shares.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "medians over 2 pairs: direct 1.00 %, timed run's counter 1.80 %, counter-only 1.20 %" in out
    assert "counter-only / direct 1.20x, timed counter / direct 1.80x" in out
    assert [ln.split(" | ")[0] for ln in out.splitlines() if ln[:3] in ("| 1", "| 2")] == ["| 1", "| 2"]


def test_a_folder_without_pairs_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        shares.main([str(tmp_path)])
