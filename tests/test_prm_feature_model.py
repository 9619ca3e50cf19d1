"""The feature PRM (logistic / ridge on hashed step features) and model saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.data import Rollouts
from stepcredit.prm.feature_model import FeaturePRM, PRMError
from stepcredit.prm.models import load_model, save_model


def _ro(steps: list[tuple[str, str]], per_episode: int = 1, label: list[float] | None = None) -> Rollouts:
    recs = []
    for i in range(0, len(steps), per_episode):
        chunk = steps[i:i + per_episode]
        st_ = [{"state": s, "action": a} for s, a in chunk]
        if label is not None:
            for k, d in enumerate(st_):
                d["label"] = label[i + k]
        recs.append({"episode_id": f"e{i}", "group_id": "g", "outcome": 0.0, "steps": st_})
    return Rollouts.from_records(recs)


def _lock_steps(rng: np.random.Generator, n: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Steps of a 4-position lock with combination 2,0,3,1: label 1 iff the press is right."""
    combo = [2, 0, 3, 1]
    pos = rng.integers(0, 4, size=n)
    act = rng.integers(0, 4, size=n)
    steps = [(f"lock position {p}/4", f"press {a}") for p, a in zip(pos, act)]
    return steps, (act == np.asarray(combo)[pos]).astype(float)


def test_constant_features_fit_the_mean_soft_label():
    # every step has the same state and action, so only the bias can separate nothing: the
    # optimum is w·x constant and σ(θ·x) = mean label (cross-entropy's minimiser), here 0.3
    y = [0.0, 0.5, 0.4, 0.3, 0.3]
    ro = _ro([("s", "a")] * 5, label=y)
    m = FeaturePRM(feature_size=16, pair_size=16, l2=1.0, tol=1e-12).fit(ro)
    np.testing.assert_allclose(m.score_steps(ro), np.full(5, 0.3), rtol=0, atol=1e-8)
    r = FeaturePRM(feature_size=16, pair_size=16, objective="ridge", l2=1.0, tol=1e-12).fit(ro)
    np.testing.assert_allclose(r.score_steps(ro), np.full(5, 0.3), rtol=0, atol=1e-8)


def test_pair_features_memorise_step_correctness():
    steps, y = _lock_steps(np.random.default_rng(0), 400)
    ro = _ro(steps, per_episode=4, label=y.tolist())
    m = FeaturePRM(feature_size=64, pair_size=1024, l2=0.1).fit(ro)
    s = m.score_steps(ro)
    assert np.all(s[y == 1] > 0.9) and np.all(s[y == 0] < 0.1)
    # held-out steps of the same lock (pairs seen in training): scored right as well
    steps2, y2 = _lock_steps(np.random.default_rng(1), 200)
    s2 = m.score_steps(_ro(steps2, per_episode=4))
    assert np.all((s2 > 0.5) == (y2 == 1))
    # L-BFGS's line search only accepts decreasing steps
    assert all(b <= a + 1e-9 for a, b in zip(m.history, m.history[1:]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), l2=st.floats(0.05, 10.0), soft=st.booleans())
def test_logistic_solution_is_a_stationary_point(seed, l2, soft):
    # the fitted θ solves ∇ = Xᵀ(σ(Xθ) − y) + λ w = 0 (bias unpenalised): checked from the
    # definition with the features recomputed by hand, not with the model's solver
    rng = np.random.default_rng(seed)
    steps, y = _lock_steps(rng, 60)
    if soft:
        y = rng.random(60)
    ro = _ro(steps, per_episode=3, label=y.tolist())
    m = FeaturePRM(feature_size=16, pair_size=64, l2=l2, tol=1e-9).fit(ro)
    X = m.features([s for s, _ in steps], [a for _, a in steps]).toarray()
    p = 1 / (1 + np.exp(-(X @ m.theta)))
    reg = np.full(m.dim, l2)
    reg[-1] = 0
    grad = X.T @ (p - y) + reg * m.theta
    assert np.max(np.abs(grad)) < 1e-6  # an arbitrary θ has gradients of order 1-10 here


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), l2=st.floats(0.01, 10.0))
def test_ridge_equals_the_augmented_least_squares_solution(seed, l2):
    # min ‖y − Xθ‖² + λ‖w‖²  =  least squares on [X; √λ Ĩ] θ ≈ [y; 0]
    rng = np.random.default_rng(seed)
    steps, _ = _lock_steps(rng, 50)
    y = rng.normal(size=50)
    mask = rng.random(50) < 0.8
    mask[0] = True
    ro = _ro(steps, per_episode=5)
    m = FeaturePRM(feature_size=16, pair_size=64, objective="ridge", l2=l2, tol=1e-11).fit(ro, labels=y, mask=mask)
    Xall = m.features([s for s, _ in steps], [a for _, a in steps]).toarray()
    X = Xall[mask]
    reg = np.sqrt(np.full(m.dim, l2))
    reg[-1] = 0
    A = np.vstack([X, np.diag(reg)])
    b = np.concatenate([y[mask], np.zeros(m.dim)])
    theta = np.linalg.lstsq(A, b, rcond=None)[0]
    # L-BFGS stops at a gradient of 1e-11; with λ down to 0.01 the predictions then agree to ~1e-8
    np.testing.assert_allclose(m.score_steps(ro), Xall @ theta, rtol=1e-5, atol=1e-6)


