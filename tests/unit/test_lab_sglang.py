"""The lab's SGLang comparison (experiment 8): the plan puts vLLM's side on an engine that already runs
(no extra start), and the report derives vLLM's prefill and decode from its output-1 and full runs, next
to SGLang's bench_one_batch rows; numbers worked out by hand."""
import pytest

from vllm_w2ext.lab.experiments import plan
from vllm_w2ext.lab.report.blocks import _sglang
from vllm_w2ext.lab.report.summary import sglang_vs_vllm


def test_plan_folds_vllms_side_into_an_existing_engine():
    sessions = plan(["latency", "sglang"], "both", "full", None, "x.json")
    assert sum(x.engine_starts for x in sessions) == 2                  # latency stock + plugin, nothing more
    host = next(x for x in sessions if x.name == "lat_stock")
    names = [r.name for r in host.runs]
    assert names[-6:] == ["sgl_vllm_prefill_bs32", "sgl_vllm_bs32", "sgl_vllm_prefill_bs64", "sgl_vllm_bs64",
                          "sgl_vllm_prefill_bs128", "sgl_vllm_bs128"]
    full = next(r for r in host.runs if r.name == "sgl_vllm_bs64").params
    assert (full["input_len"], full["output_len"], full["batch_size"]) == (512, 256, 64)
    bench = next(x for x in sessions if x.name == "sglang_bench_one_batch")
    assert bench.kind == "local" and bench.runs[0].params == {"batch_sizes": [32, 64, 128], "input_len": 512,
                                                               "output_len": 256}


def _run(name, result, experiment="sglang"):
    return {"experiment": experiment, "status": "ok", "result": result}


def test_vllm_prefill_and_decode_from_two_runs_beside_sglang_rows():
    runs = {"sgl_vllm_prefill_bs32": _run("p", {"avg_latency": 0.5, "batch_size": 32, "input_len": 512, "output_len": 1}),
            "sgl_vllm_bs32": _run("f", {"avg_latency": 3.05, "batch_size": 32, "input_len": 512, "output_len": 256}),
            "sglang_bench_one_batch": _run("s", {"rows": [
                {"batch_size": 32, "input_len": 512, "output_len": 256, "prefill_latency": 0.4,
                 "prefill_throughput": 40960.0, "median_decode_latency": 0.009, "median_decode_throughput": 3555.6,
                 "total_latency": 2.7}]})}
    sg = sglang_vs_vllm(runs)
    (row,) = sg["rows"]
    v, g = row["vllm"], row["sglang"]
    assert v["prefill_tok_s"] == pytest.approx(32 * 512 / 0.5)            # 32,768 tok/s
    assert v["decode_step_s"] == pytest.approx((3.05 - 0.5) / 255)        # 10 ms per step
    assert v["decode_tok_s"] == pytest.approx(32 / 0.01)
    assert (g["prefill_latency_s"], g["decode_tok_s"]) == (0.4, 3555.6) and sg["skipped"] is None
    table = next(blk for blk in _sglang({"sglang": sg}) if blk[0] == "table")
    assert table[2][0][:3] == ["32", "vllm", "500.0"] and table[2][1][:2] == ["32", "sglang"]


def test_skipped_sglang_says_why_and_keeps_vllms_side():
    runs = {"sgl_vllm_prefill_bs2": _run("p", {"avg_latency": 0.2, "batch_size": 2, "input_len": 32, "output_len": 1}),
            "sgl_vllm_bs2": _run("f", {"avg_latency": 0.9, "batch_size": 2, "input_len": 32, "output_len": 8}),
            "sglang_bench_one_batch": _run("s", {"skipped": "needs a CUDA GPU"})}
    sg = sglang_vs_vllm(runs)
    assert sg["skipped"] == "needs a CUDA GPU" and "sglang" not in sg["rows"][0]
    text = " ".join(str(x) for blk in _sglang({"sglang": sg}) for x in blk[1:])
    assert "SGLang skipped: needs a CUDA GPU" in text
    assert sglang_vs_vllm({"lat_bs1_stock": _run("x", {}, "latency")}) is None


class _Lab:
    """The two things the SGLang step reads from the lab: its target and its command-line settings."""
    def __init__(self, tmp_path, gpu, sglang_env=None, sglang_args=""):
        import types
        self.out = tmp_path / "lab"
        self.target = types.SimpleNamespace(gpu=gpu, model=tmp_path / "model", dummy_weights=True)
        self.lab_args = {"sglang_env": sglang_env, "sglang_args": sglang_args}


def _fake_sglang(tmp_path):
    """An importable ``sglang.bench_one_batch`` in a folder of its own that writes one row per batch size with
    the arguments it was given, and an env file that puts that folder on PYTHONPATH (as sglang_stage.sh's
    /tmp/sglang-env.sh does with the staged site)."""
    site = tmp_path / "sgl-site" / "sglang"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (site / "bench_one_batch.py").write_text(
        "import argparse, json, sys\n"
        "if __name__ == '__main__':\n"
        "    ap = argparse.ArgumentParser(); ap.add_argument('--batch-size', type=int, nargs='+')\n"
        "    ap.add_argument('--result-filename'); ap.add_argument('--attention-backend')\n"
        "    a, rest = ap.parse_known_args()\n"
        "    with open(a.result_filename, 'a') as f:\n"
        "        for b in a.batch_size:\n"
        "            f.write(json.dumps({'batch_size': b, 'attention_backend': a.attention_backend,\n"
        "                                'argv': sys.argv[1:]}) + '\\n')\n")
    env = tmp_path / "sglang-env.sh"
    env.write_text(f"export PYTHONPATH={site.parent}${{PYTHONPATH:+:$PYTHONPATH}}\n")
    return env


def test_sglang_runs_through_its_env_file_only(tmp_path):
    """SGLang's own packages reach its process through --sglang-env, never the lab's (vLLM's) process, and
    --sglang-args reach bench_one_batch."""
    import importlib.util
    from vllm_w2ext.lab.experiments import Run
    from vllm_w2ext.lab.experiments_local import sglang, sglang_unavailable
    env = _fake_sglang(tmp_path)
    assert importlib.util.find_spec("sglang") is None                     # not in this (the lab's) process
    assert "not installed" in sglang_unavailable(_Lab(tmp_path, gpu=True))
    assert "CUDA GPU" in sglang_unavailable(_Lab(tmp_path, gpu=False, sglang_env=str(env)))
    lab = _Lab(tmp_path, gpu=True, sglang_env=str(env), sglang_args="--attention-backend triton")
    assert sglang_unavailable(lab) is None
    (lab.out / "raw").mkdir(parents=True)
    run = Run("sglang_bench_one_batch", "sglang", "-", {"batch_sizes": [32, 64], "input_len": 512, "output_len": 256})
    res = sglang(lab, run)
    assert [r["batch_size"] for r in res["rows"]] == [32, 64]
    assert {r["attention_backend"] for r in res["rows"]} == {"triton"}
    argv = res["rows"][0]["argv"]
    assert argv[argv.index("--input-len") + 1] == "512" and "--load-format" in argv


def test_sglang_env_that_does_not_import_says_why(tmp_path):
    from vllm_w2ext.lab.experiments_local import sglang_unavailable
    env = tmp_path / "bad-env.sh"
    env.write_text("export PYTHONPATH=/nonexistent\n")
    why = sglang_unavailable(_Lab(tmp_path, gpu=True, sglang_env=str(env)))
    assert why.startswith("sglang does not import with --sglang-env") and "ModuleNotFoundError" in why
