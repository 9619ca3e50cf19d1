"""The trainer's online implicit PRM (OPRL): the update's derivation, scoring, config, checkpoints, bench."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepcredit.bench.matrix import ONLINE_PRM, BenchConfig, check_env_fields, plan_runs, train_config
from stepcredit.envs import make_env
from stepcredit.policies import TabularPolicy
from stepcredit.train import WALL_CLOCK_FIELDS, TrainConfig, TrainError, collect, train
from stepcredit.train.online_prm import OnlinePRM, sync_action_sets, trajectory_dpo_coefficients

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = dict(env="lock_chain", estimator="oprl", online_prm="oprl", budget=320, checkpoint_every=2)


def strip(metrics):
    return [{k: v for k, v in m.items() if k not in WALL_CLOCK_FIELDS} for m in metrics]


# ---------------------------------------------------------------------- the loss and its coefficients
@st.composite
def dpo_batches(draw):
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=8))
    E = len(lengths)
    groups = np.array(draw(st.lists(st.integers(0, 2), min_size=E, max_size=E)))
    won = np.array(draw(st.lists(st.booleans(), min_size=E, max_size=E)))
    rho = np.array(draw(st.lists(st.floats(-30, 30), min_size=sum(lengths), max_size=sum(lengths))))
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    win = [i for i in range(E) for j in range(E) if groups[i] == groups[j] and won[i] and not won[j]]
    lose = [j for i in range(E) for j in range(E) if groups[i] == groups[j] and won[i] and not won[j]]
    return rho, off, np.array(win, dtype=np.int64), np.array(lose, dtype=np.int64)


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@FEW
@given(batch=dpo_batches(), beta=st.sampled_from([0.05, 0.5, 2.0]))
def test_coefficients_are_minus_the_autograd_gradient_of_the_torch_loss(aggregate, batch, beta):
    torch = pytest.importorskip("torch")
    from stepcredit.prm.losses import trajectory_dpo_loss

    rho, off, win, lose = batch
    x = torch.tensor(rho, dtype=torch.float64, requires_grad=True)
    loss = trajectory_dpo_loss(x, off, win, lose, beta=beta, aggregate=aggregate)
    loss.backward()
    upd = trajectory_dpo_coefficients(rho, off, win, lose, beta=beta, aggregate=aggregate)
    np.testing.assert_allclose(upd.loss, loss.item(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(upd.coef, -x.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert upd.pairs == win.size
    if win.size:
        assert upd.accuracy == np.mean(upd.margin > 0)
    else:
        assert upd.accuracy is None and upd.loss == 0.0 and not upd.coef.any()


def test_coefficients_hand_worked():
    # episode 0 (success) ρ = [1, 1], episode 1 (failure) ρ = [0]; one pair, β = 0.5
    # sum:  Q = [0.5·2, 0] = [1, 0], m = 1, L = log(1 + e^−1), σ(−1) = 1/(1 + e)
    #       c = β·(±σ(−1)) on every step of the winner / loser = [σ/2, σ/2, −σ/2]
    # mean: Q = [0.5·1, 0], m = 0.5, σ(−0.5); c = [β σ/2, β σ/2, −β σ/1] (the winner has 2 steps)
    off, win, lose = np.array([0, 2, 3]), np.array([0]), np.array([1])
    s1 = 1 / (1 + math.e)
    u = trajectory_dpo_coefficients(np.array([1.0, 1.0, 0.0]), off, win, lose, beta=0.5, aggregate="sum")
    np.testing.assert_allclose(u.loss, math.log(1 + math.exp(-1)), rtol=1e-15)
    np.testing.assert_allclose(u.coef, [s1 / 2, s1 / 2, -s1 / 2], rtol=1e-15)
    assert u.accuracy == 1.0 and u.margin.tolist() == [1.0]
    s2 = 1 / (1 + math.exp(0.5))
    u = trajectory_dpo_coefficients(np.array([1.0, 1.0, 0.0]), off, win, lose, beta=0.5, aggregate="mean")
    np.testing.assert_allclose(u.coef, [0.25 * s2, 0.25 * s2, -0.5 * s2], rtol=1e-15)


def _table(n_states=3, n_actions=3, seed=0):
    """A tabular PRM with every state's 3 actions registered and random logits."""
    pol = TabularPolicy()
    states = [f"s{k}" for k in range(n_states)]
    acts = [f"a{j}" for j in range(n_actions)]
    pol.act(states, [acts] * n_states, np.random.default_rng(seed))
    pol.set_logits(np.random.default_rng(seed).normal(size=pol.n_entries))
    return pol, states, acts


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_tabular_ascent_direction_matches_finite_differences(aggregate):
    # −∇_z L from the coefficients (grad_log_prob) against central differences of L(z)
    pol, states, acts = _table()
    rng = np.random.default_rng(1)
    lengths = [3, 1, 2, 4]
    off = np.concatenate([[0], np.cumsum(lengths)])
    S = off[-1]
    entries = pol.entries([states[k] for k in rng.integers(0, 3, S)], [acts[k] for k in rng.integers(0, 3, S)])
    old = rng.normal(size=S) - 1.0
    win, lose = np.array([0, 0, 2]), np.array([1, 3, 1])

    def loss(z):
        pol.set_logits(z)
        rho = pol.log_prob(entries) - old
        return trajectory_dpo_coefficients(rho, off, win, lose, beta=0.7, aggregate=aggregate).loss

    z0 = pol.logits.copy()
    upd = trajectory_dpo_coefficients(pol.log_prob(entries) - old, off, win, lose, beta=0.7, aggregate=aggregate)
    ascent = pol.grad_log_prob(entries, upd.coef)
    fd = np.empty_like(z0)
    for p in range(z0.size):
        e = np.zeros_like(z0)
        e[p] = 1e-6
        fd[p] = -(loss(z0 + e) - loss(z0 - e)) / 2e-6
    np.testing.assert_allclose(ascent, fd, rtol=1e-6, atol=1e-9)


