"""Serving an exported model: `export` writes a directory, `runtime` loads and scores it.

This package's __init__ stays empty of imports: `autoheri_jax.serving.runtime` must load in a
service with numpy, jax and the standard library only, never the training modules.
"""
