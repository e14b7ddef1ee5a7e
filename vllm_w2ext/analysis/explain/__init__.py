"""``vllm-w2ext explain``: where a run's time went, from its span folder (optionally a scrape and a
profile), as findings ranked by the wall-clock time they cost.

timeline.py loads the folder (processes, wall window, each device's executions, each engine's steps,
requests, front-end busy time); one module per family of findings: idle.py (device idle by cause, the
front end's share split out of no_work), batches.py (each step's batch and device time, the decode
baseline), interference.py (decode slowed by co-batched prefill), preemption.py, queueing.py (capacity
versus not stepping), kernel_mix.py (a profile's kernel mix per phase, launch-bound steps),
metrics.py (a scrape's device counters); requests.py sums the requests up; report.py ranks and
assembles, render.py writes text or JSON, command.py is the command line. Pure Python: never imports
vLLM, torch or the lab."""
