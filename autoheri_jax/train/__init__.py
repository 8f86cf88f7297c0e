"""Training: the pure per-device step (step.py) and its optimiser partitions (optim.py),
row-sparse embedding gradients and updates (sparse_embedding.py), launchers for one device,
a mesh or pmap (parallel.py, collectives.py) or vmapped lanes (lanes.py), the host loop
(loop.py) and what it calls between dispatches (hooks.py, checkpoint_hook.py), checkpoints
(checkpoint.py), one model's launcher and hooks (fit.py), vmapped seeds (seed_batch.py) and
inference over a dataset (predict.py)."""
