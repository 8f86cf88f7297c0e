"""The edge search's method configs: `Config.edge_search` is one of them, chosen by its `method`
tag (written to config.json and set by `--set edge_search.method=...`). Each holds only its own
settings, so config.py refuses a setting of another method by name. The search phase's
training settings (lr, epochs, batch_size, ...) stay in `Config.search`; how each method
decides is its module in search/methods/. Imports no jax, like the rest of the config."""

from __future__ import annotations

import dataclasses

from autoheri_jax.settings import check as _check
from autoheri_jax.settings import check_types as _check_types

ARCH_OPTIMIZERS = ("adam", "shared_adam", "sgd")

# The gradient search (relaxed gates learned jointly with the weights), the default before
# the masked search: the studies measured with it pin it, so their recorded tables reproduce.
GRADIENT_SEARCH = ("edge_search.method=gradient",)

# The edge search as the AutoHERI paper (and this project before its search waited for
# evidence) ran it, as `--set` overrides: per-logit Adam on the edge logits from step 0, the
# entropy at full weight from step 0 (0.1 on the mean over 9 edges = 0.0111 per edge), edge
# kernel rows drawn with their own Glorot fan-in. The control arm of the search studies.
PAPER_SEARCH_RECIPE = (
    "edge_search.method=gradient",
    "edge_search.arch_optimizer=adam",
    "edge_search.arch_warmup_steps=0",
    "edge_search.entropy_weight=0.0111",
    "edge_search.entropy_warmup_steps=0",
    "model.edge_init=block",
)

EVIDENCE_CRITERIA = (
    "recal_nll",
    "raw_nll",
    "recal_cvr_nll",
    "shift_nll",
    "ips_cvr_nll",
    "recal_ips_cvr_nll",
)
UNDECIDED_RULES = ("drop", "keep")
SELECT_CRITERIA = ("ctcvr_auc", "cvr_auc", "off")


@dataclasses.dataclass(frozen=True)
class MaskedSearch:
    """The supernet trains under fixed Bernoulli(keep_prob) edge masks, then every edge is
    judged by its paired on/off contrast on validation batches with the calibration refit out
    (search/evidence.py), then the validated selection (search/selection.py)."""

    method: str = dataclasses.field(default="masked", init=False)  # the tag: not settable
    keep_prob: float = 0.5  # chance each edge is on in a training step's mask
    contexts: int = 8  # masks of the other edges each edge is switched on and off in
    # an edge is kept when the t statistic of its contrast over validation batches exceeds
    # this (dropped below minus it, undecided between); 0 = the one-sided 5% quantile of
    # Student's t with (batches - 1) degrees of freedom, Bonferroni over the E candidates,
    # t_{1 - 0.05 / E, batches - 1} (2.59 for 9 edges at 97 batches, 3.33 for 27 at 19)
    threshold: float = 0.0
    # the validation loss of the contrast (search/evidence.py): recal_nll (the entire-space
    # NLL after the per-mask recalibration, cross-fitted), raw_nll (no correction),
    # recal_cvr_nll (the recalibrated post-click NLL on clicked rows only) or shift_nll (raw
    # minus a pure intercept shift of each pair's mean logit change), or the
    # inverse-propensity post-click NLL raw (ips_cvr_nll) or recalibrated (recal_ips_cvr_nll)
    criterion: str = "recal_nll"
    undecided: str = "drop"  # an undecided edge is dropped (kept on evidence only) | keep
    # the last step (search/selection.py): no edge, the evidence's kept edges and every edge
    # are retrained with the retrain budget in one vmapped batch and judged on this
    # validation AUC (more edges must win a paired margin): ctcvr_auc (pCTCVR, every row) or
    # cvr_auc (the last stage on the rows whose previous stage is positive); "off": the
    # per-edge evidence alone decides
    select: str = "ctcvr_auc"
    batch_size: int = 1024  # rows per validation batch of the contrast
    valid_batches: int = 100  # validation batches scored (from the start); 0 = all
    seed: int = 0  # seed of the context masks

    def __post_init__(self):
        _check_types(self, "")
        _check(0 < self.keep_prob < 1, "keep_prob", "must lie in (0, 1)")
        _check(self.contexts >= 1, "contexts", "must be >= 1")
        _check(self.threshold >= 0, "threshold", "must be >= 0 (0 = the t quantile)")
        _check(self.criterion in EVIDENCE_CRITERIA, "criterion", f"one of {EVIDENCE_CRITERIA}")
        _check(self.undecided in UNDECIDED_RULES, "undecided", f"one of {UNDECIDED_RULES}")
        _check(self.select in SELECT_CRITERIA, "select", f"one of {SELECT_CRITERIA}")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(
            self.valid_batches >= 0 and self.valid_batches != 1,
            "valid_batches",
            "must be 0 (all) or >= 2",
        )


