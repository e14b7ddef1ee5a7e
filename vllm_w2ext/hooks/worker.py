"""Worker hooks: ``Worker.execute_model`` / ``sample_tokens`` (shared by the V1 and V2 runners and
by ``CPUWorker``) and the V1 runner's forward (``_model_forward``). The V2 runner has no separate forward:
its ``execute_model`` (prepare + forward) is all that ``Worker.execute_model`` runs at PP=1, so a range of
its own would repeat ``worker.execute_model`` at two more hooked calls per step (it was recorded until the
fourteenth session: 7.6 us per step of the worker's hooks on the H200 host). Spans are parented on the
step context stamped on the ``SchedulerOutput`` by the EngineCore; calls without a stamp (warm-up,
profiling, dummy runs) are not recorded.

Where the worker runs in the EngineCore's thread (TP=1 on the GPU), its hooks become bounds hooks after its first
recorded execution (``hooks/bounds.py``): the engine step's post reads their bounds, and the export side makes the
same spans of them (``steps.assemble``); the functions below then run only where marks are wanted.

The scheduler gap is measured here, on the model-execution timeline: from the end of one step's
execution (sample_tokens, or execute_model when nothing is sampled) to the start of the next
execute_model; the export side splits it by the engine intervals carried in the stamp
(``steps.gaps``). On CUDA, ``gpu_timing`` adds the GPU's own view."""
from __future__ import annotations

import time

from vllm_w2ext import config
from vllm_w2ext.hooks.bounds import EXECUTIONS, FORWARDS, LAUNCHES, MODE, SAMPLES
from vllm_w2ext.hooks.end_event import CARRIER, RECYCLED
from vllm_w2ext.hooks.engine_core import DISPATCH, STAMP
from vllm_w2ext.hooks.gpu_timing import make_timer
from vllm_w2ext.hooks.runner import GATE
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import STAMP_SPAN_ID, STAMP_STEP, STAMP_TRACE_ID
from vllm_w2ext.telemetry import identity, pipeline
from vllm_w2ext.telemetry.pipeline import RECORDER, recorder
from vllm_w2ext.telemetry.recording import PHASE_MARKS, annotate_profiler, span_bits
from vllm_w2ext.telemetry.wire import DATA, END, IV_END, NESTED, ON_THREAD, SPAN_ID, START, STEP, TRACE_ID
from vllm_w2ext.vocab import WORKER, Span

_now = time.time_ns


class _State:
    """The worker hooks' state, one instance (``S``); every attribute set in ``__init__``, none on the class (see
    ``engine_core._State``: class-level defaults keep CPython from specializing the per-step reads and writes)."""

    def __init__(self) -> None:
        self.last = None             # stamp of the last executed step
        self.last_end = 0            # ns: end of the last model execution (sample or execute)
        self.identity_done = False
        self.timer = None            # GpuTimer on CUDA workers
        self.gpu_step = None         # (step, wall clock ns at its execute_model) of the step awaiting its end event
        self.borrow = None           # the class whose sample_tokens results carry vLLM's timing end event (end_event)
        self.device_stop = None      # timer.stop_by_result(borrow, ...): stop(step, launch, result)
        self.open = None             # the worker.execute_model range being recorded (forward's parent)


S = _State()


def forget_previous_step() -> None:
    """After a pause (hooks.control): the next execution has no previous one to measure a gap or device
    idle from; the paused steps ran unrecorded in between."""
    S.last_end = 0
    MODE.forget()
    if S.timer is not None:
        S.timer.forget_previous()


def _unrecorded_step() -> None:
    """A step not recorded (sampling, warm-up, dummy runs): the next recorded one has no previous
    execution to measure its gap or device idle from. Called by ``_execute_pre`` on an unstamped step and,
    where the EngineCore gates this process's worker hooks off, when it shuts the gate (runner.GATE)."""
    if S.last is not None:
        S.last = None
        forget_previous_step()


GATE.on_shut(_unrecorded_step)
GATE.on_shut(MODE.forget)          # where the worker's executions are read from bounds (its S.last is not kept)


def _group_rank(getter: str) -> int | None:
    """This worker's rank in one of vLLM's process groups (tp, pp, dp), None where it has none."""
    try:
        from vllm.distributed import parallel_state
        return getattr(parallel_state, getter)().rank_in_group
    except Exception:
        return None


