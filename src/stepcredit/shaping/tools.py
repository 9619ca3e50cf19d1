"""Tool-call rewards (ToolRL): a format reward and a correctness reward from matching the
step's tool calls against its reference calls.

Notation (ToolRL, section 3.3): the step's predicted calls P = {P_1..P_m} (parsed from its
``action``) and reference calls G = {G_1..G_n} (parsed from its ``reference``); N_P and N_G
the sets of their tool names; keys(C) the parameter names of call C and C[k] the value of
parameter k. A call is a tool name and an object of arguments.

Accepted text (for ``action`` and ``reference`` alike):

* a JSON call object ``{"name": "search", "arguments": {"q": "x"}}``; the arguments may be
  under ``"arguments"``, ``"parameters"`` or ``"args"`` (first found), may be a JSON-encoded
  object string (OpenAI), and may be absent (no parameters);
* an OpenAI tool call ``{"type": "function", "function": {<call>}}`` (or ``"function_call"``),
  or a message ``{"tool_calls": [...]}``;
* a JSON array of calls (``[]``: no call);
* text with ``<tool_call>...</tool_call>`` blocks (ToolRL, Hermes, Qwen), each holding JSON
  calls or arrays of calls separated by whitespace (ToolRL: one call per line); text outside
  the blocks is ignored.

Anything else (invalid JSON, a JSON value of another shape, a call without a string name,
arguments that are not an object, an unclosed block) is not a well-formed call.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.data.errors import RolloutsError
from stepcredit.shaping.registry import Shaped, ShapingError, register_transform

__all__ = ["parse_tool_calls", "tool_call", "tool_call_scores"]

TOOLRL_PAPER = (
    "ToolRL: Reward is All Tool Learning Needs (Qian, Acikgoz, He, Wang, Chen, Hakkani-Tür, Tur, "
    "Ji, 2025, arXiv:2504.13958)"
)
_WHO = "transform 'tool_call'"
_ARG_KEYS = ("arguments", "parameters", "args")
_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)

Call = tuple[str, dict[str, Any]]


class _Malformed(Exception):
    pass


def _call(obj: Any) -> Call:
    if not isinstance(obj, dict):
        raise _Malformed
    if "name" not in obj:  # an OpenAI tool call wraps the call in "function"
        for key in ("function", "function_call"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    name = obj.get("name")
    if not isinstance(name, str):
        raise _Malformed
    args: Any = {}
    for key in _ARG_KEYS:
        if key in obj:
            args = obj[key]
            break
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise _Malformed from None
    if not isinstance(args, dict):
        raise _Malformed
    return name, args


def _calls(obj: Any) -> list[Call]:
    if isinstance(obj, dict) and "tool_calls" in obj and "name" not in obj:
        obj = obj["tool_calls"]
    if isinstance(obj, list):
        return [_call(c) for c in obj]
    return [_call(obj)]


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def _block_calls(block: str) -> list[Call]:
    """The calls of one <tool_call> block: JSON values (calls or arrays of calls) separated by
    whitespace, e.g. one call per line."""
    out: list[Call] = []
    pos = _SPACE.match(block).end()
    while pos < len(block):
        obj, pos = _DECODER.raw_decode(block, pos)  # ValueError on anything that is not JSON
        out.extend(_calls(obj))
        pos = _SPACE.match(block, pos).end()
    return out


def parse_tool_calls(text: Any) -> list[Call] | None:
    """The tool calls of ``text`` as ``[(name, arguments), ...]``, or None if it is not a
    well-formed call, list of calls, or tagged text (see the module docstring)."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    try:
        if s[:1] in ("{", "["):
            return _calls(json.loads(s))
        if "<tool_call>" in s:
            if s.count("<tool_call>") != s.count("</tool_call>"):
                return None
            blocks = _BLOCK.findall(s)
            if not blocks:
                return None
            return [c for b in blocks for c in _block_calls(b)]
    except (ValueError, _Malformed, RecursionError):
        return None
    return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), booleans only equal booleans, strings
    exactly, arrays and objects element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _jaccard(a, b) -> float:
    union = len(set(a) | set(b))
    return 1.0 if union == 0 else len(set(a) & set(b)) / union


