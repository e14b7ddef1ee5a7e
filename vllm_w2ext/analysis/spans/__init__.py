"""Exported spans (an OTLP receiver dump): the span tree and its summary report."""
