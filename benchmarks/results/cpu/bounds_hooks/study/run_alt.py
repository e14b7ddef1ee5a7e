"""Run a script with another copy of vllm_w2ext first: ``ALT=<folder holding vllm_w2ext> python run_alt.py SCRIPT
ARGS``. An editable install's import finder takes precedence over PYTHONPATH, so it is taken off the meta path."""
import os, runpy, sys
alt = os.environ["ALT"]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, alt)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
