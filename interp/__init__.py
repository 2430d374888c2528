"""interp: mechanistic interpretability in JAX: hooked transformers, SAEs, circuits, at scale."""

__version__ = "0.1.0"
