"""The architecture search's algorithms: the discrete architecture derived from the relaxed
gates (model/gates.py), its record and rendering (architecture.py, records.py), the masked
search's per-edge evidence (evidence.py) and validated selection (selection.py), each search
method as one module (methods/: masked, gradient, paper, ablation) and the aging-evolution
baseline over edge masks (evolution.py). The workflows that run them over a workdir
(experiment.py, evolution_run.py) sit above this package."""
