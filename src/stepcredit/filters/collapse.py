"""Credit filters for collapsed groups: ``zero_variance`` (drop or flag them) and ``replay``
(re-insert a remembered success into a group where every episode failed).

Notation: a group g holds the episodes i of one task with outcomes R_i; its spread is
Δ_g = max_i R_i − min_i R_i. A group is *collapsed* when Δ_g ≤ τ (``tolerance``; τ = 0: all
outcomes exactly equal): every group-relative estimator (GRPO, RLOO, Dr. GRPO) then gives all its
episodes advantage 0 (or, with GRPO's ``singleton="raw"``, a lone episode its raw outcome), so
the group costs compute and gives no learning signal ("advantage collapse").

Episodes that an earlier filter dropped (``credit.episode_weight`` 0) take no part: groups and
their spreads are computed over the remaining episodes, and dropped episodes keep weight 0.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from stepcredit.data import Credit, Rollouts, RolloutsError
from stepcredit.filters.prof import active_mask
from stepcredit.filters.registry import FilterError, Filtered, register_filter

__all__ = ["replay", "zero_variance"]

DAPO_PAPER = (
    "DAPO: An Open-Source LLM Reinforcement Learning System at Scale "
    "(Yu, Zhang, Zhu, Yuan, Zuo, Yue et al., 2025, arXiv:2503.14476)"
)
R3_PAPER = (
    "R³: Replay, Reflection, and Ranking Rewards for LLM Reinforcement Learning "
    "(Jiang, Zhao, Xu, Lin, Liu, Luan, Shang, Han, 2026, arXiv:2601.19620)"
)
STATE_VERSION = 1


def group_spread(ro: Rollouts, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group over the active episodes: count [G], min [G], max [G] of the outcome, and the
    [A] group code of each active episode (A = number of active episodes).

    Groups without an active episode have count 0, min +inf and max −inf.
    """
    G = ro.n_groups
    codes = ro.episode_group[active]
    out = ro.outcome[active]
    count = np.bincount(codes, minlength=G)
    lo = np.full(G, np.inf)
    hi = np.full(G, -np.inf)
    if codes.size:
        order = np.lexsort((out, codes))  # by group, then outcome: first = min, last = max
        sc = codes[order]
        first = np.r_[True, sc[1:] != sc[:-1]]
        last = np.r_[sc[1:] != sc[:-1], True]
        lo[sc[first]] = out[order][first]
        hi[sc[last]] = out[order][last]
    return count, lo, hi, codes


def _check_tolerance(who: str, tolerance: float) -> None:
    if tolerance < 0:
        raise FilterError(f"{who}: tolerance={tolerance} must be >= 0")


