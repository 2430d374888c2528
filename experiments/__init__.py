"""Experiment binaries: one absl program per experiment (flags -> config -> one call into interp)."""
