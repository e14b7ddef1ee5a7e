"""The hooks' per-step state objects keep every attribute on the instance, none on the class.

Known answer: CPython 3.12 and 3.13 (not 3.11) do not specialize an attribute load or store on an instance when its
class has a plain attribute of the same name, so each of the hooks' ~30 reads and writes per step of such a state object is a
generic lookup through two dicts (``benchmarks/attr_specialization.py``; before/after in
``benchmarks/results/cpu/state_attrs``). A class-level default added later would silently bring that back."""
import pytest

from vllm_w2ext.hooks import engine_core, gpu_timing, runner, worker


def _class_data(cls) -> set:
    """A class's plain (non-callable, non-descriptor, non-dunder) attributes."""
    return {k for k, v in vars(cls).items() if not k.startswith("__") and not callable(v) and not hasattr(v, "__get__")}


def _instance_attrs(obj) -> set:
    """The attributes set on an instance: its ``__dict__``'s, or its slots' that hold a value (a slotted class keeps
    them at fixed offsets: ``engine_core._State``, which the C step post reads there)."""
    if hasattr(obj, "__dict__"):
        return set(vars(obj))
    return {n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ()) if hasattr(obj, n)}


def _shadowed(obj) -> set:
    """Instance attributes that a plain class attribute shadows."""
    return _class_data(type(obj)) & _instance_attrs(obj)


@pytest.mark.parametrize("make", [engine_core._State, worker._State, runner.StepGate,
                                  lambda: gpu_timing.GpuTimer(cuda=(None,) * 8)],
                         ids=["engine_core.S", "worker.S", "runner.GATE", "GpuTimer"])
def test_no_class_level_defaults_under_instance_attributes(make):
    obj = make()
    assert _instance_attrs(obj), "the state lives on the instance"
    assert _shadowed(obj) == set()
    assert _class_data(type(obj)) == set(), "class-level data on a hot-path state class"


def test_every_slot_of_the_engine_state_is_set():
    st = engine_core._State()
    assert _instance_attrs(st) == set(engine_core._State.__slots__)


def test_the_check_finds_a_class_default():
    class Old:
        step = 0

        def __init__(self):
            self.step = 1
    assert _shadowed(Old()) == {"step"}


def test_the_module_states_are_fresh_instances_of_those_classes():
    assert type(engine_core.S) is engine_core._State and type(worker.S) is worker._State
    st = engine_core._State()
    st.finished.append(1)
    assert engine_core._State().finished == []          # no list shared through the class any more
