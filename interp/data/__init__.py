"""Step-indexed, deterministic token sources (sources) over byte tokens (tokenize_bytes) of the
built-in corpus or text files (corpus)."""
