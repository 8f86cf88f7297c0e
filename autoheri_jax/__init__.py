"""AutoHERI in JAX: one-shot search of cross-task representation edges for entire-space CVR."""

__version__ = "0.1.0"
