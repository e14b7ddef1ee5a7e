"""``python -m vllm_w2ext.lab.report DIR [--reference F]``: the lab's report of a results folder."""
from vllm_w2ext.lab.report.build import main

if __name__ == "__main__":
    raise SystemExit(main())
