"""The step's end event borrowed from vLLM: no CUDA call of the plugin's on vLLM's thread per step.

vLLM's V2 model runner (the GPU default from 0.26) already records one CUDA event at the end of every step's
sampling: ``AsyncOutput.copy_event``, on its copy stream once the sampled tokens' copy to the host is queued
behind the main stream's work, the event vLLM itself waits on for the step's output. It is made without
timing, so it cannot be placed on a clock. The plugin gives that one constructor a ``torch`` whose
``cuda.Event`` makes timing events (``attach``: ``AsyncOutput.__init__`` gets a copy of its function with that
name rebound, assigned once when vLLM imports the module; no other code of vLLM's sees it), and the worker's
``sample_tokens`` hook hands the event of the output it returns to ``gpu_timing.GpuTimer.stop`` instead of
recording one of its own. What that saves on vLLM's thread is the plugin's ``cudaEventRecord`` and its Python
around it (``GpuTimer.stop``: 6-8 µs per step on the H200 host, ``benchmarks/results/h200/event_cost``); vLLM's
own record of a timing event costs about 1 µs more than of a plain one there.

What the borrowed event marks: the copy's end, which waits for the sampling. vLLM launches a few small kernels
after it (its ``postprocess_sampled``) and, with speculative decoding, the drafter's forward: the worker hook
does not borrow when a speculative config is set (``worker._ensure_identity``), since the drafter's GPU time
would read as idle. ``GpuTimer.poll`` stops borrowing (own events again) if the runtime refuses to time a
borrowed event. Where vLLM does not hand one over (the V1 runner, nothing sampled), the plugin records its own.

The events are recycled. Stock vLLM makes a new event every step (torch makes the CUDA event at its first record)
and frees it when the step's output is dropped: a ``cudaEventCreateWithFlags`` and a ``cudaEventDestroy`` on its
thread per step, each taking the driver's lock beside vLLM's launches. Once the export thread has resolved a
borrowed event (the GPU is past it), ``gpu_timing.GpuTimer`` keeps it in ``RECYCLED`` instead of freeing it, and the
constructor hands it out again when nothing else holds it any longer (``_sole``: vLLM's output that carried it is
gone) and it was made with the arguments asked for; only then, else a new event. vLLM records it again as it
would a new one: a record replaces the event's previous one, which the GPU has passed. So with the plugin on,
vLLM's thread makes and frees no CUDA event per step once the pool has filled (the first export interval); ``MADE``
counts the events made, ``hook_cost_engine.py`` reports them per step. The constructor is C where the extension
``_event_times`` was built (``recycler``: 0.32 against 0.47 µs a warm call on the CPU machine, and no Python frame of
the plugin's on vLLM's thread); py-spy then charges it to vLLM's ``AsyncOutput.__init__``, where stock vLLM runs
torch's own, dearer construction.
"""
from __future__ import annotations

import functools
import logging
import operator
import sys
import types

try:
    from vllm_w2ext.hooks._event_times import recycler as _c_recycler   # the constructor in C, where it was built
except ImportError:                                                     # pragma: no cover - the closure below
    _c_recycler = None

log = logging.getLogger("vllm_w2ext")

# (module, class, attribute): the class whose ``__init__`` makes the event, the attribute that holds it on the
# object the worker's sample_tokens returns (``compat/static_check.py`` reads this table against a vLLM tree)
SOURCES = (("vllm.v1.worker.gpu.async_utils", "AsyncOutput", "copy_event"),)
MARK = "__w2ext_end_event__"        # on the rebound __init__: vLLM's own function
# Once attached in this process: the class whose objects carry a timing end event and the getter of that event;
# the worker hook compares the type of sample_tokens' result with the class (one identity test per step)
CARRIER: list = [None, None]
# Borrowed end events the export thread has resolved, oldest first: the device timer's ``spent`` (it appends them,
# bounds the list on vLLM's thread), the constructor's supply. One list, never rebound while attached.
RECYCLED: list = []
KWARGS = "_w2ext_kwargs"            # on an event the constructor made: the arguments it was made with
MADE = [0]                          # events the constructor made (not recycled) in this process


