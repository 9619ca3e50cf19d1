"""Hypothesis strategies for ragged rollouts, aimed at the cases where estimators go wrong.

:func:`rollout_records` draws a list of episode records (the JSONL record format) that reaches:

* singleton groups, and one huge group (20..64 episodes) now and then;
* all-equal outcomes, near-equal outcomes (1e-7 apart), binary, small-integer and float
  outcomes, each group with its own offset (0, ±1e6, 1e6 + 0.5), so a group can be
  1e6 + 1e-7 noise;
* length-1 episodes (often) and longer ones;
* group ids that are unsorted, non-contiguous (episodes of different groups interleaved),
  unicode, empty or numeric-looking strings;
* optional step fields: ``value`` (possibly around 1e6), ``tokens`` (0 allowed), ``reward``
  (in every step, in none, or only in some: an absent reward is 0), unicode ``state`` strings
  and ``action`` strings; with ``extra``: ``process`` (in [0, 1]) and ``p_answer`` (in (0, 1],
  exact repeats, so gains of exactly 0, likely), ``grounding`` (0 or 1) and ``importance`` (>= 0, zeros
  likely); with ``tree``: ``node`` ids of tree rollouts (an episode copies the node ids of a
  prefix of an earlier episode of its group, then branches off with new ids; the ids restart
  in every group, so the same id names different nodes in different groups);
  with ``components``: a ``rewards`` object of named reward components in every episode (the
  same 0..4 names everywhere; values 0, ±1, ±1e6, near-equal 0.3 and 0.3 + 1e-7, integers,
  moderate floats) and, drawn per rollout unless ``reference`` says otherwise, a ``reference``
  string (JSON-like tool-call text, unicode) in every step.

Within one group the outcomes stay on one scale (offset + values of at most ~10): a group that
mixes 0 and 2e6 with a member at 1e6 + 1e-7 has no float64 representation of that member's
advantage to 1e-9, whatever the algorithm, and would test the format, not the estimator.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from stepcredit import Rollouts

__all__ = [
    "COMPONENT_NAMES",
    "LARGE_OFFSET_EXAMPLES",
    "REFERENCES",
    "group_outcomes",
    "rollout_records",
    "rollouts",
    "steps_of",
]

GROUP_NAMES = ("g0", "g1", "g10", "g2", "b", "a", "7", "-3", "00", "", " ", "任务-1", "Ωmega", "é", "🙂")
STATE_TEXT = st.text(
    alphabet=st.sampled_from("ab01 ßéΩж任务🙂\n\t\"'\\"), min_size=0, max_size=6
)
# near-duplicates on purpose: "normalized" matching merges "s0", "S0" and " s0\t"
STATE_POOL = st.sampled_from(("s0", "S0", " s0\t", "s1", "s 1", "s  1", "ж", "任务"))
ACTIONS = ("left", "right", "search[ünïcode]", "", "click 🙂")
# reward component names (valid: [A-Za-z_][A-Za-z0-9_]*) and values
COMPONENT_NAMES = ("format", "correct", "ref_0", "ref_1", "_x", "A9", "len", "Z")
COMPONENT_VALUE = st.one_of(
    st.sampled_from((0.0, 1.0, -1.0, 1e6, -1e6, 0.3, 0.3 + 1e-7, 0, 1, -2)),
    st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False),
)
REFERENCES = (
    '{"name": "search", "parameters": {"query": "weather"}}',
    '{"name": "search", "parameters": {"query": "Wetter 🙂"}}',
    '{"name": "calc", "parameters": {"a": 1, "b": 2.5}}',
    "answer[42]",
    "",
    "任务",
)

# offset + value keeps a group's outcomes on one scale (see the module docstring)
OFFSETS = (0.0, 0.0, 1e6, -1e6, 1e6 + 0.5)
MODERATE = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)


@st.composite
def group_outcomes(draw: st.DrawFn, size: int) -> list[float]:
    """The ``size`` outcomes of one group."""
    offset = draw(st.sampled_from(OFFSETS))
    kind = draw(st.sampled_from(("binary", "equal", "near", "float", "small_int")))
    if kind == "binary":
        values = draw(st.lists(st.sampled_from((0.0, 1.0)), min_size=size, max_size=size))
    elif kind == "equal":
        values = [draw(MODERATE)] * size
    elif kind == "near":
        base = draw(st.one_of(st.just(0.0), st.just(1.0), MODERATE))
        ks = draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))
        values = [base + k * 1e-7 for k in ks]
    elif kind == "float":
        values = draw(st.lists(MODERATE, min_size=size, max_size=size))
    else:
        values = [float(v) for v in draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size))]
    return [offset + v for v in values]


PROB = st.one_of(st.sampled_from((0.0, 0.5, 1.0, 0.25)), st.floats(0.0, 1.0))
POSITIVE_PROB = st.one_of(st.sampled_from((0.5, 1.0, 0.25)), st.floats(1e-3, 1.0))  # log p is finite


def steps_of(
    draw: st.DrawFn,
    n: int,
    fields: dict[str, Any],
) -> list[dict[str, Any]]:
    """``n`` step dicts with the step fields chosen for the whole rollout."""
    steps = []
    for _ in range(n):
        step: dict[str, Any] = {}
        if fields.get("extra"):
            step["process"] = draw(PROB)
            step["p_answer"] = draw(POSITIVE_PROB)
            step["grounding"] = draw(st.sampled_from((0.0, 1.0)))
            step["importance"] = draw(st.one_of(st.just(0.0), st.floats(0.0, 5.0)))
        if fields["value"] is not None:
            step["value"] = fields["value"] + draw(MODERATE)
        if fields["tokens"]:
            step["tokens"] = draw(st.integers(0, 12))
        if fields["reward"] == "all" or (fields["reward"] == "partial" and draw(st.booleans())):
            step["reward"] = draw(st.one_of(st.sampled_from((0.0, 1.0, -1.0)), MODERATE))
        if fields["state"] == "pool":  # few distinct states: anchor states recur in a group
            step["state"] = draw(STATE_POOL)
        elif fields["state"]:
            step["state"] = draw(STATE_TEXT)
        if fields["action"]:
            step["action"] = draw(st.sampled_from(ACTIONS))
        if fields.get("reference"):
            step["reference"] = draw(st.sampled_from(REFERENCES))
        steps.append(step)
    return steps


@st.composite
def rollout_records(
    draw: st.DrawFn,
    *,
    value: bool | None = None,
    tokens: bool | None = None,
    state: bool | None = None,
    action: bool | None = None,
    max_groups: int = 6,
    max_group_size: int = 6,
    max_steps: int = 5,
    huge: bool = True,
    extra: bool = False,
    tree: bool = False,
    components: bool = False,
    reference: bool | None = None,
) -> list[dict[str, Any]]:
    """A list of episode records (see the module docstring).

    Args:
        value: every step has ``value`` (True), none has (False) or either (None: drawn).
        tokens: the same for ``tokens``.
        state: the same for ``state``; the states come from a small pool (so that they
            recur: anchor states) or are random text, drawn per rollout.
        action: the same for ``action``.
        max_groups, max_group_size, max_steps: size bounds of an ordinary draw.
        huge: allow one group of 20..64 episodes now and then.
        extra: every step has ``process``, ``p_answer``, ``grounding`` and ``importance``.
        tree: every step has a ``node`` id and the episodes of a group form a tree.
        components: every episode has a ``rewards`` object with the same 0..4 component names.
        reference: every step has a ``reference`` string (True), none has (False) or either
            (None: drawn when ``components`` is set, else none). The default draws nothing
            extra, so the other strategies' examples are unchanged.
    """
    n_groups = draw(st.integers(1, max_groups))
    sizes = [draw(st.one_of(st.just(1), st.integers(1, max_group_size))) for _ in range(n_groups)]
    if huge and draw(st.integers(0, 7)) == 0:
        sizes[draw(st.integers(0, n_groups - 1))] = draw(st.integers(20, 64))
    names = draw(
        st.lists(
            st.one_of(st.sampled_from(GROUP_NAMES), st.text(max_size=4)),
            min_size=n_groups,
            max_size=n_groups,
            unique=True,
        )
    )
    fields = {
        "value": (
            draw(st.sampled_from((0.0, 0.0, 1e6)))
            if (value if value is not None else draw(st.booleans()))
            else None
        ),
        "tokens": tokens if tokens is not None else draw(st.booleans()),
        "reward": draw(st.sampled_from(("none", "all", "partial"))),
        "state": (
            draw(st.sampled_from(("pool", "text")))
            if (state if state is not None else draw(st.booleans()))
            else False
        ),
        "action": action if action is not None else draw(st.booleans()),
        "extra": extra,
        "reference": reference if reference is not None else (components and draw(st.booleans())),
    }
    comp_names = (
        draw(st.lists(st.sampled_from(COMPONENT_NAMES), min_size=0, max_size=4, unique=True))
        if components
        else []
    )
    episodes = []
    for g, size in enumerate(sizes):
        for outcome in draw(group_outcomes(size)):
            episodes.append((names[g], outcome))
    # interleave the groups: episodes of one group end up non-contiguous and unsorted
    episodes = draw(st.permutations(episodes))
    records = []
    paths: dict[str, list[list[str]]] = {}  # tree: the node paths of a group's episodes so far
    for k, (gid, outcome) in enumerate(episodes):
        n_steps = draw(st.one_of(st.just(1), st.integers(1, max_steps)))
        steps = steps_of(draw, n_steps, fields)
        if tree:
            earlier = paths.setdefault(gid, [])
            prefix: list[str] = []
            if earlier and draw(st.integers(0, 3)) > 0:  # usually share a prefix
                parent = draw(st.sampled_from(earlier))
                prefix = parent[: draw(st.integers(0, min(len(parent), n_steps)))]
            fresh = sum(len(p) for p in earlier)  # ids unique within the group
            path = prefix + [f"n{fresh + t}" for t in range(n_steps - len(prefix))]
            earlier.append(path)
            for step, node in zip(steps, path):
                step["node"] = node
        rec: dict[str, Any] = {
            "episode_id": f"ep-{k}-é",
            "group_id": gid,
            "outcome": outcome,
            "steps": steps,
        }
        if components:
            rec["rewards"] = {name: draw(COMPONENT_VALUE) for name in comp_names}
        records.append(rec)
    return records


def rollouts(**kwargs: Any) -> st.SearchStrategy[Rollouts]:
    """Validated :class:`Rollouts` built from :func:`rollout_records` (same arguments)."""
    return rollout_records(**kwargs).map(Rollouts.from_records)


def _examples() -> list[list[dict[str, Any]]]:
    """Fixed records at a large common offset, given to ``@example`` so that every run checks
    them (the random search reaches such batches only now and then). Every step has ``value``,
    ``tokens`` and ``state``, so every estimator can run on them."""
    # four singleton groups at 1e6 + k·1e-7: group-centred values keep the offset ("raw")
    singletons = [
        {
            "episode_id": f"s{k}",
            "group_id": f"g{k}",
            "outcome": 1e6 + k * 1e-7,
            "steps": [{"value": 1e6, "tokens": 1 + k}] * (1 + k % 2),
        }
        for k in range(4)
    ]
    # GAE advantages all near 1e6 with O(1) spread (outcome 1e6 + 1, values in [0, 1.2])
    near_values = [
        {
            "episode_id": f"v{k}",
            "group_id": "a" if k % 3 else "b",
            "outcome": 1e6 + 1.0,
            "steps": [{"value": 0.1 * k + 0.01 * k * k, "tokens": 1 + k % 3}],
        }
        for k in range(8)
    ]
    # the same singletons behind a first episode of weight 0 (no tokens) at another scale
    behind_zero_weight = [
        {"episode_id": "z", "group_id": "z", "outcome": 0.0, "steps": [{"value": 0.0, "tokens": 0}]}
    ] + [
        {
            "episode_id": f"s{k}",
            "group_id": f"g{k}",
            "outcome": 1e6 + k * 1e-7,
            "steps": [{"value": 1e6, "tokens": 1}],
        }
        for k in range(4)
    ]
    examples = [singletons, near_values, behind_zero_weight]
    # every step field on every step, so that every estimator can run on them: states and
    # actions that recur (anchor states, merged steps), a node path per episode (its first step
    # shared with the previous episode of its group), the extra fields
    for records in examples:
        for i, rec in enumerate(records):
            rec["steps"] = [
                {
                    **step,
                    "state": f"s{(i + t) % 3}",
                    "action": f"a{t % 2}",
                    "node": "root" if t == 0 else f"n{i}-{t}",
                    "process": 0.25 * ((i + t) % 5),
                    "p_answer": 0.5 + 0.1 * ((i * t) % 4),
                    "grounding": float((i + t) % 2),
                    "importance": float(t % 3),
                }
                for t, step in enumerate(rec["steps"])
            ]
    return examples


LARGE_OFFSET_EXAMPLES: list[list[dict[str, Any]]] = _examples()
