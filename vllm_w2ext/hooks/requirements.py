"""What each hook reads from vLLM, as data: the parameters its ``pre`` takes from the wrapped method's
arguments, and the attributes it (and ``steps.facts.read_step``) reads from vLLM's objects.

Kept next to the hook tables so a change to a ``pre`` function changes this table in the same diff.
``vllm_w2ext.compat.static_check`` checks every row against a vLLM source tree or wheel without
importing vLLM (``vllm-w2ext doctor --vllm-source PATH``); tests/unit/test_static_check_requirements.py
checks that every name here is a hook of ``all_hooks()``.

A *soft* requirement degrades a feature when absent (an attribute read with ``getattr(...,
default)``, a ``kwargs.get``); a hard one breaks the hook (``args[0] if args else kwargs[name]``, a
plain attribute read)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """A parameter of the wrapped method that the hook's ``pre`` reads."""
    name: str
    position: int | None = 0        # index among the parameters after ``self``; None: read by keyword only
    soft: bool = False


@dataclass(frozen=True)
class Attrs:
    """Attributes read from instances of ``module.cls`` (a dataclass field, a class-level annotation,
    a ``self.x = ...`` in a method, a property or method all count)."""
    module: str
    cls: str
    names: tuple[str, ...] = ()
    soft: tuple[str, ...] = ()
    any_of: tuple[tuple[str, ...], ...] = ()   # per group: at least one must exist (version variants)
    sets_own: bool = False          # the plugin sets attributes of its own on instances: no __slots__


OUTPUT = "vllm.v1.core.sched.output"
SCHEDULER = "vllm.v1.core.sched.scheduler"

# steps.facts.read_step on Scheduler.schedule's result, and the hooks' stamps on it.
SCHEDULER_OUTPUT = Attrs(OUTPUT, "SchedulerOutput",
                         ("scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens",
                          "total_num_scheduled_tokens", "scheduled_spec_decode_tokens", "preempted_req_ids",
                          "finished_req_ids"),
                         sets_own=True)      # engine_core.STAMP / DISPATCH
CACHED_REQUEST_DATA = Attrs(OUTPUT, "CachedRequestData", ("req_ids", "num_computed_tokens"),
                            soft=("num_output_tokens",),
                            any_of=(("resumed_req_ids", "resumed_from_preemption"),))
NEW_REQUEST_DATA = Attrs(OUTPUT, "NewRequestData", ("req_id", "num_computed_tokens"))
# The scheduler's requests, read at schedule (new requests, prompt completion) and when freed.
REQUEST_SCHEDULED = Attrs("vllm.v1.request", "Request", ("num_prompt_tokens",),
                          soft=("arrival_time", "trace_headers"))
REQUEST_FREED = Attrs("vllm.v1.request", "Request", ("request_id", "status", "num_output_tokens"))
SCHEDULER_QUEUES = Attrs(SCHEDULER, "Scheduler", ("requests", "running", "waiting"))
# The engine step's pre takes the scheduler from the EngineCore (the schedule's consumer gets no self) and its queues.
ENGINE_CORE = Attrs("vllm.v1.engine.core", "EngineCore", ("scheduler",))
# Front end: the request given to OutputProcessor.add_request, and its per-request state.
ENGINE_CORE_REQUEST = Attrs("vllm.v1.engine", "EngineCoreRequest", ("request_id", "trace_headers"),
                            soft=("sampling_params", "prompt_token_ids"))
# The worker's sample_tokens takes the step's end event from the V2 runner's output (hooks/end_event.SOURCES):
# without it, the plugin records its own (soft).
ASYNC_OUTPUT = Attrs("vllm.v1.worker.gpu.async_utils", "AsyncOutput", soft=("copy_event",))
REQUEST_STATE = Attrs("vllm.v1.engine.output_processor", "RequestState", ("request_id",),
                      soft=("detokenizer", "prompt"))

_SCHEDULER_OUTPUT_ARG = (Param("scheduler_output", 0),)

# hook name (or "prefix.*": every hook under it) -> parameters its pre reads (hooks absent here read none)
PARAMS: dict[str, tuple[Param, ...]] = {
    "engine.update_from_output": _SCHEDULER_OUTPUT_ARG,
    "engine.free_request": (Param("request", 0),),
    "engine.execute_model.*": _SCHEDULER_OUTPUT_ARG,       # one hook per executor class
    "worker.execute_model": _SCHEDULER_OUTPUT_ARG,
    "worker.profile": (Param("is_start", 0),),
    "front.async_llm_init": (Param("client_index", None, soft=True), Param("client_count", None, soft=True)),
    "front.llm_engine_add_request": (Param("trace_headers", None, soft=True),),
    "front.async_add_request": (Param("trace_headers", None, soft=True),),
    "front.request_start": (Param("request", 0),),
    "front.request_finish": (Param("req_state", 0),),
    "front.request_abort": (Param("request_ids", 0),),
    "front.process_outputs": (Param("engine_core_outputs", 0),),
    "front.http_trace_headers": (Param("headers", 0),),
    "front.http_trace_headers_generate": (Param("headers", 0),),
    "front.http_trace_headers_pooling": (Param("headers", 0),),
}

# hook name (or "prefix.*") -> vLLM classes whose attributes it reads
ATTRS: dict[str, tuple[Attrs, ...]] = {
    "engine.schedule": (SCHEDULER_OUTPUT, CACHED_REQUEST_DATA, NEW_REQUEST_DATA, REQUEST_SCHEDULED,
                        SCHEDULER_QUEUES),
    "engine.free_request": (REQUEST_FREED,),
    "engine.step": (ENGINE_CORE, SCHEDULER_QUEUES),
    "engine.step_with_batch_queue": (ENGINE_CORE, SCHEDULER_QUEUES),
    "front.request_start": (ENGINE_CORE_REQUEST,),
    "front.request_finish": (REQUEST_STATE,),
    "worker.sample_tokens": (ASYNC_OUTPUT,),
}

# hook name -> subclasses (module, class) that must inherit the wrapped method, not override it: the
# hook wraps the base class, so an override runs without it (a warning: only that platform loses it).
INHERITED_BY: dict[str, tuple[tuple[str, str], ...]] = {
    **{name: (("vllm.v1.worker.cpu_worker", "CPUWorker"), ("vllm.v1.worker.xpu_worker", "XPUWorker"))
       for name in ("worker.execute_model", "worker.sample_tokens", "worker.profile")},
    "worker.forward_v1": (("vllm.v1.worker.cpu_model_runner", "CPUModelRunner"),),
}

# Optional hooks of which at least one must attach, per feature (version variants of one hook).
ONE_OF: dict[str, tuple[str, ...]] = {
    "client traceparent of served requests": ("front.http_trace_headers", "front.http_trace_headers_generate",
                                              "front.http_trace_headers_pooling"),
}


def lookup(table: dict, hook_name: str) -> tuple:
    """The row of ``hook_name`` in one of the tables above (exact name first, then "prefix.*")."""
    if hook_name in table:
        return table[hook_name]
    for key, row in table.items():
        if key.endswith(".*") and hook_name.startswith(key[:-1]):
            return row
    return ()
