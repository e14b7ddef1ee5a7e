"""Model folders for benchmarks and tests, built locally (no hub access anywhere we run).

- ``llama31_8b_shaped``: the exact Llama-3.1-8B config plus a synthetic tokenizer with the same
  128,256-token vocabulary, for ``--load-format dummy`` (random weights, real shapes and kernels).
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


def llama31_8b_shaped(folder: str | Path) -> Path:
    """Config + tokenizer of Llama-3.1-8B-Instruct's shape; use with ``--load-format dummy``."""
    return _write(Path(folder), LLAMA31_8B_CONFIG, 128000, [128001, 128008, 128009])


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
    ap.add_argument("kind", choices=("llama31-8b-shaped", "tiny"))
    ap.add_argument("folder")
    a = ap.parse_args(argv)
    out = llama31_8b_shaped(a.folder) if a.kind == "llama31-8b-shaped" else tiny_llama(a.folder)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
