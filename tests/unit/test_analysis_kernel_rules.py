"""Kernel classification without a trace: name rules (kernels/rules.py) on names taken from real
traces, and the GEMM split by position in the layer (kernels/sequence.py) on a hand-written layer."""
from __future__ import annotations

import pytest

from vllm_w2ext.analysis.kernels.rules import (FUSED_UNNAMED, GEMM, GEMM_EPILOGUE, classify_activity,
                                               classify_name)
from vllm_w2ext.analysis.kernels.sequence import LayerSequence


@pytest.mark.parametrize("name, category", [
    ("nvjet_sm90_tst_128x256_64x4_1x2_h_bz_coopA_NTN", GEMM),
    ("cutlass::device_kernel<flash::FlashAttnFwdSm90<cutlass::bfloat16_t>>", "attention"),
    ("cublasLt::splitKreduce_kernel<32, 16, int, float>", GEMM_EPILOGUE),
    ("triton_red_fused_fused_add_rms_norm_0", "norm"),
    ("triton_poi_fused_mul_silu_slice_1", "activation"),
    ("triton_poi_fused_3", FUSED_UNNAMED),
    ("triton_poi_fused_cat_clone_2", FUSED_UNNAMED),      # only shape ops: resolved by position
    ("triton_poi_fused_embedding_0", "other"),
    ("triton_tem_fused_addmm_0", GEMM),
    ("void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16>", "kv_cache"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
    ("_gumbel_sample_kernel", "sampling"),
    ("void at::native::reduce_kernel<512, 1, ArgMax>", "sampling"),
    ("_gather_block_tables_kernel", "input_prep"),
    ("Memcpy HtoD (Pageable -> Device)", "memcpy"),
    # SGLang 0.5.17 on the H200 (triton attention backend, results/h200/sglang/profile)
    ("_fwd_grouped_kernel_stage1", "attention"),           # triton decode attention (GQA), split-KV stage 1
    ("_fwd_kernel_stage2", "attention"),
    ("_fwd_kernel", "attention"),                          # triton extend (prefill) attention
    ("void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>(__nv_bfloat16*)", "norm"),
    ("void (anonymous namespace)::store_kvcache<2048l, 2048l, 4, true, long>(StoreKVCacheParams)", "kv_cache"),
    ("void (anonymous namespace)::fused_rope_kernel<true, 128l, true, __nv_bfloat16>", "rotary"),
    ("create_flashinfer_kv_indices_triton", "input_prep"),
    ("some_kernel_nobody_knows", "other"),
])
def test_name_rules(name, category):
    assert classify_name(name) == category


def test_memory_activities_by_event_category():
    # Kineto's category decides for copies and sets, whatever the name says
    assert classify_activity("gpu_memcpy", "nvjet_looking_name") == "memcpy"
    assert classify_activity("gpu_memset", "Memset (Device)") == "memset"
    assert classify_activity("kernel", "triton_poi_fused_mul_silu_slice_1") == "activation"


def _run_layer(kinds: list[str], step=1) -> list[str]:
    """Feed one step's kernels (records are their indexes) and return the final category of each."""
    seq = LayerSequence()
    out = {}
    for i, kind in enumerate(kinds):
        out.update(seq.feed((i,), step, kind))
    out.update(seq.flush())
    return [out[(i,)] for i in range(len(kinds))]


def test_decoder_layer_then_lm_head():
    kinds = ["norm", GEMM, FUSED_UNNAMED, "kv_cache", "attention", GEMM, "norm", GEMM, "activation", GEMM,
             "norm", GEMM, "sampling"]
    assert _run_layer(kinds) == [
        "norm", "gemm_qkv", "rotary", "kv_cache", "attention", "gemm_o", "norm", "gemm_mlp", "activation",
        "gemm_mlp", "norm", "gemm_lm_head", "sampling"]


def test_split_k_reduction_follows_its_gemm():
    kinds = ["attention", GEMM, GEMM_EPILOGUE, "norm", GEMM, GEMM_EPILOGUE, "activation"]
    assert _run_layer(kinds) == ["attention", "gemm_o", "gemm_o", "norm", "gemm_mlp", "gemm_mlp", "activation"]


def test_gemm_waiting_at_a_step_boundary():
    seq = LayerSequence()
    decided = dict(seq.feed(("a",), 1, "attention"))
    decided.update(seq.feed(("b",), 1, "norm"))      # a norm before any O GEMM: not post-attention
    decided.update(seq.feed(("g",), 1, GEMM))        # waits for what follows
    assert ("g",) not in decided
    decided.update(seq.feed(("n",), 2, "norm"))      # a new step: the last step ran attention -> LM head
    assert decided[("g",)] == "gemm_lm_head"
    decided.update(seq.feed(("g2",), 2, GEMM))
    decided.update(seq.flush())                      # end of trace, no attention in step 2 -> plain gemm
    assert decided[("g2",)] == "gemm"
