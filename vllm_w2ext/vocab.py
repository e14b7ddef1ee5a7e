"""The plugin's vocabulary: every span name, attribute key, role, file-name pattern and annotation
format, defined once. Hooks write these names, telemetry and analysis read them; nothing here imports
vLLM, OpenTelemetry or anything else, so every layer (and the export process) may import it.
"""
from __future__ import annotations

import re

# -- roles: which vLLM component a process (or part of one) plays ---------------------------------
FRONT, ENGINE, WORKER = "frontend", "engine_core", "worker"
ROLES = (FRONT, ENGINE, WORKER)


class Span:
    """Span (and NVTX range) names."""
    # front end
    GENERATE = "llm.generate"
    REQUEST = "vllm.request"
    ADD_REQUEST = "front.add_request"
    FRONT_STEP = "front.step"
    PROCESS_OUTPUTS = "front.process_outputs"
    # EngineCore
    STEP = "engine.step"
    SCHEDULE = "engine.schedule"
    EXECUTE = "engine.execute_model"
    SAMPLE = "engine.sample_tokens"
    UPDATE = "engine.update_from_output"
    ENGINE_REQUEST = "engine.request"
    # worker
    WORKER_EXECUTE = "worker.execute_model"
    WORKER_SAMPLE = "worker.sample_tokens"
    FORWARD = "worker.forward"                              # V1 runner's _model_forward
    # V2 runner's execute_model (prepare + forward): no longer recorded (it repeated worker.execute_model);
    # still read in span files and profiler traces of earlier versions
    RUNNER_EXECUTE = "worker.model_runner.execute_model"
    # internal record, never exported: the CUDA-event samples a worker's export thread resolved
    # (``hooks.gpu_timing``), carried to the export side (``steps.idle``) in its data
    DEVICE_SAMPLES = "w2ext.device_samples"


# Records that carry data between the two sides of the plugin and are never exported as spans.
INTERNAL_SPANS = frozenset({Span.DEVICE_SAMPLES})
# Spans whose kind is SERVER in OTLP (the entry of a request into vLLM); every other span is INTERNAL.
SERVER_SPANS = frozenset({Span.REQUEST})
# Worker spans that execute one engine step (the profiler annotation carries the step id).
WORKER_STEP_SPANS = (Span.WORKER_EXECUTE, Span.WORKER_SAMPLE, Span.FORWARD, Span.RUNNER_EXECUTE)


class Attr:
    """Span attribute keys (and the resource attributes of identity)."""
    # identity (resource)
    PROCESS_ROLE = "vllm.process_role"
    VERSION = "vllm.version"
    ENGINE_INDEX = "vllm.engine_index"
    RANK = "vllm.rank"
    LOCAL_RANK = "vllm.local_rank"
    TP_RANK = "vllm.tp_rank"
    PP_RANK = "vllm.pp_rank"
    DP_RANK = "vllm.dp_rank"
    # step
    STEP_ID = "vllm.step.id"
    STEP_BATCH_ID = "vllm.step.batch_id"
    MODEL_EXECUTED = "vllm.step.model_executed"
    NUM_REQS = "vllm.batch.num_reqs"
    PREFILL_TOKENS = "vllm.batch.prefill_tokens"
    DECODE_TOKENS = "vllm.batch.decode_tokens"
    PREEMPTIONS = "vllm.batch.preemptions"
    FINISHED_BEFORE = "vllm.batch.finished_before"
    RUNNING = "vllm.scheduler.running"
    WAITING = "vllm.scheduler.waiting"
    WORKER_TOKENS = "vllm.worker.num_tokens"
    # sampling (VLLM_W2EXT_SAMPLE): steps only counted since the previous recorded step (steps.facts.SkippedSteps)
    SAMPLE_EVERY = "vllm_w2ext.sample.every"                       # N of VLLM_W2EXT_SAMPLE (on steps when N > 2)
    SKIPPED_STEPS = "vllm_w2ext.sample.skipped_steps"              # that scheduled tokens (decode only)
    SKIPPED_IDLE_STEPS = "vllm_w2ext.sample.skipped_idle_steps"    # that scheduled nothing
    SKIPPED_DECODE_TOKENS = "vllm_w2ext.sample.skipped_decode_tokens"
    SKIPPED_CALLS = "vllm_w2ext.sample.skipped_calls"              # front.process_outputs calls only counted
    # CPU view of the time between two model executions (worker side)
    GAP_CPU = "vllm.gap.cpu_s"
    GAP_SCHEDULE = "vllm.gap.schedule_s"
    GAP_UPDATE = "vllm.gap.update_s"
    GAP_ENGINE_IDLE = "vllm.gap.engine_idle_s"
    GAP_WAIT_DEVICE = "vllm.gap.wait_device_s"
    GAP_OTHER = "vllm.gap.other_s"
    # GPU view (CUDA events)
    GPU_FORWARD = "vllm.gpu.forward_s"
    GPU_GAP = "vllm.gpu.gap_s"
    # the device timeline (worker.execute_model of each step; GPU: CUDA events, CPU build: the forward)
    DEVICE_BUSY = "vllm.device.busy_s"              # device time of this step's forward
    DEVICE_IDLE = "vllm.device.idle_s"              # device idle between the previous forward and this one
    DEVICE_IDLE_CAUSE = "vllm.device.idle_cause"    # the cause holding most of that idle time
    DEVICE_CLOCK = "vllm.device.clock"              # cuda_events | forward_spans (the CPU build)
    DEVICE_IDLE_START = "vllm.device.idle_start_ns"  # that idle time on the wall clock (ns): start
    DEVICE_IDLE_END = "vllm.device.idle_end_ns"      # and end (the forward's start)
    DEVICE_IDLE_UNKNOWN = "vllm.device.idle_unknown"  # True: no execution recorded before this one (the run's
    # first, after a pause, the first of a sampled pair): its idle is not measured (0 here), so ratios of busy
    # to idle leave this step out
    # (per cause: device_idle_attr(cause) -> "vllm.device.idle.<cause>_s")
    BATCH_RESUMED_TOKENS = "vllm.batch.resumed_tokens"  # prompt tokens recomputed for resumed requests
    # requests
    REQUEST_ID = "vllm.request.id"
    REQUEST_ABORTED = "vllm.request.aborted"
    FIRST_STEP = "vllm.request.first_step"
    LAST_STEP = "vllm.request.last_step"
    NUM_STEPS = "vllm.request.num_steps"
    QUEUE_S = "vllm.request.queue_s"                # arrival -> first scheduled
    PREFILL_S = "vllm.request.prefill_s"            # first scheduled -> first token
    DECODE_S = "vllm.request.decode_s"              # first token -> finished
    REQUEST_PREEMPTIONS = "vllm.request.preemptions"
    STEPS_WITH_PREFILL = "vllm.request.steps_with_prefill"   # its decode steps that carried others' prefill
    PREFILL_INTERFERENCE_S = "vllm.request.prefill_interference_s"   # estimate: what those prefills added
    FINISH_REASON = "vllm.request.finish_reason"    # stop | length | abort | error
    OUTPUT_TOKENS = "vllm.request.output_tokens"
    REQUEST_PROMPT_TOKENS = "vllm.request.prompt_tokens"
    NUM_OUTPUTS = "vllm.num_outputs"
    MAX_TOKENS = "gen_ai.request.max_tokens"
    PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
    COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
    PROMPT = "gen_ai.prompt"


