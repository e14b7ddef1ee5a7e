"""Model folders for benchmarks and tests, built locally (no hub access anywhere we run).

- ``llama31_8b_shaped``: the exact Llama-3.1-8B config plus a synthetic tokenizer with the same
  128,256-token vocabulary, for ``--load-format dummy`` (random weights, real shapes and kernels).
- ``llama32_1b_shaped``: the exact Llama-3.2-1B(-Instruct) config (16 layers, hidden 2048, tied
  embeddings, llama3 RoPE factor 32) with the same synthetic 128,256-token tokenizer.
- ``layers=N`` (CLI ``--layers N``) on either writes ``num_hidden_layers: N`` into the config, e.g. the
  4-layer Llama-3.1-8B-shaped model (the same as vLLM's ``--hf-overrides '{"num_hidden_layers":4}'``).
- ``tiny_llama``: a 2-layer Llama (head_dim 64) with real random weights for CPU tests; vocab 10,240
  so ``vllm bench latency`` (prompts of random ids < 10,000) works.

The synthetic tokenizer is a word-level ``tokenizers`` model: token id ``i`` is the word ``t<i>``,
so ids round-trip exactly through text (``decode`` then ``encode``).
"""
from __future__ import annotations

import json
from pathlib import Path

LLAMA31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256,
}

LLAMA32_1B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256,
}

TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 128,
    "intermediate_size": 256, "max_position_embeddings": 2048, "model_type": "llama",
    "num_attention_heads": 2, "num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 64,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "float32", "vocab_size": 10240, "bos_token_id": 1, "eos_token_id": 2,
}


def write_tokenizer(folder: Path, vocab_size: int, bos_id: int, eos_ids: list[int]) -> None:
    """A word-level tokenizer over words ``t0 .. t{vocab_size-1}``; specials keep their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {bos_id: "<|begin_of_text|>", eos_ids[0]: "<|end_of_text|>"}
    for e in eos_ids[1:]:
        specials[e] = f"<|eot_{e}|>"
    vocab = {specials.get(i, f"t{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=f"t{vocab_size - 1}"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[bos_id],
                                   eos_token=specials[eos_ids[0]], unk_token=f"t{vocab_size - 1}",
                                   pad_token=specials[eos_ids[0]])
    fast.add_special_tokens({"additional_special_tokens": [specials[e] for e in eos_ids[1:]]}) \
        if len(eos_ids) > 1 else None
    fast.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    fast.save_pretrained(str(folder))


def _write(folder: Path, cfg: dict, bos: int, eos: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": eos}))
    write_tokenizer(folder, cfg["vocab_size"], bos, eos)
    return folder


def _layers(cfg: dict, layers: int | None) -> dict:
    if layers is None:
        return cfg
    if layers < 1:
        raise ValueError(f"layers: expected an integer >= 1, got {layers}")
    return dict(cfg, num_hidden_layers=layers)


def llama31_8b_shaped(folder: str | Path, layers: int | None = None) -> Path:
    """Config + tokenizer of Llama-3.1-8B-Instruct's shape; use with ``--load-format dummy``.
    ``layers``: ``num_hidden_layers`` instead of 32."""
    return _write(Path(folder), _layers(LLAMA31_8B_CONFIG, layers), 128000, [128001, 128008, 128009])


def llama32_1b_shaped(folder: str | Path, layers: int | None = None) -> Path:
    """Config + tokenizer of Llama-3.2-1B-Instruct's shape; use with ``--load-format dummy``.
    ``layers``: ``num_hidden_layers`` instead of 16."""
    return _write(Path(folder), _layers(LLAMA32_1B_CONFIG, layers), 128000, [128001, 128008, 128009])


def tiny_llama(folder: str | Path, seed: int = 0, weights: bool = True) -> Path:
    """The CPU test model, with real random float32 weights (safetensors) unless ``weights=False``."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (not weights or (folder / "model.safetensors").exists()):
        return folder
    _write(folder, TINY_CONFIG, 1, [2])
    if weights:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**TINY_CONFIG))
        model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Build a model folder for the lab or the tests")
    ap.add_argument("kind", choices=("llama31-8b-shaped", "llama32-1b-shaped", "tiny"))
    ap.add_argument("folder")
    ap.add_argument("--layers", type=int, default=None,
                    help="num_hidden_layers in the config (the shaped models; e.g. 4 for the 4-layer 8B)")
    a = ap.parse_args(argv)
    if a.kind == "tiny":
        if a.layers is not None:
            ap.error("--layers: only for the shaped models (tiny has real weights for 2 layers)")
        out = tiny_llama(a.folder)
    else:
        out = (llama31_8b_shaped if a.kind == "llama31-8b-shaped" else llama32_1b_shaped)(a.folder, a.layers)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
