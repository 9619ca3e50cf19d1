"""Policies for the trainer: the tabular softmax (NumPy); MLP, GRU and tiny-LM policies (torch) come later.

A policy picks one action in each of the environments stepped together (``act``), scores stored
(state, action) pairs (``log_prob``) and takes a weighted policy-gradient step (``ascend``): the
trainer computes the weights (PPO's clipped-surrogate coefficients), the policy owns its
parameters and their gradient.
"""

from stepcredit.policies.tabular import Action, TabularPolicy

__all__ = ["Action", "TabularPolicy"]
