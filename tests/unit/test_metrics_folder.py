"""The metrics folder of one vLLM instance (``metrics_server.shared_dir``): a folder the plugin made is
removed when the process that made it exits, and only then (a forked child inherits the exit handler, not
the folder); a folder named by the setting is the user's and stays. Before, every run with
``VLLM_W2EXT_METRICS_PORT`` and no folder set left a ``vllm-w2ext-metrics-*`` folder in the temp dir."""
import json
import os
import subprocess
import sys
from pathlib import Path

from vllm_w2ext.telemetry import metrics_server
from vllm_w2ext.telemetry.metrics import write_snapshot

# Makes the folder, writes a snapshot in it, forks a child that exits through the normal exit path (its exit
# handlers run), then reports whether the folder outlived the child.
MAKER = """
import json, os, sys
from vllm_w2ext.telemetry import metrics_server
from vllm_w2ext.telemetry.metrics import write_snapshot
d = metrics_server.shared_dir()
again = metrics_server.shared_dir()
write_snapshot(d, b"x 1\\n")
pid = os.fork()
if pid == 0:
    sys.exit(0)
os.waitpid(pid, 0)
print(json.dumps({"dir": d, "again": again, "env": os.environ.get(metrics_server.DIR_ENV),
                  "after_child": os.path.isdir(d), "files": sorted(os.listdir(d))}))
"""


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_W2EXT")}
    env.update(env_extra)
    p = subprocess.run([sys.executable, "-c", MAKER], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_a_made_folder_is_shared_and_removed_when_its_maker_exits():
    seen = _run({})
    d = Path(seen["dir"])
    assert d.name.startswith("vllm-w2ext-metrics-")
    assert seen["again"] == seen["dir"] == seen["env"]       # one folder, handed on through the environment
    assert seen["after_child"]                               # the child's exit left it alone
    assert len(seen["files"]) == 1 and seen["files"][0].endswith(".prom")
    assert not d.exists()                                    # gone with the process that made it


def test_a_folder_named_by_the_setting_stays(tmp_path):
    mine = tmp_path / "metrics"
    mine.mkdir()
    seen = _run({metrics_server.DIR_ENV: str(mine)})
    assert seen["dir"] == str(mine) and seen["after_child"]
    assert mine.is_dir() and len(list(mine.glob("*.prom"))) == 1


def test_a_snapshot_after_the_folder_is_gone_is_dropped(tmp_path):
    gone = tmp_path / "gone"
    write_snapshot(str(gone), b"x 1\n")                      # no error: the endpoint's process has exited
    assert not gone.exists()
    here = tmp_path / "here"
    here.mkdir()
    write_snapshot(str(here), b"x 1\n")
    assert (here / f"{os.getpid()}.prom").read_bytes() == b"x 1\n"