@register_filter(paper=DAPO_PAPER)
def zero_variance(
    ro: Rollouts,
    credit: Credit,
    *,
    action: Literal["drop", "flag"] = "drop",
    tolerance: float = 0.0,
    singletons: Literal["keep", "collapsed"] = "keep",
) -> Filtered:
    """Drop (or only count) the groups whose outcomes are all equal: advantage collapse.

        collapsed(g) = n_g ≥ 2 and Δ_g ≤ τ      (``singletons="keep"``)
        collapsed(g) = n_g ≥ 1 and Δ_g ≤ τ      (``singletons="collapsed"``: a group of one
                                                  episode counts as collapsed too)
        weight_i = 0 if collapsed(g(i)) and action = "drop", else 1.
    A group of one episode has no spread to compare within; verl's DAPO filter keeps it (its
    advantage is the estimator's singleton convention), which is the default here.

    Args:
        ro: rollouts (reads the outcome and the groups).
        credit: the estimator's credit; only ``episode_weight`` is read.
        action: ``"drop"`` (weight 0 for every episode of a collapsed group) or ``"flag"``
            (weights unchanged; only the diagnostics).
        tolerance: τ >= 0; outcomes within τ of each other count as equal (0: exactly equal).
        singletons: ``"keep"`` (a one-episode group is never collapsed) or ``"collapsed"``.

    Returns:
        Filtered with weight [E] in {0, 1}; diagnostics: ``collapsed_groups``,
        ``collapsed_fraction`` (of the groups), ``collapsed_episodes``,
        ``collapsed_episode_fraction`` (of the episodes), ``singleton_groups``,
        ``dropped_fraction`` (0 for ``"flag"``).

    Reference: DAPO: An Open-Source LLM Reinforcement Learning System at Scale (Yu, Zhang, Zhu,
    Yuan, Zuo, Yue et al., 2025, arXiv:2503.14476), dynamic sampling: groups whose accuracies are
    all 1 or all 0 are filtered out. Differs from official code:
    (volcengine/verl@004c8880:recipe/dapo/dapo_ray_trainer.py, ``kept_prompt_uids``, keeps a
    group when np.std of its metric > 0 or it has one member) there the std of equal floats can
    come out > 0 by rounding (np.mean of [0.1]·3 ≠ 0.1), here Δ_g = max − min is exact; DAPO then
    samples more prompts to refill the batch (here: the batch shrinks).
    """
    who = "filter 'zero_variance'"
    _check_tolerance(who, tolerance)
    active = active_mask(ro, credit)
    count, lo, hi, codes = group_spread(ro, active)
    equal = (count > 0) & (hi - lo <= tolerance)
    min_size = 1 if singletons == "collapsed" else 2
    collapsed = equal & (count >= min_size)
    ep_collapsed = np.zeros(ro.n_episodes, dtype=bool)
    ep_collapsed[np.flatnonzero(active)] = collapsed[codes]
    weight = active.astype(np.float64)
    if action == "drop":
        weight[ep_collapsed] = 0.0
    n_groups = int(np.sum(count > 0))
    n_eps = int(active.sum())
    n_coll = int(collapsed.sum())
    n_coll_eps = int(ep_collapsed.sum())
    diagnostics = {
        "collapsed_groups": n_coll,
        "collapsed_fraction": n_coll / n_groups if n_groups else 0.0,
        "collapsed_episodes": n_coll_eps,
        "collapsed_episode_fraction": n_coll_eps / n_eps if n_eps else 0.0,
        "singleton_groups": int(np.sum(count == 1)),
        "dropped_fraction": (n_coll_eps / n_eps if n_eps else 0.0) if action == "drop" else 0.0,
    }
    return Filtered(weight, diagnostics=diagnostics)


# ---------------------------------------------------------------------- replay
def _empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "batch": 0, "tick": 0, "groups": []}


