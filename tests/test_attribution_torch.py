"""The torch progress model (the ``torch`` extra): it learns a decomposable outcome, is
deterministic, and plugs into spa_credit through the ProgressModel hook."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import stepcredit as sc
from stepcredit.estimators.attribution import ProgressModel, spa_credit
from stepcredit.estimators.attribution_torch import TorchProgressMLP


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: intra-op threads only add start-up and contention (restored afterwards)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# a decomposable task: every state has a true contribution and R = Σ_t value(s_t)
VALUE = {"a": 0.5, "b": -0.25, "c": 1.0, "d": 0.0}
PATHS = [["a"], ["b"], ["c"], ["d"], ["a", "b"], ["c", "c", "d"], ["b", "a", "c"], ["d", "a"], ["c", "b", "b", "a"]]


def task(paths=PATHS, grounding=False):
    recs = []
    for i, path in enumerate(paths):
        steps = [{"state": s, "action": f"go-{s}"} for s in path]
        if grounding:
            for t, step in enumerate(steps):
                step["grounding"] = float((i + t) % 2)
        recs.append({"episode_id": f"e{i}", "group_id": f"g{i % 3}", "outcome": sum(VALUE[s] for s in path), "steps": steps})
    return sc.Rollouts.from_records(recs)


def test_learns_a_decomposable_outcome():
    ro = task()
    model = TorchProgressMLP(epochs=300, seed=0).fit(ro)
    d = model.diagnostics
    assert d["final_loss"] < 1e-4 * d["initial_loss"] and d["final_loss"] < 1e-5
    c = model.contributions(ro)
    assert c.dtype == np.float64 and c.shape == (ro.n_steps,)
    sums = np.add.reduceat(c, ro.episode_offsets[:-1])
    np.testing.assert_allclose(sums, ro.outcome, atol=1e-2)
    # single-state episodes pin each state's contribution to its true value
    states = ro.key_values["state"].to_pylist()
    for s, v in VALUE.items():
        np.testing.assert_allclose(c[[k for k, x in enumerate(states) if x == s]], v, atol=1e-2)


def test_deterministic_per_seed_and_continues_training():
    ro = task()
    a = TorchProgressMLP(epochs=50, seed=3).fit(ro).contributions(ro)
    b = TorchProgressMLP(epochs=50, seed=3).fit(ro).contributions(ro)
    assert np.array_equal(a, b)
    assert not np.allclose(a, TorchProgressMLP(epochs=50, seed=4).fit(ro).contributions(ro))
    # the global RNG is left alone by the seeded initialisation
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    TorchProgressMLP(seed=9)
    assert torch.equal(torch.rand(1), before)
    # a second fit continues from the learned weights: it starts where the first ended
    model = TorchProgressMLP(epochs=100, seed=0).fit(ro)
    first = model.diagnostics["final_loss"]
    model.fit(ro)
    assert model.diagnostics["initial_loss"] == pytest.approx(first, rel=1e-5)
    assert model.diagnostics["final_loss"] < first


def test_state_action_features_and_missing_action():
    ro = task()
    model = TorchProgressMLP(features="state_action", epochs=300, seed=1).fit(ro)
    assert model.diagnostics["final_loss"] < 1e-4 * model.diagnostics["initial_loss"]
    no_action = sc.Rollouts.from_records([{"episode_id": "x", "group_id": "g", "outcome": 1.0, "steps": [{"state": "a"}]}])
    with pytest.raises(sc.MissingColumnError, match="action"):
        TorchProgressMLP(features="state_action").fit(no_action)


def test_hook_spa_credit_gives_c_plus_beta_grounding():
    ro = task(grounding=True)
    model = TorchProgressMLP(epochs=100, seed=0).fit(ro)
    assert isinstance(model, ProgressModel)
    c = model.contributions(ro)
    credit = spa_credit(ro, model, beta=0.5, norm="none", gamma=1.0)
    assert np.array_equal(credit.step_reward, c + 0.5 * ro.column("grounding"))
    # γ = 1, norm none: the first step's advantage is Σ_t r_t
    np.testing.assert_allclose(credit.episode_advantage, np.add.reduceat(credit.step_reward, ro.episode_offsets[:-1]), rtol=1e-12)
    assert credit.diagnostics["epochs"] == 100 and credit.diagnostics["grounding_used"] is True


@pytest.mark.parametrize("kwargs", [{"features": "x"}, {"epochs": 0}, {"n_buckets": 1.5}, {"lr": 0.0}, {"weight_decay": -1.0}])
def test_refuses_bad_parameters(kwargs):
    with pytest.raises(sc.EstimatorError):
        TorchProgressMLP(**kwargs)