def test_one_small_step_lowers_the_loss_and_no_pair_changes_nothing():
    pol, states, acts = _table(seed=3)
    prm = OnlinePRM(pol, beta=0.5, lr=0.1)
    from stepcredit import Rollouts

    recs = [{"episode_id": f"e{i}", "group_id": "g", "outcome": float(i % 2),
             "steps": [{"state": states[(i + t) % 3], "action": acts[(i * t) % 3], "logp": -1.1} for t in range(1 + i % 3)]}
            for i in range(6)]
    ro = Rollouts.from_records(recs)
    steps = pol.entries(ro.key_values["state"].to_pylist(), ro.key_values["action"].to_pylist())
    before = prm.update(ro, steps, pol.log_prob(steps))
    after = trajectory_dpo_coefficients(pol.log_prob(steps) - ro.column("logp"), ro.episode_offsets,
                                        np.array([1, 1, 1, 3, 3, 3, 5, 5, 5]), np.array([0, 2, 4] * 3), beta=0.5, aggregate="mean")
    assert before["prm_pairs"] == 9 and after.loss < before["prm_loss"]
    same = Rollouts.from_records([{**r, "outcome": 1.0} for r in recs])  # every episode succeeds: no pair
    z = pol.logits.copy()
    m = prm.update(same, steps, pol.log_prob(steps))
    assert m == {"prm_loss": 0.0, "prm_pair_accuracy": None, "prm_pairs": 0}
    np.testing.assert_array_equal(pol.logits, z)


# ---------------------------------------------------------------------- scoring
def test_sync_gives_the_prm_the_policy_action_sets_and_zero_rewards_at_init():
    envs = [make_env("lock_chain") for _ in range(8)]
    policy = TabularPolicy()
    batch = collect(envs, policy, [3, 4], 4, np.random.default_rng(0))
    prm = OnlinePRM(TabularPolicy())
    steps, lp, r = prm.score(batch.rollouts, policy)
    assert prm.model.n_entries == policy.n_entries
    np.testing.assert_array_equal(prm.model.entry_state, policy.entry_state)
    np.testing.assert_array_equal(steps, policy.entries(batch.rollouts.key_values["state"].to_pylist(),
                                                        batch.rollouts.key_values["action"].to_pylist()))
    np.testing.assert_array_equal(lp, batch.rollouts.column("logp"))  # uniform over all 3 digits: log(1/3)
    assert np.all(r == 0.0)
    # without the sync the PRM would know only the stored actions: a softmax over fewer actions
    # (here: one stored step, so log π = 0 instead of log(1/3))
    lone = TabularPolicy()
    first = lone.entries(batch.rollouts.key_values["state"].to_pylist()[:1], batch.rollouts.key_values["action"].to_pylist()[:1])
    assert lone.log_prob(first).tolist() == [0.0] and lp[0] == -math.log(3)
    # a second sync after the policy met new states adds exactly the new entries
    collect(envs, policy, [5], 8, np.random.default_rng(1))
    sync_action_sets(prm.model, policy)
    assert prm.model.n_entries == policy.n_entries


