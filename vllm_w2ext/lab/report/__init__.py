"""The lab's report from a results folder: summary, comparison with the lab's H100 numbers, charts,
markdown and HTML. Lives under ``lab/`` because it reads the lab's model folders; it never imports
vLLM. ``python -m vllm_w2ext.lab.report DIR``."""
