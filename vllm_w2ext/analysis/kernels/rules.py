"""Kernel name -> category rules for ``vllm-w2ext analyze`` (versioned: bump RULES_VERSION on any change).

Where the rules come from
- vLLM's Nsight Systems classifier, ``tools/profiler/nsys_profile_tools/vllm_engine_model.json`` (model
  "llama"): ``gemm|nvjet`` -> gemm, ``_norm_|Norm`` -> norm, ``act_and_mul_`` -> activation, ``Rotary`` ->
  rope, ``flash|fmha`` -> attn, ``ncclDevKernel|cross_device_reduce`` -> communication; its "gpt-oss" table
  adds ``FlashAttn``, ``flash::prepare_varlen`` (attention) and ``splitKreduce`` (part of a split-K GEMM);
  ``CatArrayBatched|prepare_inputs`` -> "prepare_next" (our ``input_prep``).
- HTA (``hta/utils/utils.py``): ``^nccl.*Kernel`` is communication; ``Memcpy``/``Memset`` are memory.
- Our H100 traces (vLLM 0.26.0, torch.compile + CUDA graphs, Llama-3.1-8B shape): cuBLAS ``nvjet_sm90_*``
  GEMMs and ``cublasLt::splitKreduce_kernel``; ``cutlass::device_kernel<flash::FlashAttnFwdSm90...>`` and
  ``FlashAttnFwdCombine``; ``vllm::reshape_and_cache_flash_kernel``; inductor kernels such as
  ``triton_red_fused_fused_add_rms_norm_0`` and ``triton_poi_fused_mul_silu_slice_1``; the V2 model runner's
  Triton input kernels (``_gather_block_tables_kernel``, ``_compute_slot_mappings_kernel``...) and sampler
  (``_gumbel_sample_kernel``, an ArgMax ``reduce_kernel``).

Inductor names (``triton_{poi,red,per,tem}_fused_<ops>_<n>``) are classified by the op names inside them,
first match in OP_RULES order (a fused add + RMSNorm is a norm, ``mul_silu`` an activation). Inductor
kernels whose names carry no op (``triton_poi_fused_3``: torch's descriptive names off) and GEMMs are
resolved by position in the layer, see sequence.py.

What a name alone cannot say: which projection a GEMM computes. cuBLAS picks kernels by shape, and under
CUDA graphs the trace has no shapes (Kineto records input shapes only for eager CPU ops), so the split
QKV / O / MLP / LM head is positional (sequence.py). Everything unmatched is ``other``.
"""
from __future__ import annotations

import re
from functools import lru_cache

RULES_VERSION = "2026.11-3"

# Final categories, in report order.
CATEGORIES = (
    "gemm_qkv", "gemm_o", "gemm_mlp", "gemm_lm_head", "gemm",
    "attention", "kv_cache", "norm", "activation", "rotary", "sampling", "input_prep",
    "communication", "memcpy", "memset", "other",
)
GEMM_CATEGORIES = ("gemm_qkv", "gemm_o", "gemm_mlp", "gemm_lm_head", "gemm")

# Intermediate classes that sequence.py resolves by position.
GEMM = "gemm"                 # any GEMM: split into gemm_qkv / gemm_o / gemm_mlp / gemm_lm_head
GEMM_EPILOGUE = "gemm_epilogue"   # split-K reduction: same category as the GEMM before it
FUSED_UNNAMED = "fused_unnamed"   # inductor kernel without op names: rotary if inside QKV -> attention

