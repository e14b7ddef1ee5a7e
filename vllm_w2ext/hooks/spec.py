"""A hook's spec: which vLLM method it wraps and the two small functions it runs around it.

``pre(instance, args, kwargs) -> state`` runs before the method, ``post(state, result, error)`` after
it (``post`` may be None; it does not run when ``pre`` returned None: nothing was recorded).
Specs are immutable declarations in the tables of ``front``, ``engine_core``,
``worker`` and ``lifecycle``; what changes at run time (on/off, calls, faults) lives in the runner.

A bounds hook (``bounds``: its buffer) is one whose front notes its calls' bounds instead of running ``pre`` and
``post`` where that is all they would do (``hooks/bounds.py``); a clock hook's timed calls time them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Pre = Callable[[Any, tuple, dict], Any]
Post = Callable[[Any, Any, "BaseException | None"], None]


@dataclass(frozen=True)
class Hook:
    name: str                       # stable id, e.g. "engine.step"
    module: str                     # vLLM module holding the class
    target: str                     # "Class.method"
    pre: Pre
    post: Post | None = None
    role: str = ""
    note: str = ""                  # what it is for / which vLLM versions have it
    optional: bool = False          # absent in some supported versions: skip quietly (doctor shows it)
    recorded_only: bool = False     # records nothing on a step the EngineCore does not record (sampling):
                                    # switched off while one runs in its process (runner.StepGate)
    bounds: Any = field(default=None, compare=False)   # a bounds hook's buffer (hooks/bounds.py); None: not one
    bounds_keep: str = ""           # what its Bounds keep: "arg" (the method's first argument), "result", "" nothing
    in_process_bounds: bool = False  # a bounds hook only where the worker runs in the EngineCore's thread
    clock: str = ""                 # "engine" or "worker": the hook whose timed calls time the bounds hooks' calls
    direct: bool = True             # its C front's calls count in the direct counter (selfcost.direct); False: a
                                    # one-off call that is not step work (the shutdown flush waits for the exporters)
                                    # inside them, where it is its process's clock (bounds.Mode.clock)

    @property
    def cls_name(self) -> str:
        return self.target.split(".")[0]

    @property
    def method(self) -> str:
        return self.target.split(".", 1)[1]
