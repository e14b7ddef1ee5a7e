"""Readers of the files the plugin and the torch profiler write: Kineto/Chrome JSON traces (two
sibling readers, one per need), the plugin's Perfetto span files, and nothing that analyses them."""
