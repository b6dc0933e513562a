"""Side-by-side benchmark of courier-analytics and segment-analytics-python.

Run ``python -m benchmarks.run`` (``--quick`` for a smoke run); see ``docs/performance.md``.
"""
