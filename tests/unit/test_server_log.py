"""The served tests' log check: vLLM 0.32's own shutdown race is told apart from a real traceback."""
from support.vllm_server import tracebacks

P = "(APIServer pid=22440) ERROR 12-02 01:27:48 [async_llm.py:906] "
SHUTDOWN_RACE = "\n".join([
    P + "AsyncLLM output_handler failed.",
    P + "Traceback (most recent call last):",
    P + '  File "vllm/v1/engine/async_llm.py", line 849, in output_handler',
    P + "    outputs = await engine_core.get_output_async()",
    P + '  File "vllm/v1/engine/core_client.py", line 1235, in get_output_async',
    P + "    raise self._format_exception(outputs) from None",
    P + "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) "
        "for the root cause.",
    "INFO:     Shutting down",
])
E = "(EngineCore pid=22500) ERROR 12-02 01:27:47 [core.py:1100] "
ENGINE_CORE = "\n".join([
    E + "EngineCore encountered a fatal error.",
    E + "Traceback (most recent call last):",
    E + '  File "vllm_w2ext/hooks/engine.py", line 10, in step',
    E + "ZeroDivisionError: division by zero",
])


def test_the_shutdown_race_alone_is_not_reported():
    assert tracebacks("INFO: started\n" + SHUTDOWN_RACE) == []


def test_an_engine_core_traceback_before_it_is_reported():
    found = tracebacks(ENGINE_CORE + "\n" + SHUTDOWN_RACE)
    assert len(found) == 1 and "ZeroDivisionError" in found[0] and "EngineDeadError" not in found[0]


def test_an_output_handler_failure_of_another_kind_is_reported():
    other = SHUTDOWN_RACE.replace("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
                                  "See stack trace (above) for the root cause.", "KeyError: 'req-1'")
    assert len(tracebacks(other)) == 1


def test_a_bare_traceback_is_reported():
    assert len(tracebacks('Traceback (most recent call last):\n  File "x.py", line 1\nValueError: x')) == 1
