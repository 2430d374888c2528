"""Benchmarks: the harness (`measure`, `harness`: no JAX, torch or other interp imports) and one
module per workload (`forward`, `sae`, `toy`, `graph`: what is measured, ours against a peer)."""
