"""Lethe benchmarks: each compares an optimized code path with a naive baseline measured in the same run.

Run ``python -m benchmarks.run_all [--quick]``; results go to ``benchmarks/results/*.json`` (git-ignored).
"""
