"""Data: the impression container and its shape contract (dataset.py), the funnel simulator,
file formats converted into a memory-mapped store, vocabularies, and the grain pipeline."""