def _sole(items: list) -> int:
    """``sys.getrefcount`` of ``items[0]`` as read here: ``SOLE`` when the list holds its only reference."""
    return sys.getrefcount(items[0])


SOLE = _sole([object()])            # this interpreter's count for an object only a list holds


class _Forward(types.ModuleType):
    """A module standing for another: its own names first, any other read from the module it stands for."""

    def __getattr__(self, name):
        return getattr(self.__dict__["_w2_target"], name)


def forwarding(target, **own) -> types.ModuleType:
    m = _Forward(getattr(target, "__name__", "module"), getattr(target, "__doc__", None))
    m.__dict__.update(own, _w2_target=target)
    return m


def timing_event(Event):
    """``Event`` (torch.cuda.Event) that makes timing events: ``Event(blocking=True)`` as vLLM calls it gets
    ``enable_timing=True``, from ``RECYCLED`` where its oldest event is held by nothing else and was made with the
    same arguments (see the module's docstring), else new; an interprocess event, which CUDA cannot time, is made
    as asked. In C where the extension ``_event_times`` was built (``recycler``: no Python frame on vLLM's
    thread), else this closure, which does the same."""
    if _c_recycler is not None:
        return _c_recycler(Event, RECYCLED, MADE, KWARGS)

    @functools.wraps(Event)
    def event(*args, **kwargs):
        if args or kwargs.get("interprocess"):
            return Event(*args, **kwargs)
        kwargs["enable_timing"] = True
        free = RECYCLED
        if free and _sole(free) == SOLE and getattr(free[0], KWARGS, None) == kwargs:
            return free.pop(0)              # only vLLM's thread takes from the list: index 0 is still the same
        e = Event(**kwargs)
        MADE[0] += 1
        try:
            setattr(e, KWARGS, kwargs)
        except AttributeError:              # pragma: no cover - an Event without a __dict__: never recycled
            pass
        return e
    return event


def timing_torch(torch) -> types.ModuleType:
    """``torch`` as the rebound constructor sees it: ``torch.cuda.Event`` makes timing events, ``torch.Tensor``
    (read by its annotations on every call) and the rest are torch's."""
    cuda = forwarding(torch.cuda, Event=timing_event(torch.cuda.Event))
    return forwarding(torch, cuda=cuda, Tensor=torch.Tensor)


def rebound(fn, **names):
    """A copy of function ``fn`` that reads ``names`` in place of its module's globals of those names (the
    module's other globals as they are now)."""
    g = dict(fn.__globals__)
    g.update(names)
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(new, fn)
    setattr(new, MARK, fn)
    return new


def attach(module, cls_name: str, attr: str, torch=None) -> bool:
    """``cls_name``'s constructor in ``module`` makes timing events; the class and ``attr`` become ``CARRIER``.
    False (and nothing changed) where the class or its ``torch`` is not what this expects."""
    cls = getattr(module, cls_name, None)
    init = vars(cls).get("__init__") if isinstance(cls, type) else None
    if not isinstance(init, types.FunctionType):
        return False
    if getattr(init, MARK, None) is None:
        torch = torch if torch is not None else init.__globals__.get("torch")
        if getattr(getattr(torch, "cuda", None), "Event", None) is None:
            return False
        cls.__init__ = rebound(init, torch=timing_torch(torch))
    CARRIER[:] = cls, operator.attrgetter(attr)
    return True


def detach() -> None:
    """vLLM's own constructors back; no carrier, no recycled events."""
    CARRIER[:] = None, None
    RECYCLED.clear()
    for mod_name, cls_name, _ in SOURCES:
        cls = getattr(sys.modules.get(mod_name), cls_name, None)
        own = getattr(vars(cls).get("__init__"), MARK, None) if isinstance(cls, type) else None
        if own is not None:
            cls.__init__ = own


def on_import(module) -> None:
    """The post-import hook: never breaks vLLM's import."""
    for mod_name, cls_name, attr in SOURCES:
        if module.__name__ == mod_name:
            try:
                attach(module, cls_name, attr)
            except Exception as e:  # pragma: no cover - an unexpected vLLM: own events, as before
                log.warning("vllm_w2ext: the step's end event stays the plugin's own (%r)", e)
