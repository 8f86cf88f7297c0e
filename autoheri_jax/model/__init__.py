"""The model as pure functions: candidate edges (edges.py) and the towers (network.py)."""