def _read_state(state: dict[str, Any] | None, who: str) -> dict[str, Any]:
    """A deep copy of a valid state (the caller's dict is never modified)."""
    if state is None:
        return _empty_state()
    bad = FilterError(
        f"{who}: the state is not a replay memory (expected {{'version': {STATE_VERSION}, 'batch': int, "
        "'tick': int, 'groups': [{'group_id': str, 'tick': int, 'episodes': [record, ...]}, ...]}); "
        "pass None to start with an empty memory"
    )
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise bad
    for key in ("batch", "tick"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            raise bad
    groups = state.get("groups")
    if not isinstance(groups, list):
        raise bad
    seen = set()
    for g in groups:
        if not (
            isinstance(g, dict)
            and isinstance(g.get("group_id"), str)
            and isinstance(g.get("tick"), int)
            and isinstance(g.get("episodes"), list)
            and all(isinstance(r, dict) and isinstance(r.get("episode_id"), str) for r in g["episodes"])
        ) or g["group_id"] in seen:
            raise bad
        seen.add(g["group_id"])
    return copy.deepcopy(state)


def _signature(ro: Rollouts) -> tuple:
    """What two batches must share for their records to form one Rollouts: the step fields
    (``reward`` may be absent: it defaults to 0), whether each key field holds integers, and the
    reward component names."""
    keys = tuple(sorted((k, pa.types.is_integer(v.type)) for k, v in ro.key_values.items()))
    comps = tuple(sorted(getattr(ro, "episode_columns", {}) or {}))
    return tuple(f for f in ro.step_fields if f != "reward"), keys, comps


@register_filter(paper=R3_PAPER)
def replay(
    ro: Rollouts,
    credit: Credit,
    *,
    state: dict[str, Any] | None = None,
    success_threshold: float = 1.0,
    per_group: int = 1,
    max_groups: int = 1000,
    replay_weight: float = 1.0,
    tolerance: float = 0.0,
) -> Filtered:
    """Cross-context replay: re-insert a remembered success of the same task into a group where every episode failed.

    A group g of the batch *failed entirely* when Δ_g ≤ τ and max_i R_i < θ (θ =
    ``success_threshold``): its advantages have collapsed and no episode shows what success
    looks like. If the memory holds a successful episode (R ≥ θ) of the same group id from an
    earlier batch, the most recent one is appended to the batch as a new episode of group g,
    with episode id ``"<original id>#replay<b>"`` (b = the batch number, 0-based; a further
    ``"#2"``, ``"#3"``... if that id is taken), so that the re-run estimator sees a success
    among the failures. A group of one failed episode counts as failed entirely.

    Memory (the state): per group id, the last ``per_group`` successful episodes seen (stored as
    records, ``Rollouts.to_records`` dicts), for at most ``max_groups`` group ids; when a new
    group id would exceed that, the least recently updated group is forgotten. After the
    insertion step, every successful episode of this batch is remembered (in episode order, so
    the last one of a group is its most recent); inserted episodes are not stored again.
    The state is a JSON-serialisable dict, ``None`` on the first batch::

        {"version": 1, "batch": b, "tick": t,
         "groups": [{"group_id": ..., "tick": ..., "episodes": [record, ...]}, ...]}

    (``tick`` orders the updates, least recently updated first; within one batch, groups are
    ordered by the position of their last success). A remembered episode whose
    step fields, key types or reward components differ from the batch's cannot join it; it is
    skipped and counted in ``incompatible``.

    Place ``replay`` before ``zero_variance`` in a pipeline: groups it repairs are no longer
    collapsed, and groups it cannot repair are then dropped. The inserted episodes are validated
    from their records (``Rollouts.from_records``) and appended to the batch's arrays
    (``Rollouts.concat``): the cost grows with the episodes inserted, not with the batch.

    Args:
        ro: rollouts (reads the outcome and the groups; remembers whole records).
        credit: the estimator's credit; only ``episode_weight`` is read (episodes with weight 0
            are neither counted nor remembered).
        state: the memory returned by the previous batch (None: empty).
        success_threshold: θ; an episode succeeded when R ≥ θ.
        per_group: successful episodes remembered per group id (>= 1).
        max_groups: group ids remembered (>= 1).
        replay_weight: loss weight of an inserted episode (> 0).
        tolerance: τ >= 0; outcomes within τ count as equal.

    Returns:
        Filtered: ``rollouts`` = the input episodes in order, then the inserted ones (None when
        nothing was inserted); weight [E'] (1 for the input episodes kept by earlier filters,
        0 for those dropped, ``replay_weight`` for inserted ones); state = the updated memory;
        diagnostics: ``inserted``, ``failed_groups`` (groups that failed entirely),
        ``unrepaired_groups`` (of those, the ones with nothing to insert), ``incompatible``,
        ``remembered_groups``, ``remembered_episodes``, ``forgotten_groups`` (evicted now).

    Reference: R³: Replay, Reflection, and Ranking Rewards for LLM Reinforcement Learning (Jiang,
    Zhao, Xu, Lin, Liu, Luan, Shang, Han, 2026, arXiv:2601.19620): "a cross-context Replay
    strategy that maintains the intra-group advantage by recalling valuable examples from
    historical trajectories of the same query" (abstract). Only the abstract was available: the
    memory layout, its bounds, the choice of the most recent success and the collapse test are
    this library's, not the paper's. Differs from official code: none released ("Code and
    model will be released").
    """
    who = "filter 'replay'"
    _check_tolerance(who, tolerance)
    if per_group < 1:
        raise FilterError(f"{who}: per_group={per_group} must be >= 1")
    if max_groups < 1:
        raise FilterError(f"{who}: max_groups={max_groups} must be >= 1")
    if not replay_weight > 0:
        raise FilterError(f"{who}: replay_weight={replay_weight} must be > 0 (use no replay instead of 0)")
    mem = _read_state(state, who)
    batch = mem["batch"]
    groups: dict[str, dict[str, Any]] = {g["group_id"]: g for g in mem["groups"]}

    active = active_mask(ro, credit)
    count, lo, hi, _ = group_spread(ro, active)
    failed = (count > 0) & (hi - lo <= tolerance) & (hi < success_threshold)
    names = ro.group_names.to_pylist()

    # ---- insertion: the most recent remembered success of every group that failed entirely
    added: list[dict[str, Any]] = []
    incompatible = 0
    failed_ids = [names[g] for g in np.flatnonzero(failed)]
    candidates = [(gid, groups[gid]["episodes"][-1]) for gid in failed_ids if gid in groups and groups[gid]["episodes"]]
    if candidates:
        sig = _signature(ro)
        taken = set(ro.episode_id.to_pylist())
        for gid, rec in candidates:
            try:
                remembered = Rollouts.from_records([rec], source="<replay memory>")
            except RolloutsError as exc:
                raise FilterError(f"{who}: the state holds an invalid remembered episode ({exc})") from None
            if _signature(remembered) != sig:
                incompatible += 1
                continue
            new = copy.deepcopy(rec)
            base = f"{rec['episode_id']}#replay{batch}"
            eid, k = base, 1
            while eid in taken:
                k += 1
                eid = f"{base}#{k}"
            taken.add(eid)
            new["episode_id"] = eid
            new["group_id"] = gid
            added.append(new)

    # ---- memory update: the last per_group successes of each group of this batch
    success = np.flatnonzero(active & (ro.outcome >= success_threshold))
    forgotten = 0
    if success.size:
        codes = ro.episode_group[success]
        order = np.argsort(codes, kind="stable")  # by group, episode order within
        sc = codes[order]
        last = np.r_[sc[1:] != sc[:-1], True]
        ends = np.flatnonzero(last)
        seg_end = np.repeat(ends, np.diff(np.r_[-1, ends]))
        from_end = seg_end - np.arange(sc.size)  # 0 for the last success of its group
        keep = np.sort(success[order][from_end < per_group])
        records = ro.take(keep).to_records()
        tick = mem["tick"]
        updated: dict[str, None] = {}  # group ids in the order of their last success here
        for rec in records:  # bookkeeping of the JSON memory: one dict operation per record
            gid = rec["group_id"]
            g = groups.setdefault(gid, {"group_id": gid, "tick": tick, "episodes": []})
            g["episodes"] = (g["episodes"] + [rec])[-per_group:]
            updated.pop(gid, None)
            updated[gid] = None
        for i, gid in enumerate(updated):  # one tick per group updated: most recent last
            groups[gid]["tick"] = tick + i
        mem["tick"] = tick + len(updated)
    ordered = sorted(groups.values(), key=lambda g: g["tick"])
    for g in ordered:  # a smaller per_group than the state was written with
        g["episodes"] = g["episodes"][-per_group:]
    if len(ordered) > max_groups:
        forgotten = len(ordered) - max_groups
        ordered = ordered[forgotten:]
    mem["groups"] = ordered
    mem["batch"] = batch + 1

    weight = active.astype(np.float64)
    out_ro = None
    if added:
        out_ro = Rollouts.concat([ro, Rollouts.from_records(added, source="<replay>")])
        weight = np.concatenate([weight, np.full(len(added), float(replay_weight))])
    diagnostics = {
        "inserted": len(added),
        "failed_groups": int(failed.sum()),
        "unrepaired_groups": int(failed.sum()) - len(added),
        "incompatible": incompatible,
        "remembered_groups": len(ordered),
        "remembered_episodes": sum(len(g["episodes"]) for g in ordered),
        "forgotten_groups": forgotten,
    }
    return Filtered(weight, rollouts=out_ro, diagnostics=diagnostics, state=mem)
