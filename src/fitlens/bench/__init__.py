"""``python scripts/benchmark.py``: what the framework, the runtimes and each backbone cost on
this machine, measured in one run (see :mod:`fitlens.bench.suite`)."""
