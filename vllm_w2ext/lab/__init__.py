"""The lab: model folders, benchmark drivers and their environment capture."""