@dataclasses.dataclass(frozen=True)
class GradientSearch:
    """This project's variant of the paper's one-shot search: relaxed Bernoulli gates
    sigmoid(logit) learned jointly with the weights in their own optax partition (the arch
    partition), with an arch warm-up, the shared-RMS Adam, an entropy ramp and a sparsity
    cost; an edge is kept when its probability exceeds derive_threshold. The supernet trains
    under a SupernetConfig whose `arch` is this config."""

    method: str = dataclasses.field(default="gradient", init=False)  # the tag: not settable
    arch_lr: float = 5e-2  # learning rate of the arch partition (edge logits)
    # arch partition's rule: "adam" moves every logit by ~arch_lr per step whatever its
    # gradient's size (weak evidence moves as fast as strong); "shared_adam" is Adam with one
    # second moment for all arch params, so steps keep the gradients' relative sizes and stay
    # free of their overall scale; "sgd" (momentum 0.9) moves in proportion to the raw gradient
    arch_optimizer: str = "shared_adam"
    # steps at the start during which the arch params do not move at all (bitwise; their
    # optimiser state does not advance either): the weights learn first, so the edge decision
    # rests on trained representations rather than on initialisation noise; about 40% of the
    # search's steps (the default fits a 390-step search; set it per config)
    arch_warmup_steps: int = 150
    # cost per unit of edge probability, summed over edges (a sparsity prior: an edge must
    # lower the task loss by more than this to stay on); 0 = the paper's search (no cost)
    sparsity_weight: float = 0.0
    # weight of the entropy regulariser, per edge: the term is weight x sum over edges of each
    # edge's Bernoulli entropy, so the push on one edge is the same at 9, 18 or 27 candidates
    entropy_weight: float = 1e-3
    # steps over which the entropy weight ramps up linearly from 0, counted from the end of
    # arch_warmup_steps (0 = full weight as soon as the arch params move): the edges follow
    # the task loss's evidence first and are pushed to 0 or 1 only towards the end
    entropy_warmup_steps: int = 240
    bilevel: bool = False  # arch gradient from a validation batch (first-order bi-level)
    derive_threshold: float = 0.5  # keep an edge when its probability exceeds this
    init_edge_logit: float = 0.0  # starting arch logit; 0 = probability 0.5
    # std of Gaussian noise added to each starting arch logit, drawn from the weight-init seed
    # (so seeds start the search from different points); 0 = every edge starts equal
    edge_logit_noise: float = 0.0

    def __post_init__(self):
        _check_types(self, "")
        _check(self.arch_lr > 0, "arch_lr", "must be > 0")
        _check(
            self.arch_optimizer in ARCH_OPTIMIZERS, "arch_optimizer", f"one of {ARCH_OPTIMIZERS}"
        )
        for k in (
            "entropy_weight",
            "entropy_warmup_steps",
            "arch_warmup_steps",
            "sparsity_weight",
            "edge_logit_noise",
        ):
            _check(getattr(self, k) >= 0, f"{k}", "must be >= 0")
        _check(0 < self.derive_threshold < 1, "derive_threshold", "must lie in (0, 1)")


@dataclasses.dataclass(frozen=True)
class PaperSearch:
    """The AutoHERI paper's one-shot search as written: relaxed Bernoulli gates, weights and
    edge logits updated jointly in their two optax partitions, per-logit Adam on the edge
    logits from step 0, the entropy regulariser at full weight from step 0, no sparsity cost,
    edge logits starting at 0, supernet edge kernel rows drawn with their own Glorot fan-in
    (model.edge_init=block for the supernet only), derived at probability 0.5. Only the two
    rates are settings; the rest is fixed (`gradient()`)."""

    method: str = dataclasses.field(default="paper", init=False)  # the tag: not settable
    arch_lr: float = 5e-2  # learning rate of the edge logits' Adam
    # weight of the entropy regulariser per edge (the paper's 0.1 on the mean over 9 edges)
    entropy_weight: float = 0.0111

    def __post_init__(self):
        _check_types(self, "")
        _check(self.arch_lr > 0, "arch_lr", "must be > 0")
        _check(self.entropy_weight >= 0, "entropy_weight", "must be >= 0")

    def gradient(self) -> GradientSearch:
        """The paper's search as the gradient search at the paper's fixed settings."""
        return GradientSearch(
            arch_lr=self.arch_lr,
            arch_optimizer="adam",
            arch_warmup_steps=0,
            entropy_weight=self.entropy_weight,
            entropy_warmup_steps=0,
            sparsity_weight=0.0,
            bilevel=False,
            derive_threshold=0.5,
            init_edge_logit=0.0,
            edge_logit_noise=0.0,
        )


@dataclasses.dataclass(frozen=True)
class AblationSearch:
    """The vmapped architecture batch as the search: no edge, all, each alone and (drop_one)
    all but each, retrained with `Config.retrain` in one batch and judged on a validation AUC by the
    selection's rule (search/selection.py)."""

    method: str = dataclasses.field(default="ablation", init=False)  # the tag: not settable
    # the validation AUC the candidates are judged on: ctcvr_auc or cvr_auc (MaskedSearch.select)
    select: str = "ctcvr_auc"
    # also train every edge but each (2 + 2E lanes); False: no edge, all and each edge alone
    # (2 + E lanes), for worlds where an edge matters alone and lanes are what costs
    drop_one: bool = True

    def __post_init__(self):
        _check_types(self, "")
        judged = tuple(c for c in SELECT_CRITERIA if c != "off")
        _check(self.select in judged, "select", f"one of {judged}")


# method name -> its config class; `Config.edge_search` is one of them
METHOD_CONFIGS: dict[str, type] = {
    "masked": MaskedSearch,
    "gradient": GradientSearch,
    "paper": PaperSearch,
    "ablation": AblationSearch,
}
SEARCH_METHODS = tuple(METHOD_CONFIGS)
EdgeSearch = MaskedSearch | GradientSearch | PaperSearch | AblationSearch


def method_fields(cls: type) -> tuple[str, ...]:
    """A method config's own settings (its `method` tag left out)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def methods_with(name: str) -> list[str]:
    """The methods that have the setting `name`."""
    return [m for m, cls in METHOD_CONFIGS.items() if name in method_fields(cls)]


def arch_settings(es: EdgeSearch) -> GradientSearch | None:
    """The arch partition's settings of a gated search (gradient, paper); None otherwise."""
    if isinstance(es, PaperSearch):
        return es.gradient()
    return es if isinstance(es, GradientSearch) else None
