"""The ``vllm`` command (``vllm_w2ext.lab.vllm_cli``, vLLM's own CLI entry) run once per line of standard
input, all in this one process: a JSON list of the arguments after ``vllm`` in, one line
``W2EXT_CLI_DONE <exit code>`` on standard output after each command. For tests that run several
``vllm bench serve`` in a row (tests/support/vllm_server.py CliLoop): vLLM's CLI parses and runs each
command as it would in a process of its own; importing vLLM and its CLI (~8 s of one core on the test
machine) is paid once instead of once per command."""
import json
import sys
import traceback

from vllm_w2ext.lab import vllm_cli

if __name__ == "__main__":
    for line in sys.stdin:
        sys.argv = ["vllm", *json.loads(line)]
        try:
            rc = vllm_cli.main()
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        print(f"W2EXT_CLI_DONE {rc}", flush=True)
