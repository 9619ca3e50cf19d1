"""The trainer: rollout collection, the clipped update, determinism, resume, learning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit import Pipeline
from stepcredit.envs import make_env
from stepcredit.policies import TabularPolicy
from stepcredit.train import (
    CHECKPOINT,
    METRICS,
    WALL_CLOCK_FIELDS,
    TrainConfig,
    TrainError,
    clipped_surrogate_coef,
    collect,
    episodes_to_target,
    ppo_update,
    train,
)


METRIC_FIELDS = [
    "iteration", "episodes", "env_steps", "success_rate", "mean_return", "mean_length", "adv_mean",
    "adv_std", "adv_zero_fraction", "zero_variance_groups", "credited_episodes", "dropped_fraction", "clip_fraction",
    "kl_to_init", "n_states", "wall_s", "elapsed_s",
]


def _strip(metrics):
    return [{k: v for k, v in m.items() if k not in WALL_CLOCK_FIELDS} for m in metrics]


def _lines(path):
    return [json.loads(x) for x in (path / METRICS).read_text().splitlines()]


# ---------------------------------------------------------------------- collection
class Corridor:
    """A test environment: walk right ("r") from cell 0 to cell 2; "l" stays. Extras in info:
    ``process`` on every step, ``note`` only on the first step, ``blob`` (a list) always."""

    max_steps = 3

    def reset(self, *, seed=None, options=None):
        self.x, self.t = 0, 0
        return "c0", {"state": "c0"}

    def valid_actions(self):
        return ["l", "r"]

    def step(self, action):
        self.t += 1
        if action == "r":
            self.x += 1
        done = self.x == 2
        trunc = not done and self.t >= self.max_steps
        info = {"state": f"c{self.x}", "valid": True, "process": 0.5 * self.x, "blob": [1, 2]}
        if self.t == 1:
            info["note"] = "first"
        if done or trunc:
            info["success"] = done
        return f"c{self.x}", (1.0 if done else 0.25), done, trunc, info


def test_collect_records_lock_chain_steps_by_hand():
    G, seeds = 3, [5, 9]
    envs = [make_env("lock_chain", length=2, n_actions=2) for _ in range(G * len(seeds))]
    pol = TabularPolicy()
    b = collect(envs, pol, seeds, G, np.random.default_rng(0), iteration=7)
    ro = b.rollouts
    assert ro.n_episodes == 6 and ro.group_id.to_pylist() == ["t5"] * 3 + ["t9"] * 3
    assert ro.episode_id.to_pylist()[:2] == ["i7/t5/e0", "i7/t5/e1"]
    assert b.task_seed.tolist() == [5, 5, 5, 9, 9, 9]
    states, actions = ro.key_values["state"].to_pylist(), ro.key_values["action"].to_pylist()
    for e in range(6):
        lo, hi = ro.episode_offsets[e], ro.episode_offsets[e + 1]
        # replay the episode's actions in a fresh environment: the states must follow
        env = make_env("lock_chain", length=2, n_actions=2)
        _, info = env.reset(seed=int(b.task_seed[e]))
        for t in range(lo, hi):
            assert states[t] == info["state"]
            _, r, term, trunc, info = env.step(actions[t])
        assert term or trunc
        assert ro.outcome[e] == r == float(b.success[e])  # the last reward is the outcome
        assert json.loads(ro.meta[e].as_py()) == {"task_seed": int(b.task_seed[e]), "iteration": 7, "success": bool(b.success[e])}
    np.testing.assert_array_equal(ro.reward, 0.0)  # sparse: every step reward is 0
    np.testing.assert_array_equal(ro.columns["grounding"], 1.0)
    np.testing.assert_allclose(ro.columns["ref_logp"], -math.log(2))
    # the behaviour log-probs are those of the (here still uniform) policy
    ent = pol.entries(states, actions)
    np.testing.assert_allclose(ro.columns["logp"], pol.log_prob(ent), rtol=1e-12)
    assert b.action_index.tolist() == [int(a.split()[1]) for a in actions]


def test_collect_step_rewards_outcome_and_info_extras():
    envs = [Corridor() for _ in range(4)]
    b = collect(envs, TabularPolicy(), [1, 1], 2, np.random.default_rng(3))
    ro = b.rollouts
    assert ro.group_id.to_pylist() == ["t1", "t1", "t1#1", "t1#1"]  # a repeated seed: its own group
    for e in range(4):
        lo, hi = ro.episode_offsets[e], ro.episode_offsets[e + 1]
        r = ro.reward[lo:hi]
        # every step pays 0.25 except the success step (1.0); the last step's reward is the outcome
        assert r[-1] == 0.0 and np.all(r[:-1] == 0.25)
        assert ro.outcome[e] == (1.0 if b.success[e] else 0.25)
        assert b.episode_return[e] == pytest.approx(ro.outcome[e] + r.sum())
        meta = json.loads(ro.meta[e].as_py())
        n = hi - lo
        assert meta["info"]["note"] == ["first"] + [None] * (n - 1)  # partial extras go to meta
        assert "blob" not in meta["info"]  # not a JSON scalar: dropped
    # process on every step: a column, the state's x after the step
    x_after = [int(s[1]) for s in ro.key_values["state"].to_pylist()]
    assert "process" in ro.columns and len(x_after) == ro.n_steps


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tasks=st.lists(st.integers(0, 50), min_size=1, max_size=4), G=st.integers(1, 4))
def test_collect_is_deterministic_given_the_generator(seed, tasks, G):
    def run():
        envs = [make_env("lock_chain", length=3) for _ in range(len(tasks) * G)]
        return collect(envs, TabularPolicy(), tasks, G, np.random.default_rng(seed))

    a, b = run(), run()
    assert a.rollouts.equals(b.rollouts)
    np.testing.assert_array_equal(a.action_index, b.action_index)
    # every episode ends by the step limit at the latest
    assert np.all(a.rollouts.step_counts <= 12) and np.all((a.rollouts.step_counts == 12) | a.success)


def test_collect_refuses_too_few_environments():
    with pytest.raises(ValueError, match="need 4 environments"):
        collect([Corridor()], TabularPolicy(), [0, 1], 2, np.random.default_rng(0))


# ---------------------------------------------------------------------- the update
def test_clipped_surrogate_coef_by_hand():
    ratio = np.array([1.5, 0.5, 0.5, 1.5, 1.1])
    adv = np.array([1.0, 1.0, -1.0, -1.0, 2.0])
    c, clipped = clipped_surrogate_coef(np.log(ratio), np.zeros(5), adv, np.array([1, 1, 1, 1, 0.5]), 0.2)
    # 1.5 > 1.2 with A > 0: clipped; 0.5 with A > 0: 0.5·1/5; 0.5 < 0.8 with A < 0: clipped;
    # 1.5 with A < 0: 1.5·(−1)/5; 1.1 inside: 0.5·1.1·2/5
    assert clipped.tolist() == [True, False, True, False, False]
    np.testing.assert_allclose(c, [0.0, 0.1, 0.0, -0.3, 0.22], rtol=1e-14)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_update_direction_is_the_gradient_of_the_clipped_surrogate(seed):
    """Σ c_t ∇ log π(a_t|s_t) against finite differences of L = (1/S) Σ w min(ρA, clip(ρ)A)."""
    rng = np.random.default_rng(seed)
    pol = TabularPolicy()
    pol.entries([f"s{i % 3}" for i in range(9)], [f"a{i // 3}" for i in range(9)])
    pol.set_logits(rng.normal(size=9) * 0.3)
    entries = rng.integers(0, 9, size=12)
    old = pol.log_prob(entries) + rng.normal(size=12) * 0.3
    adv, w = rng.normal(size=12), rng.random(12)
    z0 = pol.logits.copy()

    def loss(z):
        pol.set_logits(z)
        r = np.exp(pol.log_prob(entries) - old)
        return float(np.mean(w * np.minimum(r * adv, np.clip(r, 0.8, 1.2) * adv)))

    pol.set_logits(z0)
    r0 = np.exp(pol.log_prob(entries) - old)
    if np.min(np.abs(np.abs(r0 - 1) - 0.2)) < 1e-4:
        return  # a ratio on the clip boundary: the surrogate has a kink there
    c, _ = clipped_surrogate_coef(pol.log_prob(entries), old, adv, w, 0.2)
    h = 1e-7
    fd = np.array([(loss(z0 + h * e) - loss(z0 - h * e)) / (2 * h) for e in np.eye(9)])
    pol.set_logits(z0)
    np.testing.assert_allclose(pol.grad_log_prob(entries, c), fd, rtol=1e-5, atol=1e-8)


def _small_policy():
    pol = TabularPolicy()
    entries = pol.entries(["s", "s", "s", "u", "u"], ["a", "b", "c", "a", "b"])
    pol.set_logits(np.array([0.3, -0.2, 0.1, 0.0, 0.5]))
    return pol, entries


def test_ppo_update_with_zero_advantages_leaves_the_policy_unchanged():
    pol, entries = _small_policy()
    z0 = pol.logits.copy()
    frac = ppo_update(pol, entries, pol.log_prob(entries), np.zeros(5), np.ones(5), lr=5.0, clip=0.2, epochs=4)
    np.testing.assert_array_equal(pol.logits, z0)
    assert frac == 0.0


def test_ppo_update_positive_advantage_raises_the_probability_and_clipping_bounds_it():
    pol, entries = _small_policy()
    old = pol.log_prob(entries)
    adv = np.array([0.0, 1.0, 0.0, -1.0, 0.0])  # (s, b) good, (u, a) bad
    ppo_update(pol, entries, old, adv, np.ones(5), lr=1.0, clip=0.2, epochs=1)
    new = pol.log_prob(entries)
    assert new[1] > old[1] and new[3] < old[3]
    # many epochs with a large step: the ratio of (s, b) stops growing once the clip is active
    pol2, _ = _small_policy()
    ppo_update(pol2, entries, old, adv, np.ones(5), lr=50.0, clip=0.2, epochs=30)
    ratio = np.exp(pol2.log_prob(entries) - old)
    assert ratio[1] > 1.2 and ratio[1] < 1.2 + 50.0  # stepped over the clip once, then no gradient
    frac = ppo_update(pol2, entries, old, adv, np.ones(5), lr=50.0, clip=0.2, epochs=1)
    assert frac == pytest.approx(2 / 5)  # both non-zero advantages are clipped now


def test_zero_weight_episodes_get_no_gradient():
    pol, entries = _small_policy()
    z0 = pol.logits.copy()
    ppo_update(pol, entries, pol.log_prob(entries), np.ones(5), np.zeros(5), lr=1.0, clip=0.2, epochs=2)
    np.testing.assert_array_equal(pol.logits, z0)


# ---------------------------------------------------------------------- the loop
def _cfg(**kw):
    base = dict(env="lock_chain", env_kwargs={"length": 3}, estimator="grpo", group_size=4, tasks_per_iter=4,
                budget=16 * 12, checkpoint_every=3, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_metrics_fields_and_files(tmp_path):
    res = train(_cfg(), tmp_path)
    assert res.completed and res.resumed_from == 0 and len(res.metrics) == 12
    m = res.metrics[0]
    assert list(m) == METRIC_FIELDS
    assert [x["episodes"] for x in res.metrics] == [16 * (i + 1) for i in range(12)]
    assert _lines(tmp_path) == list(res.metrics)
    assert json.loads((tmp_path / "config.json").read_text()) == res.config.to_dict()
    with np.load(tmp_path / CHECKPOINT, allow_pickle=False) as z:
        assert "policy_logits" in z.files and json.loads(str(z["meta"]))["iterations"] == 12


def test_all_equal_outcomes_give_no_update(tmp_path):
    """lock_chain of length 1 with 2 digits and 60 steps: every episode opens the lock (a miss
    has probability 2^-60), so every GRPO advantage is 0 and the logits stay exactly 0."""
    res = train(_cfg(env_kwargs={"length": 1, "n_actions": 2, "max_steps": 60}, budget=64), tmp_path)
    assert all(m["success_rate"] == 1.0 and m["zero_variance_groups"] == 1.0 for m in res.metrics)
    np.testing.assert_array_equal(res.policy.logits, 0.0)


@pytest.mark.parametrize("estimator", ["grpo", "gigpo"])
def test_same_config_same_metrics(tmp_path, estimator):
    a = train(_cfg(estimator=estimator), tmp_path / "a")
    b = train(_cfg(estimator=estimator), tmp_path / "b")
    assert _strip(a.metrics) == _strip(b.metrics)
    np.testing.assert_array_equal(a.policy.logits, b.policy.logits)
    c = train(_cfg(estimator=estimator, seed=2), tmp_path / "c")
    assert _strip(a.metrics) != _strip(c.metrics)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("pipeline", [None, Pipeline.build("grpo", filters=["replay"])], ids=["grpo", "grpo+replay"])
@pytest.mark.parametrize("stop", [1, 3, 4, 8])
def test_a_killed_run_resumes_to_the_same_metrics(tmp_path, pipeline, stop):
    """Stop after ``stop`` iterations (by an exception from the callback, after the metrics line
    and maybe before the checkpoint), leave a half-written line as a kill would, and rerun."""
    kw = {"pipeline": pipeline, "estimator": "grpo"} if pipeline else {}
    cfg = _cfg(group_size=2, **kw)  # groups of 2 often fail entirely: replay has work to do
    full = train(cfg, tmp_path / "full")
    run = tmp_path / "run"

    def cb(m):
        if m["iteration"] + 1 == stop:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, run, progress=cb)
    with open(run / METRICS, "a") as f:
        f.write('{"iteration": 99, "episo')  # a line cut by the kill
    res = train(cfg, run)
    assert res.resumed_from == (stop // 3) * 3  # the last checkpoint
    assert _strip(res.metrics) == _strip(full.metrics)
    assert _strip(_lines(run)) == _strip(full.metrics)
    np.testing.assert_array_equal(res.policy.logits, full.policy.logits)
    if pipeline is not None:
        assert any(m["credited_episodes"] > 8 for m in full.metrics)  # replay inserted episodes
        with np.load(run / CHECKPOINT, allow_pickle=False) as z:
            state = json.loads(json.loads(str(z["meta"]))["pipeline_state"])
        assert state["stages"][0]["name"] == "replay" and state["stages"][0]["state"]["groups"]


def test_stop_after_then_resume_and_a_finished_run_returns_at_once(tmp_path):
    cfg = _cfg()
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "run", stop_after=5)  # checkpoint_every=3: stopping writes one
    assert not part.completed and len(part.metrics) == 5
    res = train(cfg, tmp_path / "run")
    assert res.completed and res.resumed_from == 5
    assert _strip(res.metrics) == _strip(full.metrics)
    again = train(cfg, tmp_path / "run")
    assert again.resumed_from == 12 and _strip(again.metrics) == _strip(full.metrics)


def test_a_larger_budget_extends_a_finished_run(tmp_path):
    full = train(_cfg(), tmp_path / "full")
    short = train(_cfg(budget=16 * 5, checkpoint_every=2), tmp_path / "run")
    assert short.completed and len(short.metrics) == 5
    res = train(_cfg(), tmp_path / "run")
    assert res.resumed_from == 5 and _strip(res.metrics) == _strip(full.metrics)


def test_resume_refuses_another_config(tmp_path):
    train(_cfg(), tmp_path, stop_after=3)
    with pytest.raises(TrainError, match="differs in: lr"):
        train(_cfg(lr=0.5), tmp_path)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"group_size": 0}, "group_size=0 must be >= 1"),
        ({"clip": 0.0}, "clip=0.0 must be > 0"),
        ({"target": 1.5}, "target=1.5 must be in"),
        ({"policy": "lstm"}, "policy='lstm' is unknown"),
        ({"pipeline": Pipeline.build("grpo"), "estimator_params": {"scale": "none"}}, "not both"),
    ],
)
def test_config_errors(kw, msg):
    with pytest.raises(TrainError, match=msg):
        _cfg(**kw)


def test_unknown_environment_or_parameter_is_an_error(tmp_path):
    from stepcredit import EstimatorError
    from stepcredit.envs import EnvError

    with pytest.raises(EnvError, match="lock_chain"):
        train(_cfg(env_kwargs={"lenght": 3}), tmp_path)
    with pytest.raises(EstimatorError, match="omega"):
        train(_cfg(estimator="grpo", estimator_params={"omega": 1.0}), tmp_path)


def test_episodes_to_target_by_hand():
    # success rates are multiples of 1/episodes, exact in binary like these
    m = [{"episodes": 10 * (k + 1), "success_rate": s} for k, s in enumerate([0.5, 0.875, 0.875, 0.875, 1.0])]
    # trailing means over 3: 0.5, 0.6875, 0.75, 0.875 (iteration 3: 40 episodes), ...
    assert episodes_to_target(m, 0.8) == 40
    assert episodes_to_target(m, 0.875, window=1) == 20
    assert episodes_to_target(m, 1.0) == math.inf


# ---------------------------------------------------------------------- learning
# Measured with the defaults (8 tasks x G=8 per iteration, lr 1, one task instance per seed):
# lock_chain length 3: success of the first iteration 0.23-0.31 (random policy), mean of the last
# three iterations after 960 episodes 0.96-0.99 (grpo) and 0.995-1.0 (gigpo) over seeds 0-7.
# Length 4, episodes to a trailing-3 success of 0.8, seeds 0-4: grpo 1088-1152, gigpo 576-640.
@pytest.mark.parametrize("estimator", ["grpo", "gigpo"])
@pytest.mark.parametrize("seed", range(5))
def test_lock_chain_is_learned(tmp_path, estimator, seed):
    res = train(TrainConfig(env="lock_chain", env_kwargs={"length": 3}, estimator=estimator, budget=960, seed=seed), tmp_path)
    first = res.metrics[0]["success_rate"]
    last = np.mean([m["success_rate"] for m in res.metrics[-3:]])
    assert first < 0.4 and last >= 0.9, (first, last)
    assert math.isfinite(res.episodes_to_target)


@pytest.mark.parametrize("seed", range(3))
def test_gigpo_needs_fewer_episodes_than_grpo_on_lock_chain(tmp_path, seed):
    """Anchor states (lock position i) recur in every group: GiGPO credits each press directly."""
    n = {}
    for est in ("grpo", "gigpo"):
        cfg = TrainConfig(env="lock_chain", env_kwargs={"length": 4}, estimator=est, budget=1600, seed=seed)
        n[est] = train(cfg, tmp_path / est).episodes_to_target
    assert n["gigpo"] < n["grpo"] <= 1600, n


def test_every_config_field_and_metric_is_in_the_train_doc():
    import dataclasses
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "train.md").read_text()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert [f for f in fields if f"| `{f}` |" not in text] == []
    assert [f for f in METRIC_FIELDS if f"`{f}`" not in text] == []
