"""Process reward models: labels, losses, models and evaluation.

* :mod:`stepcredit.prm.labels` (NumPy): first errors, aggregated step verifications,
  Math-Shepherd's hard/soft Monte-Carlo labels, preference pairs of a group;
* :mod:`stepcredit.prm.evaluation` (NumPy): ProcessBench first-error F1, pairwise trajectory
  accuracy by length, contrast-pair consistency, best-of-N against unguided sampling;
* :mod:`stepcredit.prm.losses` (the ``torch`` extra): DPO, MADPO, TPO list ranking,
  Bradley-Terry, regression and classification step losses, the implicit-PRM cross-entropy
  and OPRL's trajectory DPO;
* :mod:`stepcredit.prm.feature_model`, :mod:`stepcredit.prm.models`: the feature PRM and
  saving/loading models; :mod:`stepcredit.prm.torch_models` (the ``lm`` extra): the LM step PRM
  ``LMStepPRM`` and the implicit PRM ``ImplicitPRM`` on a causal LM, and ``bt_pairs``; :mod:`stepcredit.prm.mc_labels`: Monte-Carlo labels from rollout
  trees; :mod:`stepcredit.prm.search`: PRM-guided best-of-N and beam search.

Every name is imported on first use, so ``import stepcredit.prm`` imports neither torch nor
any submodule; the torch names raise an ImportError naming the extra when torch is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_LAZY = {
    # labels (NumPy)
    "Aggregation": "labels",
    "PreferencePairs": "labels",
    "aggregate_verifications": "labels",
    "first_error": "labels",
    "hard_labels": "labels",
    "preference_pairs": "labels",
    "soft_labels": "labels",
    # evaluation (NumPy)
    "best_of_n": "evaluation",
    "contrast_consistency": "evaluation",
    "pairwise_accuracy": "evaluation",
    "predict_first_error": "evaluation",
    "processbench_f1": "evaluation",
    # losses (torch)
    "bradley_terry_loss": "losses",
    "classification_loss": "losses",
    "dpo_loss": "losses",
    "implicit_prm_ce_loss": "losses",
    "implicit_step_rewards": "losses",
    "madpo_loss": "losses",
    "madpo_weights": "losses",
    "regression_loss": "losses",
    "tpo_adaptive_logratio": "losses",
    "tpo_listwise_loss": "losses",
    "trajectory_dpo_loss": "losses",
    # models (NumPy; safetensors to save)
    "FeaturePRM": "feature_model",
    "PRMError": "feature_model",
    "load_model": "models",
    "save_model": "models",
    # torch models on a causal LM (the lm extra: torch and transformers)
    "ImplicitPRM": "torch_models",
    "LMStepPRM": "torch_models",
    "bt_pairs": "torch_models",
    # Monte-Carlo labels from rollout trees, PRM-guided search (NumPy)
    "MCLabels": "mc_labels",
    "mc_label_rollouts": "mc_labels",
    "tree_mc_labels": "mc_labels",
    "SearchResult": "search",
    "aggregate_scores": "search",
    "beam_search": "search",
    "best_of_n_search": "search",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stepcredit.prm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stepcredit.prm.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
