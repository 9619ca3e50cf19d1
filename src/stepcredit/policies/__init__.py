"""Policies for the trainer: the tabular softmax (NumPy); MLP and GRU policies (torch); a tiny LM.

A policy picks one action in each of the environments stepped together (``act``), scores stored
steps (``log_prob``) and takes a weighted policy-gradient step (``ascend``): the trainer computes
the weights (PPO's clipped-surrogate coefficients), the policy owns its parameters and their
gradient. ``MLPPolicy``, ``GRUPolicy`` and ``text_features`` live in
``stepcredit.policies.torch_policies`` (the ``torch`` extra), ``LMPolicy`` and ``CharTokenizer``
in ``stepcredit.policies.lm_policy`` (the ``lm`` extra: torch and transformers); both are
imported on first use, so this package imports without torch.
"""

from typing import Any

from stepcredit.policies.tabular import Action, TabularPolicy

__all__ = ["Action", "CharTokenizer", "GRUPolicy", "LMPolicy", "MLPPolicy", "TabularPolicy", "text_features"]

_TORCH_NAMES = ("GRUPolicy", "MLPPolicy", "StepBatch", "TorchAction", "text_features")
_LM_NAMES = ("CharTokenizer", "LMAction", "LMBatch", "LMPolicy")


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from stepcredit.policies import torch_policies

        return getattr(torch_policies, name)
    if name in _LM_NAMES:
        from stepcredit.policies import lm_policy

        return getattr(lm_policy, name)
    raise AttributeError(f"module 'stepcredit.policies' has no attribute {name!r}")
