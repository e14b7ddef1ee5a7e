"""Offline analysis of what the plugin recorded (spans, metrics, span files, profiler traces), grouped
by subject: readers/, kernels/ (analyze), merge/, metrics/, spans/. Never imports vLLM or torch, so it
runs where they are not installed; never imports the lab (the lab's report, which does, is lab/report/)."""