def _multiset_jaccard(a: list[str], b: list[str]) -> float:
    if sorted(a) == sorted(b):
        return 1.0
    counts: dict[str, int] = {}
    for x in a:
        counts[x] = counts.get(x, 0) + 1
    inter = 0
    for x in b:
        if counts.get(x, 0) > 0:
            counts[x] -= 1
            inter += 1
    return inter / (len(a) + len(b) - inter)


def _pair_score(g: Call, p: Call) -> float:
    """r_param + r_value of one matched pair (the same tool name)."""
    gk, pk = g[1], p[1]
    return _jaccard(gk, pk) + sum(1.0 for k, v in gk.items() if k in pk and _same_or_false(pk[k], v))


def _same_or_false(a: Any, b: Any) -> bool:
    try:
        return _same(a, b)
    except RecursionError:  # values nested deeper than Python's recursion limit: no match
        return False


def _max_assignment(w: list[list[float]]) -> float:
    """The largest Σ w[i][σ(i)] over one-to-one matchings of rows to columns (w >= 0, so a
    maximum-cardinality matching is optimal): exhaustive for small sides, else the Hungarian
    algorithm on the cost max(w) − w."""
    n_rows, n_cols = len(w), len(w[0])
    if n_rows == 1:
        return max(w[0])
    if n_cols == 1:
        return max(row[0] for row in w)
    if min(n_rows, n_cols) <= 3 and max(n_rows, n_cols) <= 6:
        if n_rows <= n_cols:
            picks = itertools.permutations(range(n_cols), n_rows)
            return max(sum(w[i][c] for i, c in enumerate(cols)) for cols in picks)
        picks = itertools.permutations(range(n_rows), n_cols)
        return max(sum(w[r][j] for j, r in enumerate(rows)) for rows in picks)
    return _hungarian(np.array(w, dtype=np.float64))


