"""Sparse dictionaries (SAEs, transcoders) trained on model activations: the activation store
(store), dictionaries and their training."""
