"""Training: the pure per-device step (step.py) and its optimiser partitions (optim.py),
row-sparse embedding gradients and updates (sparse_embedding.py), launchers for one device,
a mesh or pmap (parallel.py, collectives.py), the host loop (loop.py), checkpoints
(checkpoint.py), vmapped seeds (seed_batch.py) and inference over a dataset (predict.py)."""