# (category, regex searched in the kernel name, source). First match wins, so order matters:
# communication and attention before GEMM (FlashAttention kernels are cutlass::device_kernel<flash::...>),
# input preparation before sampling (_combine_sampled_and_draft_tokens_kernel prepares the next input).
NAME_RULES: list[tuple[str, str, str]] = [
    ("communication", r"^nccl|ncclDevKernel|ncclKernel|cross_device_reduce|custom_all_reduce|all_reduce|"
                      r"allreduce|AllGather|ReduceScatter|all_gather", "vLLM nsys llama + HTA ^nccl.*Kernel"),
    ("kv_cache", r"reshape_and_cache|concat_and_cache|copy_blocks|swap_blocks|store_kvcache",
     "vLLM csrc/cache_kernels.cu; SGLang's JIT KV-cache store (store_kvcache)"),
    # before attention: FlashInfer's norm kernels (SGLang's RMSNorm) would match its "flashinfer" name
    ("norm", r"flashinfer::norm::|RMSNormKernel", "SGLang 0.5.17 H200 trace (flashinfer::norm::FusedAddRMSNormKernel)"),
    ("input_prep", r"compute_position_kernel|clamp_position|write_req_to_token_pool|get_num_kv_splits|"
                   r"create_flashinfer_kv_indices", "SGLang 0.5.17 H200 trace (forward-batch preparation)"),
    ("attention", r"flash::|FlashAttn|flash_fwd|flash_attn|fmha|paged_attention|_attn_fwd|_fwd_kernel|"
                  r"_fwd_grouped_kernel|"
                  r"unified_attention|flashinfer|BatchDecode|BatchPrefill|xformers|cudnn.*[Aa]ttention|"
                  r"attention_kernel|_mla_", "vLLM nsys llama/gpt-oss (flash|fmha, FlashAttn, _mla_)"),
    (GEMM_EPILOGUE, r"splitKreduce|splitK_reduce", "vLLM nsys gpt-oss (splitKreduce) + H100 traces"),
    (GEMM, r"nvjet|gemm|Gemm|GEMM|cublasLt|cutlass.*tensorop|xmma|wgmma|matmul|_mm_|bmm|"
           r"^triton_tem_fused_.*mm", "vLLM nsys llama (gemm|nvjet) + cuBLAS/CUTLASS names"),
    ("input_prep", r"prepare_inputs|prepare_pos|prepare_prefill|combine_sampled|gather_block_tables|"
                   r"compute_slot_mapping|post_update|apply_write|num_sampled_and_rejected|CatArrayBatched",
     "vLLM nsys prepare_next + V2 model runner input kernels"),
    ("sampling", r"sampl|gumbel|top_?k|top_?p|ArgMax|argmax|penalt|logprob|rejection",
     "V2 model runner sampler (_gumbel_sample_kernel), greedy ArgMax reduce"),
    ("norm", r"rms_?norm|layer_?norm|_norm_|Norm", "vLLM nsys llama (_norm_|Norm)"),
    ("activation", r"act_and_mul|silu|gelu|swiglu|SiluAndMul|relu", "vLLM nsys llama (act_and_mul_)"),
    ("rotary", r"[Rr]otary|rope|_pos_encoding", "vLLM nsys llama (Rotary), vLLM pos_encoding_kernels.cu"),
    ("memcpy", r"^[Mm]emcpy|memcpy32|copy_kernel|CatArray", "HTA memory kernels + CUDA graph copy nodes"),
    ("memset", r"^[Mm]emset", "HTA memory kernels"),
]

# Op names inside an inductor ``triton_*_fused_<ops>_<n>`` name, first match wins.
OP_RULES: list[tuple[str, str]] = [
    ("norm", r"rms_norm|rmsnorm|layer_norm|native_layer_norm|group_norm|_norm$|^norm|rsqrt|var_mean"),
    ("activation", r"silu|gelu|swiglu|act_and_mul|relu|sigmoid|tanh"),
    ("rotary", r"rotary|rope|cos|sin"),
    ("sampling", r"argmax|topk|gumbel|multinomial|exponential|softmax"),
    (GEMM, r"^mm$|^addmm$|^bmm$|_mm$|_addmm$"),
    ("kv_cache", r"reshape_and_cache|index_put|scatter"),
]

_TRITON = re.compile(r"^triton_(?:poi|red|per|tem|for)_fused_?(?P<ops>.*?)_?\d*$")
_NAME = [(cat, re.compile(rx)) for cat, rx, _ in NAME_RULES]
_OPS = [(cat, re.compile(rx)) for cat, rx in OP_RULES]


def classify_name(name: str) -> str:
    """Category of a kernel from its name alone: a final category, or GEMM / GEMM_EPILOGUE /
    FUSED_UNNAMED for sequence.py to resolve by position."""
    m = _TRITON.match(name)
    if m:
        ops = m.group("ops")
        if name.startswith("triton_tem_") and re.search(r"(^|_)(mm|addmm|bmm)(_|$)", ops):
            return GEMM
        words = [w for w in ops.split("_") if w and not w.isdigit()]
        joined = "_".join(words)
        for cat, rx in _OPS:
            if rx.search(joined) or any(rx.search(w) for w in words):
                return cat
        meaningful = [w for w in words if w not in ("to", "copy", "clone", "slice", "view", "cat", "add",
                                                    "mul", "div", "sub", "unsqueeze", "squeeze", "select",
                                                    "split", "permute", "transpose", "expand", "embedding")]
        if not words:
            return FUSED_UNNAMED
        return "other" if meaningful or "embedding" in words else FUSED_UNNAMED
    for cat, rx in _NAME:
        if rx.search(name):
            return cat
    return "other"


@lru_cache(maxsize=1 << 16)           # kernel names repeat: classify each distinct name once
def classify_activity(event_cat: str, name: str) -> str:
    """Category of a GPU activity from its Kineto event category and name."""
    if event_cat == "gpu_memcpy":
        return "memcpy"
    if event_cat == "gpu_memset":
        return "memset"
    return classify_name(name)
