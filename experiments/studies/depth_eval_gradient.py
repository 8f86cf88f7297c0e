"""The project's gradient search (arch warm-up, shared-RMS Adam, entropy ramp) on the two
worlds whose 4M-row instrument checks passed, on evaluation seeds 1000-1009, run once: the
method depth_eval.py and depth_eval_deep.py leave out.

Command (after the commit that adds this file, which freezes the defaults it runs with):
  autoheri study --config experiments/studies/depth_eval_gradient.py \
      --workdir runs/studies/depth_eval_gradient

Arms: the cascade (transfer) world of depth_eval.py and the deep world of depth_eval_deep.py,
each at 4M training impressions, searched by `edge_search.method=gradient` with its frozen
defaults (GradientSearch in autoheri_jax/method_config.py: warm-up 150 steps, entropy ramp
over 240 steps, fitted to the 390-step search of the 400k-row studies; here the search has
3906 steps, and nothing was refitted). Each run retrains the derived model, ESMM and every edge
on. About 2-3 min a run on 2 cores.

Read-outs, written before the run, as in depth_eval.py: AutoHERI >= max(ESMM, all-on) - 0.003
(cvr* sAUC, paired by seed, mean [95% CI]); the right source depth (at least one edge kept,
none from click layer 0) in >= 80% of seeds (`python experiments/kept_depth.py
runs/studies/depth_eval_gradient`); AutoHERI above ESMM and above all-on, each CI above 0.
Expected (where it goes) and measured: experiments/README.md ("Evaluation seeds at 4M rows").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study

HERE = Path(__file__).resolve().parent


def get_study():
    transfer = load_study(HERE / "depth_eval.py")
    deep = load_study(HERE / "depth_eval_deep.py")
    method = "edge_search.method=gradient"
    worlds = {
        "transfer4m": transfer.arms["transfer4m_masked"],
        "deep4m": deep.arms["deep4m_masked"],
    }
    arms = {
        f"{w}_gradient": [o for o in opts if not o.startswith("edge_search.method=")] + [method]
        for w, opts in worlds.items()
    }
    return dataclasses.replace(
        transfer,
        name="depth_eval_gradient",
        arms=arms,
        description="The gradient search on the 4M-row cascade and deep worlds; evaluation "
        "seeds 1000-1009.",
    )
