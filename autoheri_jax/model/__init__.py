"""The model as pure functions over a params pytree: its static structure (spec.py, built from
a config by build.py; named variants in variants.py), candidate edges (edges.py), the shared
embedding (embedding.py), AutoHERI's towers and gated aggregation (network.py,
aggregation.py; the relaxed gates and their entropy, gates.py), the baseline families
(families.py, funnel_families.py, causal_families.py, blocks.py) and their losses (losses.py,
objectives.py)."""
