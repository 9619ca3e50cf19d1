"""Preference As Reward (PAR): the reward model's implied preference over reference responses.

Notation: episode i has the reward-model score R_i (its ``outcome``); r^ref_{i,1..M_i} are the
scores of its reference responses, M_i ≤ ``maxref`` of them; k > 0 is the slope of the
logistic σ(x) = 1 / (1 + e^{−x}). Under a Bradley-Terry reward model, σ(R_i − r^ref_m) is the
model's probability that response i is preferred to reference m, so the shaped reward

    R'_i = (1/M_i) Σ_{m=1..M_i} σ(k · (R_i − r^ref_{i,m}))

is the response's win rate against its references: bounded in (0, 1), steepest around the
references and flat far from them. Where the references come from (``reference``):

* ``"group"``: the other episodes of the same group (leave-one-out): the first ``maxref`` of
  them in input order, so M_i = min(G − 1, maxref);
* ``"group_mean"``: one reference, the group mean (the episode itself included);
* ``"components"``: per-episode reward components named by ``components`` (the record's
  ``"rewards"`` object, e.g. the reward-model scores of SFT responses to the same prompt, as in
  the paper): the first ``maxref`` names, M_i = min(#names, maxref).

An episode without any reference (a singleton group with ``"group"``) gets σ(0) = 0.5, the
value of a tie, so every shaped reward stays in (0, 1); ``"group_mean"`` gives a singleton the
same 0.5 (its reference is itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.data.schema import is_component_name
from stepcredit.ops import group_centered
from stepcredit.shaping.registry import Shaped, ShapingError, register_transform

__all__ = ["component_names", "par", "sigmoid"]

PAR_PAPER = (
    "Reward Shaping to Mitigate Reward Hacking in RLHF "
    "(Fu, Zhao et al., 2025, arXiv:2502.18770)"
)
_WHO = "transform 'par'"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic σ(x) = 1 / (1 + e^{−x}), elementwise, without overflow.

    Computed from z = e^{−|x|} ∈ (0, 1]: σ(x) = 1/(1 + z) for x ≥ 0 and z/(1 + z) for x < 0,
    so that no exponential overflows (σ(±1e6) = 1 and 0 exactly, with no warning). Infinite
    inputs give 1 and 0.

    Args:
        x: any shape, float64.

    Returns:
        σ(x), same shape, in [0, 1] (in (0, 1) for |x| below ~36 and ~745 respectively).
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def component_names(text: str, who: str = _WHO) -> tuple[str, ...]:
    """Parse a comma-separated list of reward component names (``"ref_0, ref_1"``).

    Raises:
        ShapingError: an empty list, an empty or invalid name (names match
            ``[A-Za-z_][A-Za-z0-9_]*``), or a name given twice.
    """
    names = tuple(part.strip() for part in text.split(","))
    if names == ("",):
        raise ShapingError(f"{who}: components is empty; name the reward components, e.g. components='ref_0,ref_1'")
    for name in names:
        if not is_component_name(name):
            raise ShapingError(
                f"{who}: components={text!r} holds the invalid component name {name!r}; "
                "names are comma-separated and match [A-Za-z_][A-Za-z0-9_]*"
            )
    dup = [n for i, n in enumerate(names) if n in names[:i]]
    if dup:
        raise ShapingError(f"{who}: components={text!r} names '{dup[0]}' twice")
    return names


def _check(reference: str, components: str, k: float, maxref: int) -> tuple[str, ...]:
    """Validate the parameters; the component names used (the first ``maxref``) or ()."""
    if not (np.isfinite(k) and k > 0):
        raise ShapingError(f"{_WHO}: k={k!r} must be a finite number > 0 (the sigmoid slope)")
    if isinstance(maxref, bool) or not isinstance(maxref, (int, np.integer)) or maxref < 1:
        raise ShapingError(f"{_WHO}: maxref={maxref!r} must be an int >= 1 (the number of references used)")
    if reference not in ("group", "group_mean", "components"):
        raise ShapingError(f"{_WHO}: reference={reference!r} must be 'group', 'group_mean' or 'components'")
    if reference == "components":
        return component_names(components)[:maxref]
    if components.strip():
        raise ShapingError(
            f"{_WHO}: components={components!r} is only used with reference='components' "
            f"(reference={reference!r})"
        )
    return ()


def _requires(p: Mapping[str, Any]) -> tuple[str, ...]:
    if p["reference"] != "components":
        return ()
    return tuple(f"rewards.{n}" for n in _check(p["reference"], p["components"], p["k"], p["maxref"]))


def _group_references(group: np.ndarray, n_groups: int, maxref: int) -> tuple[np.ndarray, np.ndarray]:
    """For each episode, the first ``maxref`` other members of its group in input order.

    Args:
        group: [E] dense group codes.
        n_groups: G.
        maxref: the most references per episode.

    Returns:
        ``(index, valid)``: [E, W] episode indices and a bool mask of the references used
        (W = min(maxref + 1, largest group); row i's valid entries are its references).
    """
    E = group.shape[0]
    order = np.argsort(group, kind="stable")  # by group, input order within a group
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # the first maxref + 1 members hold maxref others whether or not the episode is among them
    W = int(min(maxref + 1, counts.max()))
    j = np.arange(W)
    inside = j[None, :] < counts[group][:, None]
    pos = np.minimum(starts[group][:, None] + j[None, :], E - 1)
    index = order[pos]
    valid = inside & (index != np.arange(E)[:, None])
    valid &= np.cumsum(valid, axis=1) <= maxref
    return index, valid


@register_transform(paper=PAR_PAPER, requires=_requires, writes=("outcome",))
def par(
    ro: Rollouts,
    *,
    reference: Literal["group", "group_mean", "components"] = "group",
    components: str = "",
    k: float = 1.0,
    maxref: int = 10,
) -> Shaped:
    """PAR: the outcome becomes its mean sigmoid preference over reference rewards, in (0, 1).

        R'_i = (1/M_i) Σ_{m=1..M_i} σ(k · (R_i − r^ref_{i,m})),   σ(x) = 1 / (1 + e^{−x}),

    with the references r^ref of ``reference`` (see the module docstring): the other members
    of the group (leave-one-out, the first ``maxref`` in input order), the group mean, or the
    named reward components (the first ``maxref`` names). An episode with no reference
    (singleton group, ``"group"``) gets σ(0) = 0.5. R' is increasing in R_i for fixed
    references, 0.5 when R_i equals its only reference, and computed without overflow for any
    |k(R − r)| (σ saturates to exactly 0 or 1 in float64 beyond |x| ≈ 745 and 37). Step
    rewards are not read or changed.

    Args:
        ro: rollouts; the outcome is the reward-model score. Needs the reward components named
            by ``components`` for ``reference="components"``.
        reference: where the references come from: "group" (the other episodes of the group),
            "group_mean" (the group mean) or "components" (per-episode reward components).
        components: comma-separated reward component names, e.g. "ref_0,ref_1" (reference=
            "components" only).
        k: the slope of the sigmoid (the official code's sigmoid_k), > 0.
        maxref: the most references used per episode, the first ones (reward_maxref), >= 1.

    Returns:
        Shaped rollouts with the outcome replaced by R'; diagnostics: ``references`` (mean
        M_i), ``no_reference`` (episodes with M_i = 0, given 0.5), ``mean_before`` and
        ``mean_after`` (mean outcome before and after).

    Reference: Reward Shaping to Mitigate Reward Hacking in RLHF (Fu, Zhao, Yao, Wang, Han,
    Xiao, 2025, arXiv:2502.18770): PAR uses "the latent preferences embedded within the reward
    model" as the RL reward and needs "only a single reference reward" (abstract); the formula
    above is the official code's (PorUna-byte/PAR@257865a2:trainers/reward_shaper.py,
    ``calculate_relative_sigmoid`` applied with ``reward_sigmoid`` and ``reward_relative``,
    defaults ``sigmoid_k=1``, ``reward_maxref=10`` in configs/config.py); the paper's own
    equation was not read (only its abstract was reachable). Differs from official code: the
    code's references are reward-model scores of SFT responses to the prompt (here:
    ``reference="components"``; the group and group-mean references are this library's
    additions for data without them); the code also subtracts a length penalty of
    0.01 · max(0, tokens − 300) before the sigmoid by default (``reward_penalize_length``),
    which is not applied here (chain a length transform before ``par`` for it).
    """
    names = _check(reference, components, k, maxref)
    R = ro.outcome
    E = ro.n_episodes
    if E == 0:
        return Shaped(ro, {"references": 0.0, "no_reference": 0, "mean_before": 0.0, "mean_after": 0.0})
    with np.errstate(over="ignore"):  # k (R − r) beyond float64 is ±inf: σ = 1 or 0
        if reference == "group_mean":
            centred = group_centered(R, ro.episode_group, ro.n_groups, singleton="zero")
            shaped = sigmoid(k * centred)
            m = np.ones(E)
        else:
            if reference == "group":
                index, valid = _group_references(ro.episode_group, ro.n_groups, maxref)
                refs = R[index]
            else:
                refs = np.stack([ro.episode_column(n, by=_WHO) for n in names], axis=1)
                valid = np.ones(refs.shape, dtype=bool)
            sig = np.where(valid, sigmoid(k * (R[:, None] - refs)), 0.0)
            m = valid.sum(axis=1).astype(np.float64)
            shaped = np.where(m > 0, sig.sum(axis=1) / np.maximum(m, 1.0), 0.5)
    diagnostics = {
        "references": float(m.mean()),
        "no_reference": int(np.count_nonzero(m == 0)),
        "mean_before": float(R.mean()),
        "mean_after": float(shaped.mean()),
    }
    return Shaped(ro.with_outcome(shaped), diagnostics)
