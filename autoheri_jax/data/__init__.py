"""Data: the in-memory impression container, the funnel simulator and batch iteration."""
