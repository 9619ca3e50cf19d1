"""Loop oracle of ``oprl`` (METHODS.md section 5, OPRL / iStar, arXiv:2509.19199).

Per group g with K episodes, written from the definitions, exactly (Fractions):
* A^E_i = K/(K−1)·(R_i − mean of the group's outcomes) (the RLOO oracle; a singleton: R_i
  with "raw", 0 with "zero");
* b_g = the mean of r_t over every step of every episode of g ("group_steps") or over the
  first step of each episode of g ("first_steps");
* A^S_t = K/(K−1)·(r_t − b_g), and 0 when K = 1;
* A_t = A^E_i + w·A^S_t.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, exact, group_members, step_field
from . import outcome as ref_outcome

__all__ = ["oprl", "oprl_step_advantage"]


def oprl_step_advantage(records: Sequence[Record], baseline: str = "group_steps") -> list[Fraction]:
    """[S] A^S_t exactly, steps flat with the episodes in input order."""
    per_episode: list[list[Fraction]] = [[Fraction(0)] * len(rec["steps"]) for rec in records]
    for members in group_members(records).values():
        K = len(members)
        if K == 1:
            continue  # no other episode: A^S = 0
        if baseline == "group_steps":
            values = [exact(step_field(step, "process")) for i in members for step in records[i]["steps"]]
        elif baseline == "first_steps":
            values = [exact(step_field(records[i]["steps"][0], "process")) for i in members]
        else:
            raise ValueError(baseline)
        b = sum(values, Fraction(0)) / len(values)
        factor = Fraction(K, K - 1)
        for i in members:
            for t, step in enumerate(records[i]["steps"]):
                per_episode[i][t] = factor * (exact(step_field(step, "process")) - b)
    return [x for steps in per_episode for x in steps]


def oprl(
    records: Sequence[Record],
    w: float = 1.0,
    baseline: str = "group_steps",
    singleton: str = "raw",
) -> OracleCredit:
    episode_adv = ref_outcome.rloo(records, singleton=singleton).episode_advantage
    step_term = oprl_step_advantage(records, baseline)
    adv: list[float] = []
    rewards: list[float] = []
    k = 0
    for rec, a in zip(records, episode_adv):
        for step in rec["steps"]:
            adv.append(float(exact(a) + exact(w) * step_term[k]))
            rewards.append(float(step_field(step, "process")))
            k += 1
    return OracleCredit(step_advantage=adv, episode_advantage=list(episode_adv), step_reward=rewards)
