"""Which pipelines compute each group from that group alone (*group-local* pipelines).

A pipeline is group-local when the credit of every episode depends only on the episodes of its
own group: running it on any split of the batch into whole groups, and concatenating the parts,
gives the same credit as running it on the whole batch. Only group-local pipelines may run on
a partitioned dataset (``stepcredit advantages DIR --backend ray``), where each worker sees some
of the groups.

    problems = batch_dependence(pipe)     # [] when group-local, else one reason per stage

A stage that uses batch statistics (GRPO with ``scale="batch"``, REINFORCE++'s batch
normalisation, GAE whitening, SPA's progress model fitted on the whole batch, LASER-D's length
targets) is not group-local. Every built-in stage is classified in the tables below, and the
test suite checks each classification that says "local" against a split-and-concatenate run on
random inputs. A stage registered by a user is not classified and counts as batch-dependent
until :func:`declare_group_local` says otherwise.

Stateful stages are classified by their effect on one run from their initial state (``state``
None), which is what each partition of a dataset run does; their state is not carried between
partitions, so a dataset run refuses ``--state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["batch_dependence", "classified", "declare_group_local", "is_group_local", "stage_dependence"]

#: (kind, name) -> rule(params) -> None when group-local with these (bound) parameters, else
#: the reason it is not.
Rule = Callable[[Mapping[str, Any]], "str | None"]


def _local(reason: str) -> Rule:
    """Group-local whatever the parameters (``reason`` says why, for the reader)."""
    return lambda p: None


def _batch(reason: str) -> Rule:
    """Batch-dependent whatever the parameters."""
    return lambda p: reason


def _unless(test: Callable[[Mapping[str, Any]], bool], reason: str) -> Rule:
    return lambda p: reason if test(p) else None


_RULES: dict[tuple[str, str], Rule] = {
    # ----------------------------------------------------------------- estimators
    ("estimator", "grpo"): _unless(lambda p: p.get("scale") == "batch", "scale='batch' divides by the batch's standard deviation"),
    ("estimator", "drgrpo"): _local("group mean baseline"),
    ("estimator", "rloo"): _local("leave-one-out within the group"),
    ("estimator", "reinforce_pp"): _batch("REINFORCE++ normalises the advantages over the whole batch"),
    ("estimator", "gae"): _unless(lambda p: bool(p.get("whiten")), "whiten=True whitens over the whole batch"),
    ("estimator", "gigpo"): _local("episode and step groups both lie inside a group"),
    ("estimator", "salt"): _local("steps merge only within a group"),
    ("estimator", "oprl"): _local("RLOO of the group's outcomes plus the group's step rewards"),
    ("estimator", "pav"): _local("the base advantage plus each episode's own progress"),
    ("estimator", "potential"): _local("each episode's shaped return minus its group's mean"),
    ("estimator", "igpo"): _local("turn rewards normalised over the group's turns"),
    ("estimator", "turning_point"): _local("normalised over the group's episodes at each step index"),
    ("estimator", "tree"): _local("node values from the episodes of the node's own group"),
    ("estimator", "redistribute"): _local("each episode's base advantage, spread over its steps"),
    ("estimator", "spa"): _unless(
        lambda p: p.get("variant") != "code" and p.get("scope") != "group",
        "scope='global' fits the progress model on the whole batch (use scope='group')",
    ),
    # ----------------------------------------------------------------- transforms
    ("transform", "composite"): _local("per episode; from its initial state the weights and multipliers are constants"),
    ("transform", "gated"): _local("per episode"),
    ("transform", "laser"): _local("per episode"),
    ("transform", "laser_d"): _batch("its length targets come from the lengths monitored over the batch"),
    ("transform", "par"): _local("references from the episode's own group or components"),
    ("transform", "prm_clip"): _local("per step"),
    ("transform", "prm_delta"): _local("per episode"),
    ("transform", "prm_last"): _local("per episode"),
    ("transform", "prm_mean"): _local("per episode"),
    ("transform", "prm_min"): _local("per episode"),
    ("transform", "renorm"): _local("per step"),
    ("transform", "reward_fn"): _local("the user function sees one episode"),
    ("transform", "tool_call"): _local("per step"),
    # ----------------------------------------------------------------- filters
    ("filter", "prof"): _local("ranks within a group and correctness class (the batch centring is a constant there)"),
    ("filter", "replay"): _local("from an empty memory nothing is replayed"),
    ("filter", "zero_variance"): _local("per group"),
}


def declare_group_local(kind: str, name: str, rule: Rule | bool = True) -> None:
    """Classify a (user-registered) stage for dataset runs.

    Args:
        kind: ``"estimator"``, ``"transform"`` or ``"filter"``.
        name: its registry name.
        rule: True (always group-local), or a function of the stage's bound parameters that
            returns None when group-local and otherwise the reason it is not.
    """
    if kind not in ("estimator", "transform", "filter"):
        raise ValueError(f"kind must be 'estimator', 'transform' or 'filter', got {kind!r}")
    _RULES[(kind, name)] = _local("declared") if rule is True else rule  # type: ignore[assignment]


def stage_dependence(kind: str, name: str, params: Mapping[str, Any]) -> str | None:
    """None when the stage is group-local with these parameters, else the reason it is not."""
    rule = _RULES.get((kind, name))
    if rule is None:
        return (
            "not classified as group-local (a stage registered outside stepcredit: "
            "declare it with stepcredit.locality.declare_group_local)"
        )
    return rule(params)


def batch_dependence(pipe) -> list[str]:
    """Why ``pipe`` is not group-local: one line per stage that uses the batch ([] when local)."""
    out = []
    for st in pipe.stages:
        reason = stage_dependence(st.kind, st.name, st.params)
        if reason:
            out.append(f"{st.kind} '{st.name}': {reason}")
    return out


def is_group_local(pipe) -> bool:
    """Whether every stage of ``pipe`` computes each group from that group alone."""
    return not batch_dependence(pipe)


def classified() -> set[tuple[str, str]]:
    """The (kind, name) pairs with a rule (for the test that every built-in stage has one)."""
    return set(_RULES)