class Event:
    """Events on a request's engine.request span (lifecycle, wall clock)."""
    QUEUED = "queued"
    SCHEDULED = "scheduled"               # first time
    FIRST_TOKEN = "first_token"
    PREEMPTED = "preempted"               # attribute "reason"
    RESUMED = "resumed"
    FINISHED = "finished"                 # attribute "reason"


# Causes of device idle between two forwards, in the order they claim an idle microsecond when more
# than one applies. frontend and no_work both mean "the EngineCore had no request to run"; only
# `explain`, which reads the front end's trace file too, tells them apart (the front end was busy).
IDLE_CAUSES = ("prepare_inputs", "ipc", "schedule", "update_from_output", "sample", "engine_loop",
               "no_work", "frontend", "unattributed")


def device_idle_attr(cause: str) -> str:
    return f"vllm.device.idle.{cause}_s"


FINISH_REASONS = ("stop", "length", "abort", "error")

# The CPU gap's parts (metric label ``part``) and the span attribute of each.
GAP_PARTS = {"schedule": Attr.GAP_SCHEDULE, "update": Attr.GAP_UPDATE, "engine_idle": Attr.GAP_ENGINE_IDLE,
             "wait_device": Attr.GAP_WAIT_DEVICE, "other": Attr.GAP_OTHER}

# -- files and annotations ------------------------------------------------------------------------
TRACE_FILE = "w2ext-{pid}.pftrace"                      # one per process in VLLM_W2EXT_TRACE_DIR
TRACE_FILE_RE = re.compile(r"^w2ext-(\d+)\.pftrace$")
TRACE_FILE_GLOB = "w2ext-*.pftrace"
NVTX_DOMAIN = "vllm_w2ext"


def trace_file_name(pid: int) -> str:
    return TRACE_FILE.format(pid=pid)


def profiler_annotation(name: str, step: int) -> str:
    """The torch-profiler ``record_function`` name of one of our ranges: ``<span name> #<step>``."""
    return name if step < 0 else f"{name} #{step}"


# Parses profiler_annotation's output for one of our ranges.
ANNOTATION_RE = re.compile(r"^((?:worker|engine|front)\.[\w.]+) #(\d+)$")

# -- read back by analysis ------------------------------------------------------------------------
# The role of a span by its name's prefix, where the trace file's track does not say (front-end spans
# have several prefixes: llm., vllm., front.; every name not listed here is the front end's).
ROLE_BY_SPAN_PREFIX = (("engine.", ENGINE), ("worker.", WORKER))
# Attribute-key prefixes of an engine step's batch and scheduler state (Attr.NUM_REQS ... Attr.WAITING).
STEP_STATE_ATTR_PREFIXES = ("vllm.batch", "vllm.scheduler")
# Debug annotation of a trace-file slice that carries the engine step id (the request id is Attr.REQUEST_ID).
TRACE_STEP_ARG = "step"
