"""Benchmark support shared by the experiments/bench_*.py binaries (no JAX or torch imports)."""