def test_mlp_prm_starts_equal_to_the_policy(tmp_path):
    pytest.importorskip("torch")
    r = train(TrainConfig(**{**SMALL, "budget": 128}, policy="mlp"), tmp_path)
    assert r.metrics[0]["prm_reward_abs"] <= 1e-12
    assert all(math.isfinite(m["prm_loss"]) for m in r.metrics)


# ---------------------------------------------------------------------- the trainer
def test_training_metrics_determinism_and_pair_accuracy(tmp_path):
    cfg = TrainConfig(**{**SMALL, "budget": 1200})
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert strip(a.metrics) == strip(b.metrics)
    first = a.metrics[0]
    assert first["prm_reward_abs"] == 0.0  # π_φ = π_old at iteration 0
    assert math.isclose(first["prm_loss"], math.log(2), rel_tol=1e-15) and first["prm_pair_accuracy"] == 0.0  # margins 0
    acc = [m["prm_pair_accuracy"] for m in a.metrics[1:] if m["prm_pair_accuracy"] is not None]
    assert len(acc) >= 5 and np.mean(acc) > 0.6, acc  # the PRM learns to rank successes above failures
    assert a.final_success > 0.9
    for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # plain JSON (null where no pair)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**SMALL)
    whole = train(cfg, tmp_path / "whole")
    part = train(cfg, tmp_path / "part", stop_after=3)
    assert len(part.metrics) == 3
    with np.load(tmp_path / "part" / "checkpoint.npz") as z:
        assert any(k.startswith("prm_") for k in z.files) and any(k.startswith("policy_") for k in z.files)
    rest = train(cfg, tmp_path / "part")
    assert rest.resumed_from == 3
    assert strip(rest.metrics) == strip(whole.metrics)
    np.testing.assert_array_equal(rest.policy.logits, whole.policy.logits)


def test_checkpoint_without_prm_state_is_refused(tmp_path):
    train(TrainConfig(**SMALL), tmp_path, stop_after=1)
    with np.load(tmp_path / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("prm_")}
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(TrainError, match="no online PRM state"):
        train(TrainConfig(**SMALL), tmp_path)


def test_config_fields_defaults_and_checks():
    plain = TrainConfig()
    d = plain.to_dict()
    assert not {"online_prm", "prm_beta", "prm_lr", "prm_epochs", "prm_q"} & set(d)  # old configs read as before
    on = TrainConfig(online_prm="oprl", prm_q="sum").to_dict()
    assert on["online_prm"] == "oprl" and on["prm_q"] == "sum" and "prm_beta" not in on
    assert TrainConfig().prm_step_size == 1.0 / 0.05**2  # tabular: lr / β²
    assert TrainConfig(policy="mlp", adam_lr=0.003).prm_step_size == 0.003
    assert TrainConfig(prm_lr=7.0).prm_step_size == 7.0
    for bad in ({"online_prm": "prime"}, {"prm_beta": 0.0}, {"prm_lr": -1.0}, {"prm_epochs": 0}, {"prm_q": "max"}):
        with pytest.raises(TrainError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_default_run_has_no_prm_metrics(tmp_path):
    r = train(TrainConfig(env="lock_chain", budget=128), tmp_path)
    assert not any(k.startswith("prm_") for k in r.metrics[0])
    with np.load(tmp_path / "checkpoint.npz") as z:
        assert not any(k.startswith("prm_") for k in z.files)


# ---------------------------------------------------------------------- the bench
def test_bench_method_oprl_turns_the_online_prm_on_everywhere():
    assert ONLINE_PRM == {"oprl": "oprl"}
    cfg = BenchConfig(envs=("lock_chain", "sokoban"), methods=("grpo", "oprl"), seeds=1, budget=64)
    check_env_fields(cfg)  # sokoban has no process field: the trainer's PRM writes it
    runs = {(r.env, r.method): train_config(cfg, r) for r in plan_runs(cfg)}
    assert runs[("sokoban", "oprl")].online_prm == "oprl" and runs[("sokoban", "grpo")].online_prm == "none"
    assert "online_prm" not in BenchConfig().to_dict()
