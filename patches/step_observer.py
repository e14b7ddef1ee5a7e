# SPDX-License-Identifier: Apache-2.0
# SPDX-FileCopyrightText: Copyright contributors to the vLLM project
"""Step observers: callbacks around the phases of an engine step.

Tracers, profilers and metrics exporters need to know when vLLM schedules a
batch, executes the model, samples and processes the output. A step observer
is called when such a *point* starts and when it ends, in the process where
it runs (EngineCore or worker), so no tool has to patch vLLM's methods.

Points, with the ``args`` and ``result`` of their method:

- ``engine_core.step``, ``engine_core.step_with_batch_queue`` (EngineCore):
  ``()`` -> ``(outputs, model_executed)``.
- ``scheduler.schedule`` (EngineCore): ``(throttle_prefills,)`` ->
  ``SchedulerOutput``.
- ``scheduler.update_from_output`` (EngineCore):
  ``(scheduler_output, model_runner_output)`` -> ``EngineCoreOutputs`` by client.
- ``scheduler.free_request`` (EngineCore): ``(request, ...)``; a request finished.
- ``executor.execute_model``, ``executor.sample_tokens`` (EngineCore):
  ``(scheduler_output, ...)`` / ``(grammar_output, ...)`` -> the output, or its
  Future with ``non_block=True``.
- ``worker.execute_model``, ``worker.sample_tokens`` (worker process; the
  EngineCore process with ``UniProcExecutor``): ``(scheduler_output,)`` /
  ``(grammar_output,)`` -> ``ModelRunnerOutput`` or ``None``.

``obj`` is the instance the method runs on (EngineCore, Scheduler, Executor,
Worker); ``kwargs`` are passed as the caller gave them. With ``non_block``
the executor points end when the call returns its Future, not when the
Future resolves. Arguments are vLLM's internal objects: observers may read
them (and set extra attributes on ``SchedulerOutput``, which is pickled to
the workers), never modify them.

Observers are registered with :func:`register_step_observer`, or through
the ``vllm.step_observers`` entry point group: each entry point names a class
or zero-argument factory returning an observer. Entry points are loaded once
per process right after the general plugins (``VLLM_PLUGINS`` applies).

When no observer is registered, an observed method costs one global check
and one function call more than before (about 0.1 us). An exception raised
by an observer is logged once and never reaches the engine.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from vllm.logger import init_logger

logger = init_logger(__name__)

STEP_OBSERVERS_GROUP = "vllm.step_observers"

POINTS = frozenset(
    {
        "engine_core.step",
        "engine_core.step_with_batch_queue",
        "scheduler.schedule",
        "scheduler.update_from_output",
        "scheduler.free_request",
        "executor.execute_model",
        "executor.sample_tokens",
        "worker.execute_model",
        "worker.sample_tokens",
    }
)


class StepObserver:
    """Base class of step observers; override what you need."""

    def on_start(self, point: str, obj: Any, args: tuple, kwargs: dict) -> Any:
        """Called before the method of ``point`` runs. The return value is
        handed to :meth:`on_end` of the same call."""
        return None

    def on_end(
        self, point: str, state: Any, result: Any, error: BaseException | None
    ) -> None:
        """Called after the method returned ``result`` or raised ``error``."""


_observers: tuple[StepObserver, ...] = ()
_failed: set[int] = set()
_loaded = False

F = TypeVar("F", bound=Callable[..., Any])


def register_step_observer(observer: StepObserver) -> None:
    """Register an observer in this process (idempotent)."""
    global _observers
    if observer not in _observers:
        _observers = (*_observers, observer)


def unregister_step_observer(observer: StepObserver) -> None:
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


def step_observers() -> tuple[StepObserver, ...]:
    return _observers


def load_step_observers() -> None:
    """Load the ``vllm.step_observers`` entry points (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from vllm.plugins import load_plugins_by_group

    for name, factory in load_plugins_by_group(STEP_OBSERVERS_GROUP).items():
        try:
            register_step_observer(factory())
        except Exception:
            logger.exception("Failed to create step observer %s", name)


def _failure(observer: StepObserver, point: str) -> None:
    if id(observer) not in _failed:
        _failed.add(id(observer))
        logger.exception("Step observer %r failed at %s", observer, point)


def _run_observed(
    point: str, fn: Callable, obj: Any, args: tuple, kwargs: dict
) -> Any:
    observers = _observers
    states = []
    for o in observers:
        try:
            states.append(o.on_start(point, obj, args, kwargs))
        except Exception:
            _failure(o, point)
            states.append(None)
    try:
        result = fn(obj, *args, **kwargs)
    except BaseException as e:
        _notify_end(observers, states, point, None, e)
        raise
    _notify_end(observers, states, point, result, None)
    return result


def _notify_end(observers, states, point, result, error) -> None:
    for o, state in zip(observers, states):
        try:
            o.on_end(point, state, result, error)
        except Exception:
            _failure(o, point)


def observe_step(point: str) -> Callable[[F], F]:
    """Decorate a method so that step observers see it as ``point``."""
    if point not in POINTS:
        raise ValueError(f"unknown step observer point {point!r}")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def observed(self, *args, **kwargs):
            if not _observers:
                return fn(self, *args, **kwargs)
            return _run_observed(point, fn, self, args, kwargs)

        return observed  # type: ignore[return-value]

    return decorate
