"""Compatibility with vLLM versions, checked without importing vLLM or torch: ``static_check`` (every hook
row against a vLLM source tree or wheel) and ``rust_frontend`` (vLLM's optional Rust front end)."""