def test_masked_steps_do_not_change_the_fit():
    steps, y = _lock_steps(np.random.default_rng(2), 80)
    mask = np.arange(80) % 3 != 0
    ro = _ro(steps, per_episode=4)
    y_noise = y.copy()
    y_noise[~mask] = 1 - y_noise[~mask]  # flipped labels on masked steps only
    a = FeaturePRM(feature_size=32).fit(ro, labels=y, mask=mask)
    b = FeaturePRM(feature_size=32).fit(ro, labels=y_noise, mask=mask)
    np.testing.assert_array_equal(a.theta, b.theta)


def test_pair_feature_by_hand():
    m = FeaturePRM(feature_size=8, pair_size=8, families=("pair",))
    X = m.features(["s", "s", "t"], ["a", "a", "a"]).toarray()
    assert X.shape == (3, 9)
    np.testing.assert_array_equal(X[:, -1], 1.0)
    assert np.count_nonzero(X[:, :8], axis=1).tolist() == [1, 1, 1]
    np.testing.assert_array_equal(X[0], X[1])
    assert set(np.abs(X[:, :8][X[:, :8] != 0])) == {1.0}


def test_save_and_load_round_trip(tmp_path):
    steps, y = _lock_steps(np.random.default_rng(3), 100)
    ro = _ro(steps, per_episode=4, label=y.tolist())
    for objective in ("logistic", "ridge"):
        m = FeaturePRM(feature_size=32, families=("state", "pair"), objective=objective, l2=0.5).fit(ro)
        d = save_model(m, tmp_path / objective)
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
        back = load_model(d)
        assert isinstance(back, FeaturePRM) and back.config() == m.config()
        np.testing.assert_array_equal(back.score_steps(ro), m.score_steps(ro))
        save_model(m, d)  # replacing a model directory is allowed


def test_load_errors(tmp_path):
    with pytest.raises(PRMError, match="not a saved model"):
        load_model(tmp_path)
    m = FeaturePRM(feature_size=8).fit(_ro([("s", "a"), ("t", "b")], label=[0.0, 1.0]))
    d = save_model(m, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "kind": "nope"}))
    with pytest.raises(PRMError, match="unknown model kind 'nope'"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({**cfg, "feature_size": 16}))
    with pytest.raises(PRMError, match="weights 'theta' of shape"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(PRMError, match="unreadable config"):
        load_model(d)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(PRMError, match="refusing to replace"):
        save_model(m, other)
    assert (other / "keep.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_bad_configs_and_labels():
    with pytest.raises(PRMError, match="feature_size"):
        FeaturePRM(feature_size=4)
    with pytest.raises(PRMError, match="pair_size=4"):
        FeaturePRM(pair_size=4)
    with pytest.raises(PRMError, match="families"):
        FeaturePRM(families=("words",))
    with pytest.raises(PRMError, match="objective"):
        FeaturePRM(objective="hinge")  # type: ignore[arg-type]
    for l2 in (-1, 0, float("inf")):
        with pytest.raises(PRMError, match="l2"):
            FeaturePRM(l2=l2)
    ro = _ro([("s", "a"), ("t", "b")])
    with pytest.raises(PRMError, match=r"label of step 1 is 2.0; the logistic objective needs labels in \[0, 1\]"):
        FeaturePRM(feature_size=8).fit(ro, labels=np.array([0.0, 2.0]))
    with pytest.raises(PRMError, match="expected \\(2,\\)"):
        FeaturePRM(feature_size=8).fit(ro, labels=np.array([0.0]))
    with pytest.raises(PRMError, match="no step to train on"):
        FeaturePRM(feature_size=8).fit(ro, labels=np.array([0.0, 1.0]), mask=np.array([False, False]))
    with pytest.raises(PRMError, match="before fit"):
        FeaturePRM(feature_size=8).score_steps(ro)
    with pytest.raises(Exception, match="label"):
        FeaturePRM(feature_size=8).fit(ro)  # no label column: names it
    noaction = Rollouts.from_records([{"episode_id": "e", "group_id": "g", "outcome": 0.0, "steps": [{"state": "s"}]}])
    with pytest.raises(Exception, match="action"):
        FeaturePRM(feature_size=8).fit(noaction, labels=np.array([1.0]))


def test_checked_labels_names_the_model_the_unit_and_the_index():
    from stepcredit.prm.feature_model import checked_labels

    y, used = checked_labels("m", [1, 0, 1], None, 3)
    assert y.dtype == np.float64 and used.tolist() == [True, True, True]
    with pytest.raises(PRMError, match=r"m: labels have shape \(2,\), expected \(3,\) \(one per episode\)"):
        checked_labels("m", [1, 0], None, 3, unit="episode")
    with pytest.raises(PRMError, match=r"m: mask has shape \(2,\), expected \(3,\) \(one per step\)"):
        checked_labels("m", [1, 0, 1], [True, False], 3)
    with pytest.raises(PRMError, match=r"m: label of episode 1 is not finite \(nan\)"):
        checked_labels("m", [1, float("nan"), 1], None, 3, unit="episode")
    y, used = checked_labels("m", [1, float("nan"), 1], [True, False, True], 3)  # untrained: allowed
    assert used.tolist() == [True, False, True]
