"""Benchmarks: functions that measure a part of the pipeline and return plain dicts."""
