"""spreadwatch's benchmarks and load/fault scenarios (``python -m bench --help``)."""