def _engine_index(worker) -> int:
    """The engine's index is its data-parallel rank (one EngineCore per DP rank). vLLM keeps it in
    ``parallel_config.data_parallel_index``: for a dense model each DP engine is reconfigured as an
    independent DP=1 engine (``data_parallel_rank`` 0, a DP process group of one), and only the index
    still says which engine it is (0.26 to 0.33; older configs: ``data_parallel_rank``)."""
    pc = getattr(getattr(worker, "vllm_config", None), "parallel_config", None)
    for key in ("data_parallel_index", "data_parallel_rank"):
        try:
            return int(getattr(pc, key))
        except (TypeError, ValueError, AttributeError):
            continue
    return 0


def _ensure_identity(worker) -> None:
    """Once per process, by the first recorded step (the caller tests ``S.identity_done``: no call per step)."""
    if not S.identity_done:
        engine = _engine_index(worker)
        identity.set_role(WORKER, rank=getattr(worker, "rank", 0), local_rank=getattr(worker, "local_rank", 0),
                          engine_index=engine, tp_rank=_group_rank("get_tp_group"),
                          pp_rank=_group_rank("get_pp_group"), dp_rank=engine)
        S.timer = make_timer(worker, RECYCLED) if config.current().device_timing == "on" else None
        if S.timer is not None:
            pipeline.get().add_poller(_poll_device, "device")
            if _speculative_config(worker) is None:   # else the drafter's GPU work runs after vLLM's event
                S.borrow = CARRIER[0]
            MODE.device_stop = S.device_stop = S.timer.stop_by_result(S.borrow, CARRIER[1])
        S.identity_done = True
        MODE.arrive(worker=lambda: S.last_end)


def _speculative_config(worker):
    return getattr(getattr(worker, "vllm_config", None), "speculative_config", None)


def _poll_device(rec) -> float:
    """On the export thread: resolve the CUDA events of finished steps, hand them to the export side; the seconds it
    ran with the GIL released (``Pipeline.add_poller``)."""
    timer = S.timer
    released = timer.released_ns
    samples = timer.poll()
    if samples:
        rec.emit(Span.DEVICE_SAMPLES, WORKER, None, 0, 0, data=samples)
    return (timer.released_ns - released) / 1e9


