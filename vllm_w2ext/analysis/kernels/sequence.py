"""Split GEMMs into QKV / O / MLP / LM-head projections by their position in a decoder layer.

Why position: under CUDA graphs Kineto records no shapes for the kernels inside a graph, and cuBLAS picks
the same ``nvjet`` kernel for different projections, so neither names nor shapes can tell a QKV GEMM from an
MLP GEMM. The launch order of a (Llama-like) decoder layer can:

    norm -> GEMM(qkv) -> [rotary / unnamed inductor kernels] -> kv_cache write -> attention
         -> GEMM(o) -> norm -> GEMM(gate_up) -> activation -> GEMM(down) -> norm -> next layer ...
    ... final norm -> GEMM(lm_head) -> sampling

Rules, applied per device in GPU start-time order and reset at every step boundary:
- a GEMM after attention (and before the next norm) is ``gemm_o``;
- a GEMM after the norm that follows attention and its O GEMM, or after an activation, is ``gemm_mlp``
  (so attention metadata kernels such as ``flash::prepare_varlen_num_blocks`` at the start of a step
  do not make the first layer's input norm look like a post-attention norm);
- a GEMM after any other norm (or at the start of a step) waits: if attention, the KV-cache write or a
  rotary kernel comes next it was ``gemm_qkv``; if a norm, activation or sampling kernel, the end of the
  step or of the trace comes next it was ``gemm_lm_head`` when the step already ran attention (the logits
  projection after the last layer), otherwise plain ``gemm``;
- a split-K reduction (``splitKreduce``) takes the category of the GEMM before it;
- an inductor kernel without op names (``triton_poi_fused_3``) between a QKV GEMM and attention is
  ``rotary`` (vLLM's native rotary embedding compiled by inductor: slices, muls, adds), else ``other``.
What this cannot know: architectures whose layer order differs (parallel attention/MLP blocks, MoE routing
GEMMs are counted as ``gemm_mlp``), and GEMMs on a device whose attention kernels were not recognised
(they stay ``gemm``).
"""
from __future__ import annotations

from vllm_w2ext.analysis.kernels.rules import FUSED_UNNAMED, GEMM, GEMM_EPILOGUE

QKV_FOLLOWERS = ("attention", "kv_cache", "rotary")
TAIL_FOLLOWERS = ("norm", "activation", "sampling", "communication")
MAX_PENDING = 512          # bound on kernels held while a GEMM waits for what follows it


class LayerSequence:
    """Per-device state machine. ``feed`` takes (record, class from the name) in start-time order and
    returns the (record, final category) pairs it can decide; ``flush`` decides the rest."""

    def __init__(self) -> None:
        self.step = object()
        self._reset()

    def _reset(self) -> None:
        self.anchor: str | None = None        # attention | activation | norm_pre | norm_post
        self.last_gemm = "gemm"
        self.seen_attention = False
        self.pending: list[tuple[tuple, str]] = []

    def _resolve(self, follower: str | None) -> list[tuple[tuple, str]]:
        if not self.pending:
            return []
        if follower in QKV_FOLLOWERS:
            gemm, unnamed = "gemm_qkv", "rotary"
        elif self.seen_attention and (follower is None or follower in TAIL_FOLLOWERS):
            gemm, unnamed = "gemm_lm_head", "other"
        else:
            gemm, unnamed = "gemm", "other"
        out = [(rec, unnamed if kind == FUSED_UNNAMED else gemm) for rec, kind in self.pending]
        self.pending = []
        self.last_gemm = gemm
        return out

    def feed(self, rec: tuple, step, kind: str) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        if step != self.step:
            out += self._resolve(None)
            self._reset()
            self.step = step
        if kind in (GEMM, GEMM_EPILOGUE, FUSED_UNNAMED):
            if self.pending:
                self.pending.append((rec, kind))
                if len(self.pending) > MAX_PENDING:
                    out += self._resolve("overflow")
                return out
            if kind == GEMM_EPILOGUE:
                return [(rec, self.last_gemm)]
            if kind == FUSED_UNNAMED:
                return [(rec, "other")]
            if self.anchor == "attention":
                self.last_gemm = "gemm_o"
            elif self.anchor in ("activation", "norm_post"):
                self.last_gemm = "gemm_mlp"
            else:
                self.pending.append((rec, kind))
                return out
            return [(rec, self.last_gemm)]
        if kind in QKV_FOLLOWERS or kind in TAIL_FOLLOWERS:
            out += self._resolve(kind)
        if kind == "attention":
            self.anchor, self.seen_attention = "attention", True
        elif kind == "norm":
            post = self.anchor == "attention" and self.last_gemm == "gemm_o"
            self.anchor = "norm_post" if post else "norm_pre"
        elif kind == "activation":
            self.anchor = "activation"
        out.append((rec, kind))
        return out

    def flush(self) -> list[tuple[tuple, str]]:
        return self._resolve(None)