def _hungarian(w: np.ndarray) -> float:
    """Maximum-weight assignment value of a non-negative [r, c] matrix (Kuhn–Munkres with
    potentials, O(n³), on the square cost matrix padded with zeros)."""
    n_rows, n_cols = w.shape
    n = max(n_rows, n_cols)
    cost = np.zeros((n, n))
    cost[:n_rows, :n_cols] = w.max() - w
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[j] = row (1-based) assigned to column j
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        way = np.zeros(n + 1, dtype=np.int64)
        while True:
            used[j0] = True
            i0 = match[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    return float(sum(w[match[j] - 1, j - 1] for j in range(1, n + 1) if match[j] <= n_rows and j <= n_cols))


def _match_total(gt: list[Call], pd: list[Call], matching: str) -> float:
    """Σ over matched pairs of r_param + r_value; only calls of the same tool name match."""
    if matching == "greedy":  # the official code: reference calls in order, best unused call
        used: set[int] = set()
        total = 0.0
        for g in gt:
            best, best_i = 0.0, -1
            for i, p in enumerate(pd):
                if i in used or p[0] != g[0]:
                    continue
                s = _pair_score(g, p)
                if s > best:
                    best, best_i = s, i
            if best_i >= 0:
                used.add(best_i)
                total += best
        return total
    by_name: dict[str, list[Call]] = {}
    for p in pd:
        by_name.setdefault(p[0], []).append(p)
    total = 0.0
    for name in dict.fromkeys(g[0] for g in gt):
        ps = by_name.get(name)
        if ps:
            total += _max_assignment([[_pair_score(g, p) for p in ps] for g in gt if g[0] == name])
    return total


def tool_call_scores(
    gt: list[Call],
    pd: list[Call] | None,
    *,
    matching: Literal["optimal", "greedy"] = "optimal",
    name_match: Literal["set", "multiset"] = "set",
    empty_reference: Literal["zero", "match"] = "zero",
) -> tuple[bool, float]:
    """(format ok, R_max / S_max ∈ [0, 1]) of predicted calls ``pd`` (None: not well formed)
    against reference calls ``gt``; the fraction is NaN for an empty reference under
    ``empty_reference="zero"`` (no correctness reward)."""
    if not gt:
        if empty_reference == "zero":
            return pd is not None, float("nan")
        return pd is not None, 1.0 if pd == [] else 0.0
    if pd is None:
        return False, 0.0
    gn, pn = [g[0] for g in gt], [p[0] for p in pd]
    r_name = _jaccard(gn, pn) if name_match == "set" else _multiset_jaccard(gn, pn)
    s_max = 1.0 + len(gt) + sum(len(g[1]) for g in gt)
    return True, (r_name + _match_total(gt, pd, matching)) / s_max


def _writes(p: Mapping[str, Any]) -> tuple[str, ...]:
    return ("outcome",) if p["target"] == "outcome" else ("reward",)


@register_transform(paper=TOOLRL_PAPER, requires=("action", "reference"), writes=_writes)
def tool_call(
    ro: Rollouts,
    *,
    target: Literal["reward", "outcome"] = "reward",
    format_max: float = 1.0,
    format_min: float = 0.0,
    correct_max: float = 3.0,
    correct_min: float = -3.0,
    matching: Literal["optimal", "greedy"] = "optimal",
    name_match: Literal["set", "multiset"] = "set",
    empty_reference: Literal["zero", "match"] = "zero",
) -> Shaped:
    """ToolRL reward per step: format reward + correctness from tool names, parameter names
    and parameter values matched against the step's reference calls.

        R_format = format_max if the action is a well-formed call (or list), else format_min
                   (paper: {0, 1});
        r_name   = |N_G ∩ N_P| / |N_G ∪ N_P|                            ∈ [0, 1];
        r_param  = Σ_{G_j ∈ G} |keys(G_j) ∩ keys(P_j)| / |keys(G_j) ∪ keys(P_j)|   ∈ [0, |G|];
        r_value  = Σ_{G_j ∈ G} Σ_{k ∈ keys(G_j)} 1[G_j[k] = P_j[k]]        ∈ [0, Σ_j |keys(G_j)|];
        S_max    = 1 + |G| + Σ_j |keys(G_j)|,   R_max = r_name + max over matchings (r_param + r_value);
        R_correct = (correct_max − correct_min) · R_max / S_max + correct_min
                    (paper: 6 · R_max / S_max − 3 ∈ [−3, 3]);
    with P_j the predicted call matched to G_j (unmatched: 0). Only calls of the same tool
    name are matched (as in the official code; the paper does not say); the matching is the
    one maximising R_max (``"optimal"``, paper) or the code's greedy pass (``"greedy"``:
    reference calls in order, each taking the best-scoring unused call). A key set that is
    empty on both sides counts as a full match (1). An action that is not well formed gets
    format_min and correct_min, never an exception.

    Steps: the reward goes to steps whose ``reference`` is not empty text (``""``) and not
    JSON ``null``; other steps get nothing (tool-call steps of an agent carry a reference,
    the rest give ``""``). A reference with no call (``[]``) gives no correctness reward
    (``empty_reference="zero"``, the official code) or correct_max when the action makes no
    call and correct_min otherwise (``"match"``: rewards declining to call a tool).

        ``target="reward"``:  r'_t = r_t + R_format,t + R_correct,t;
        ``target="outcome"``: R'_i = R_i + Σ_t (R_format,t + R_correct,t), step rewards kept.

    Args:
        ro: rollouts with ``action`` (the step's call text) and ``reference`` (its reference
            call text) step fields.
        target: ``"reward"`` (step rewards) or ``"outcome"`` (summed into the outcome).
        format_max: R_format of a well-formed action (paper: 1).
        format_min: R_format of a malformed one (paper: 0).
        correct_max: R_correct of a perfect match (paper: 3).
        correct_min: R_correct of no match (paper: −3).
        matching: ``"optimal"`` (paper) or ``"greedy"`` (official code).
        name_match: r_name over name sets (``"set"``, paper) or multisets (``"multiset"``,
            official code: [a, a] vs [a] scores 1/2).
        empty_reference: ``"zero"`` or ``"match"`` for a reference with no call (see above).

    Returns:
        Shaped rollouts; diagnostics: ``referenced_steps``, ``malformed_actions`` (referenced
        steps whose action is not well formed), ``format_rate`` and ``mean_correct`` (over
        referenced steps; mean_correct over those with a correctness reward), ``exact_rate``
        (R_max = S_max), ``added`` (sum of the rewards added).

    Raises:
        ShapingError: format_min > format_max or correct_min > correct_max.
        RolloutsError: a reference that is not a well-formed call, naming episode and step.

    Reference: ToolRL: Reward is All Tool Learning Needs (Qian et al., 2025, arXiv:2504.13958),
    section 3.3 (read in the paper text): R_final = R_format + R_correct ∈ [−3, 4]; headline
    (abstract): 17% over base models and 15% over SFT models. The paper checks the format of
    <think>/<tool_call>/<response> tags as required by the ground truth; here the action is
    the call itself, so the format reward checks that it parses as calls.
    Differs from official code: qiancheng0/ToolRL, read in its fork
    WingchunSiu/ToolRL@bcd6cf82:verl/utils/reward_score/rlla.py (compute_tool_call_reward,
    match_score): greedy matching and multiset name overlap (offered as
    ``matching="greedy"``, ``name_match="multiset"``); values compared with Python ``==``
    (so ``true == 1`` there, not here); a ground truth without <tool_call> gives correctness 0
    (``empty_reference="zero"``).
    """
    if format_min > format_max:
        raise ShapingError(f"{_WHO}: parameter format_min={format_min!r} must be <= format_max={format_max!r}")
    if correct_min > correct_max:
        raise ShapingError(f"{_WHO}: parameter correct_min={correct_min!r} must be <= correct_max={correct_max!r}")
    ro.require(("action", "reference"), by=_WHO)
    actions = ro.key_values["action"].to_pylist()
    refs = ro.key_values["reference"].to_pylist()
    S = ro.n_steps
    added = np.zeros(S)
    gt_cache: dict[str, list[Call] | None] = {}
    n_ref = n_bad = n_exact = n_correct = 0
    sum_correct = 0.0
    for s in range(S):  # parsing text is per step
        ref = refs[s]
        if ref is None or (isinstance(ref, str) and ref.strip() in ("", "null")):
            continue
        key = ref if isinstance(ref, str) else repr(ref)
        if key not in gt_cache:
            gt_cache[key] = parse_tool_calls(ref)
        gt = gt_cache[key]
        if gt is None:
            e = int(ro.step_episode[s])
            raise RolloutsError(
                "<rollouts>", f"episode {ro.episode_id[e].as_py()!r}, step {int(ro.step_index[s])}",
                "steps[].reference", f"is {str(ref)[:80]!r}, not a well-formed tool call for {_WHO}",
                'give the reference call as JSON text, e.g. {"name": "search", "arguments": {"q": "x"}}, '
                'a JSON array of calls ("[]": no call), or "" for a step without a reference',
            )
        pd = parse_tool_calls(actions[s])
        ok, frac = tool_call_scores(gt, pd, matching=matching, name_match=name_match, empty_reference=empty_reference)
        n_ref += 1
        n_bad += not ok
        r = format_max if ok else format_min
        if frac == frac:  # not NaN: the step has a correctness reward
            correct = (correct_max - correct_min) * frac + correct_min
            r += correct
            sum_correct += correct
            n_correct += 1
            n_exact += frac == 1.0
        added[s] = r
    diagnostics = {
        "referenced_steps": n_ref,
        "malformed_actions": n_bad,
        "format_rate": (n_ref - n_bad) / n_ref if n_ref else 0.0,
        "mean_correct": sum_correct / n_correct if n_correct else 0.0,
        "exact_rate": n_exact / n_correct if n_correct else 0.0,
        "added": float(added.sum()),
    }
    if target == "outcome":
        return Shaped(ro.with_outcome(ro.outcome + np.add.reduceat(added, ro.episode_offsets[:-1])), diagnostics)
    return Shaped(ro.replace_columns(reward=ro.reward + added), diagnostics)