def _execute_pre(worker, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    if stamp is None:
        if S.last is not None:
            _unrecorded_step()
        return None
    if not S.identity_done:
        _ensure_identity(worker)
    if FORWARDS or LAUNCHES:
        FORWARDS.clear()
        LAUNCHES.clear()
    S.last = stamp
    step = stamp[STAMP_STEP]
    timed = S.timer is not None
    # ExecutionRecord: the token count too, made an attribute on the export side (no dict per step here)
    data = (stamp, S.last_end, getattr(so, DISPATCH, 0), timed, so.total_num_scheduled_tokens)
    # Through the recorder on the process's first execution (making the recorder attaches NVTX, which sets the
    # marks) and while there are marks to push; else Recorder.begin's list for it written out, a Python call less.
    rec = RECORDER[0]
    if rec is None or PHASE_MARKS[0]:
        r = (rec or recorder()).begin(Span.WORKER_EXECUTE, WORKER, (stamp[STAMP_TRACE_ID], stamp[STAMP_SPAN_ID]),
                                      None, step, ON_THREAD)
        r[DATA] = data
    else:
        r = [Span.WORKER_EXECUTE, WORKER, stamp[STAMP_TRACE_ID], span_bits(64) or 1, stamp[STAMP_SPAN_ID], _now(), 0,
             step, None, None, None, ON_THREAD, data]
    if timed:
        S.gpu_step = (step, r[START])
    S.open = r
    return r


def _execute_post(r, result, error):
    if r is None:
        return
    S.open = None
    rec = RECORDER[0] or recorder()
    buf = rec.buf
    if LAUNCHES:                                   # V2: the device time starts at the forward's launch
        launch = LAUNCHES.pop()[0]
        LAUNCHES.clear()
        if S.gpu_step is not None:
            S.gpu_step = (S.gpu_step[0], launch)
    if FORWARDS:                                   # V1: the forward, an Interval under this execution (as
        f0, f1, _, failed = FORWARDS.pop()         # Recorder.phase_end makes it), appended unchecked
        FORWARDS.clear()
        if S.gpu_step is not None:                 # on CUDA the device time starts there too
            S.gpu_step = (S.gpu_step[0], f0)
        buf.append((Span.FORWARD, WORKER, r[TRACE_ID], r[SPAN_ID], f0, f1, r[STEP], None,   # wire.Interval
                    None if failed is None else type(failed).__name__))
    # Recorder.end written out when there are no marks to close and the buffer has room; else through it
    if error is None and r[NESTED] is not True and len(buf) < rec.capacity:
        r[END] = end = _now()
        buf.append(r)
    else:
        rec.end(r, error)
        end = r[END]
    S.last_end = end
    if result is not None and S.gpu_step is not None:   # nothing left to sample: the step's end
        S.timer.stop(*S.gpu_step)
        S.gpu_step = None


def _sample_pre(worker, args, kwargs):
    stamp = S.last
    if stamp is None:
        return None
    if PHASE_MARKS[0]:
        return (RECORDER[0] or recorder()).phase_begin(Span.WORKER_SAMPLE, WORKER, stamp[STAMP_STEP])
    return _now()


def _sample_post(t0, result, error):
    if t0 is None:
        return
    stamp = S.last
    rec = RECORDER[0] or recorder()
    if error is None and type(t0) is int:
        S.last_end = end = _now()
        rec.buf.append((Span.WORKER_SAMPLE, WORKER, stamp[STAMP_TRACE_ID], stamp[STAMP_SPAN_ID], t0, end,
                        stamp[STAMP_STEP], None, None))       # no marks: wire.Interval appended here (phase_end)
    else:
        S.last_end = rec.phase_end(t0, Span.WORKER_SAMPLE, WORKER, stamp[STAMP_TRACE_ID], stamp[STAMP_SPAN_ID],
                                   stamp[STAMP_STEP], error)[IV_END]
    if S.gpu_step is not None:
        step, launch = S.gpu_step
        S.gpu_step = None
        S.device_stop(step, launch, result)     # vLLM's end event where its output carries one (end_event)


def _forward_launch_pre(eplb, args, kwargs):
    """The V2 runner is about to launch the forward (``EPLBController.prepare_forward``, its last call before the
    model runs, in every CUDA graph mode): the step's device time starts here, not at ``execute_model``'s start.
    Before this the runner prepares the inputs on the CPU, and the GPU, done with the previous step, runs only
    their copies and small kernels: counted as idle (``prepare_inputs``), not busy. Reading it as busy made the
    4-layer model's batch-1 decode on the H200 read 2.06 ms busy per step where CUPTI saw 0.86 ms of kernels
    (``benchmarks/results/h200/device_busy``). A bounds hook: its front notes the launch in LAUNCHES, as this does
    where the front does not (with marks, on a timed call); the execution's post reads it. Nothing recorded."""
    if S.open is not None:
        t = _now()
        LAUNCHES.append((t, t, None, None))
    return None


def _forward_pre(runner, args, kwargs):
    """The runner's forward, a phase of the model execution being recorded: an Interval under it (on CUDA, the
    step's device time starts here too). A bounds hook: its front notes its calls' bounds for the execution's post
    (hooks/bounds.py); this and ``_forward_post`` run where marks are wanted."""
    r = S.open
    if r is None:                      # not inside a recorded worker step (warm-up, profiling, dummy runs)
        return None
    gs = S.gpu_step
    if gs is not None:
        S.gpu_step = (gs[0], _now())
    return r, (RECORDER[0] or recorder()).phase_begin(Span.FORWARD, WORKER, r[STEP])


def _forward_post(state, result, error):
    r, t0 = state
    (RECORDER[0] or recorder()).phase_end(t0, Span.FORWARD, WORKER, r[TRACE_ID], r[SPAN_ID], r[STEP], error)


def _profile_pre(worker, args, kwargs):
    """vLLM's torch profiler starts/stops in this process: mirror our ranges as its user annotations."""
    annotate_profiler(bool(args[0] if args else kwargs.get("is_start", True)))
    return None


HOOKS: list[Hook] = [
    Hook("worker.execute_model", "vllm.v1.worker.gpu_worker", "Worker.execute_model", _execute_pre,
         _execute_post, WORKER, "both runners; CPUWorker inherits it", recorded_only=True, bounds=EXECUTIONS,
         bounds_keep="arg", in_process_bounds=True, clock="worker"),
    Hook("worker.sample_tokens", "vllm.v1.worker.gpu_worker", "Worker.sample_tokens", _sample_pre, _sample_post,
         WORKER, "both runners", recorded_only=True, bounds=SAMPLES, bounds_keep="result", in_process_bounds=True),
    Hook("worker.profile", "vllm.v1.worker.gpu_worker", "Worker.profile", _profile_pre, None, WORKER,
         "torch profiler start/stop: ranges also become record_function annotations"),
    Hook("worker.forward_v1", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner._model_forward",
         _forward_pre, _forward_post, WORKER, "V1 runner forward (0.32 CPU)", optional=True, recorded_only=True,
         bounds=FORWARDS),
    Hook("worker.forward_launch", "vllm.v1.worker.gpu.eplb_utils", "EPLBController.prepare_forward",
         _forward_launch_pre, None, WORKER, "V2 runner: the forward's launch, where a step's device time starts",
         optional=True, recorded_only=True, bounds=LAUNCHES),
]
