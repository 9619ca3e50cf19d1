"""stepcredit inside verl, against the real verl package (CPU, tiny tensors).

verl's own estimators are an independent implementation: on identical batches the registered
``stepcredit_grpo`` / ``stepcredit_rloo`` / ``stepcredit_reinforce_pp`` (with the parameters that
match verl's conventions) equal them to 1e-6. Inputs are float64 so that the comparison sees the
conventions, not float32 rounding; the remaining differences are verl's float32 constants (a
singleton group divides by ``torch.tensor(1.0) + 1e-6`` in float32, ~2e-8) and the 1e-8 that
``masked_mean`` adds to its denominator (~1e-8).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

if os.environ.get("STEPCREDIT_REQUIRE_VERL"):  # CI sets it: there a missing verl is a failure
    import torch
    from verl.trainer.ppo import core_algos
else:
    torch = pytest.importorskip("torch", reason="the verl integration needs torch (the torch extra)")
    core_algos = pytest.importorskip(
        "verl.trainer.ppo.core_algos",
        reason="verl.trainer.ppo.core_algos is not importable: install the verl extra and verl "
        "itself with --no-deps (docs/integrations.md, Installing)",
        exc_type=ImportError,
    )
from omegaconf import OmegaConf  # noqa: E402  (comes with verl)

import stepcredit as sc  # noqa: E402
from stepcredit.integrations import verl as scv  # noqa: E402

pytestmark = pytest.mark.integration

ATOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def registered():
    return scv.register()


def algo_config(params=None, **stepcredit):
    """verl's algorithm config as the trainer passes it (a DictConfig), with our table."""
    table = {"params": dict(params or {}), **stepcredit}
    return OmegaConf.create({"gamma": 1.0, "lam": 1.0, "adv_estimator": "x", "stepcredit": table})


def single_turn_batch(seed: int, dtype=torch.float64):
    """[B, T] rewards with each row's score on its last response token, a response mask with
    holes (multi-turn masks), and an object array of uid strings: groups of 1..8 rows,
    shuffled, one group of equal scores and two singletons."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 5, 8, 1, 4, 6]
    group = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(group)
    B, T = len(group), 9
    uid = np.array([f"{g * 7919 % 97:x}-prompt" for g in group], dtype=object)
    mask = (rng.random((B, T)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    last = T - 1 - np.argmax(mask[:, ::-1], axis=1)
    score = np.where(rng.random(B) < 0.5, rng.integers(0, 2, B).astype(float), rng.normal(size=B))
    score[group == 3] = 0.25  # a group of equal scores: std 0
    tlr = np.zeros((B, T))
    tlr[np.arange(B), last] = score
    return torch.tensor(tlr, dtype=dtype), torch.tensor(mask), uid


# (stepcredit estimator, its params, verl estimator, verl keyword arguments)
EQUIVALENT = [
    pytest.param("grpo", {}, "grpo", {}, id="grpo"),
    pytest.param("grpo", {}, "grpo_vectorized", {}, id="grpo-vectorized"),
    pytest.param("grpo", {"scale": "none"}, "grpo", {"norm_adv_by_std_in_grpo": False}, id="grpo-no-std"),
    pytest.param("drgrpo", {}, "grpo", {"norm_adv_by_std_in_grpo": False}, id="drgrpo"),
    pytest.param("rloo", {}, "rloo", {}, id="rloo"),
    # verl's two RLOO twins differ on one-row groups: the loop keeps R_i, the vectorised gives 0
    pytest.param("rloo", {"singleton": "zero"}, "rloo_vectorized", {}, id="rloo-vectorized"),
    # stepcredit's reinforce_pp is REINFORCE++-baseline; verl whitens per token
    pytest.param("reinforce_pp", {"weight": "tokens", "epsilon": 1e-8}, "reinforce_plus_plus_baseline", {},
                 id="reinforce_pp"),
]


@pytest.mark.parametrize(("name", "params", "verl_name", "verl_kwargs"), EQUIVALENT)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_verl_builtin(name, params, verl_name, verl_kwargs, seed):
    tlr, mask, uid = single_turn_batch(seed)
    config = algo_config(params)
    ours = core_algos.get_adv_estimator_fn(f"stepcredit_{name}")
    theirs = core_algos.get_adv_estimator_fn(verl_name)
    # the keyword arguments verl's compute_advantage passes to a registered estimator
    adv, ret = ours(token_level_rewards=tlr.clone(), response_mask=mask, config=config, index=uid)
    v_adv, v_ret = theirs(token_level_rewards=tlr.clone(), response_mask=mask, config=config, index=uid,
                          **verl_kwargs)
    assert adv.shape == v_adv.shape == tlr.shape
    torch.testing.assert_close(adv, v_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret, v_ret, atol=ATOL, rtol=0)


def test_reinforce_pp_is_the_baseline_variant_not_plain_reinforce_plus_plus():
    # verl's reinforce_plus_plus whitens discounted token returns without a group baseline;
    # stepcredit's reinforce_pp subtracts the group mean first, as reinforce_plus_plus_baseline
    tlr, mask, uid = single_turn_batch(3)
    adv = scv.compute_advantages(tlr, mask, uid, pipeline="reinforce_pp", params={"weight": "tokens"}).advantages
    plain, _ = core_algos.compute_reinforce_plus_plus_outcome_advantage(tlr, mask, config=algo_config())
    assert (adv - plain).abs().max() > 0.1


def test_float32_batch_keeps_dtype_and_matches_verl():
    tlr, mask, uid = single_turn_batch(4, dtype=torch.float32)
    adv, ret = core_algos.get_adv_estimator_fn("stepcredit_grpo")(
        token_level_rewards=tlr, response_mask=mask, config=algo_config(), index=uid
    )
    v_adv, _ = core_algos.compute_grpo_outcome_advantage(tlr.clone(), mask, uid)
    assert adv.dtype == ret.dtype == torch.float32 and adv.device == tlr.device
    # float32 rounding of the same arithmetic: a few ulps of values of order 1
    torch.testing.assert_close(adv, v_adv, atol=2e-6, rtol=2e-6)


def test_through_verls_compute_advantage_with_the_trainer_config():
    ray_trainer = pytest.importorskip(
        "verl.trainer.ppo.ray_trainer",
        reason="verl.trainer.ppo.ray_trainer needs imports outside verl's requirements (cachetools, uvicorn, "
        "fastapi: they come with vLLM/SGLang); the verl extra installs them",
        exc_type=ImportError,
    )
    from verl import DataProto

    tlr, mask, uid = single_turn_batch(5)
    # the shipped trainer config, with the overrides a user gives on the command line
    path = os.path.join(os.path.dirname(core_algos.__file__), "..", "config", "_generated_ppo_trainer.yaml")
    cfg = OmegaConf.merge(
        OmegaConf.load(path),
        OmegaConf.from_dotlist(["algorithm.adv_estimator=stepcredit_rloo", "algorithm.stepcredit.params.singleton=zero"]),
    )
    data = DataProto.from_dict(tensors={"token_level_rewards": tlr, "response_mask": mask},
                               non_tensors={"uid": uid})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ray_trainer.compute_advantage(data, adv_estimator=cfg.algorithm.adv_estimator,
                                            config=cfg.algorithm)
    v_adv, _ = core_algos.compute_rloo_vectorized_outcome_advantage(tlr.clone(), mask, uid)
    torch.testing.assert_close(out.batch["advantages"], v_adv, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- the registry
def test_every_estimator_is_registered_and_callable_through_verls_lookup(registered):
    expected = {f"stepcredit_{s.name}" for s in sc.list_estimators()} | {"stepcredit_pipeline"}
    assert set(registered) == expected
    for name in registered:
        fn = core_algos.get_adv_estimator_fn(name)
        assert callable(fn) and fn.__name__ == name
    assert scv.registered_names() == registered


def test_register_is_idempotent():
    before = {n: core_algos.get_adv_estimator_fn(n) for n in scv.registered_names()}
    assert scv.register() == tuple(sorted(before))
    assert {n: core_algos.get_adv_estimator_fn(n) for n in before} == before


def test_register_refuses_a_name_taken_by_another_function():
    core_algos.register_adv_est("clash_grpo")(lambda **kw: None)
    try:
        with pytest.raises(scv.VerlIntegrationError, match="not stepcredit's"):
            scv.register(prefix="clash_")
    finally:
        for name in [n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n.startswith("clash_")]:
            del core_algos.ADV_ESTIMATOR_REGISTRY[name]


def test_estimator_parameters_come_from_the_config():
    tlr, mask, uid = single_turn_batch(6)
    fn = core_algos.get_adv_estimator_fn("stepcredit_grpo")
    plain, _ = fn(token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config())
    no_std, _ = fn(token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config({"scale": "none"}))
    v_no_std, _ = core_algos.compute_grpo_outcome_advantage(tlr.clone(), mask, uid, norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(no_std, v_no_std, atol=ATOL, rtol=0)
    assert (plain - no_std).abs().max() > 0.01
    with pytest.raises(sc.EstimatorError, match="scale"):
        fn(token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config({"scale": "groups"}))
    with pytest.raises(scv.VerlIntegrationError, match="valid keys"):
        fn(token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config(paramz={}))
    with pytest.raises(scv.VerlIntegrationError, match="group index"):
        fn(token_level_rewards=tlr, response_mask=mask, config=algo_config())


@pytest.fixture
def forget_my_rloo():
    yield
    core_algos.ADV_ESTIMATOR_REGISTRY.pop("stepcredit_my_rloo", None)


def test_named_pipelines_and_the_pipeline_file(tmp_path, forget_my_rloo):
    tlr, mask, uid = single_turn_batch(7)
    pipe = sc.Pipeline.build("rloo", params={"singleton": "zero"})
    names = scv.register(pipelines={"my_rloo": pipe})
    assert "stepcredit_my_rloo" in names
    a, _ = core_algos.get_adv_estimator_fn("stepcredit_my_rloo")(
        token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config())
    v_adv, _ = core_algos.compute_rloo_vectorized_outcome_advantage(tlr.clone(), mask, uid)
    torch.testing.assert_close(a, v_adv, atol=ATOL, rtol=0)

    path = tmp_path / "pipe.toml"
    pipe.save(path)
    b, _ = core_algos.get_adv_estimator_fn("stepcredit_pipeline")(
        token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config(pipeline=str(path)))
    torch.testing.assert_close(b, v_adv, atol=ATOL, rtol=0)
    with pytest.raises(scv.VerlIntegrationError, match="pipeline"):
        core_algos.get_adv_estimator_fn("stepcredit_pipeline")(
            token_level_rewards=tlr, response_mask=mask, index=uid, config=algo_config())
    with pytest.raises(scv.VerlIntegrationError, match="estimator's name"):
        scv.register(pipelines={"grpo": pipe})


def test_registered_by_verls_external_modules_variable():
    # verl imports the modules of VERL_USE_EXTERNAL_MODULES in every process importing verl
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "stepcredit.integrations.verl"}
    code = ("import verl.trainer.ppo.core_algos as c; "
            "print(sorted(n for n in c.ADV_ESTIMATOR_REGISTRY if n.startswith('stepcredit_')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'stepcredit_gigpo'" in out.stdout and "'stepcredit_grpo'" in out.stdout


# ----------------------------------------------------------------------------- multi-turn batches
def agent_episodes(seed: int):
    """Episodes of a verl-agent batch: groups of 4 trajectories of 1..5 steps whose anchor
    observations come from a small pool per group (so states repeat), 0/1 episode rewards."""
    rng = np.random.default_rng(seed)
    episodes = []
    for g in range(3):
        for k in range(4):
            n = int(rng.integers(1, 6))
            states = [f"task {g} room {int(rng.integers(0, 3))}" for _ in range(n)]
            episodes.append({"episode_id": f"traj-{g}-{k}", "group_id": f"uid-{g}",
                             "outcome": float(rng.integers(0, 2)), "states": states})
    return episodes, rng


def agent_batch(episodes, rng, T=6, shuffle=True):
    """One row per step, rows shuffled (verl balances batches), each row holding the episode
    reward on its last response token (verl-agent's episode reward manager)."""
    rows = [(e["episode_id"], e["group_id"], t, s, e["outcome"])
            for e in episodes for t, s in enumerate(e["states"])]
    order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))
    rows = [rows[i] for i in order]
    B = len(rows)
    lengths = rng.integers(1, T + 1, B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    tlr = np.zeros((B, T))
    tlr[np.arange(B), lengths - 1] = [r[4] for r in rows]
    nt = {
        "uid": np.array([r[1] for r in rows], dtype=object),
        "traj_uid": np.array([r[0] for r in rows], dtype=object),
        "step_idx": np.array([r[2] for r in rows]),
        "anchor_obs": np.array([r[3] for r in rows], dtype=object),
    }
    return torch.tensor(tlr), torch.tensor(mask), nt, rows


def expected_rollouts(episodes, rows):
    """The same episodes built independently, in the adapter's order (first row in the batch)."""
    first = {}
    for i, r in enumerate(rows):
        first.setdefault(r[0], i)
    ordered = sorted(episodes, key=lambda e: first[e["episode_id"]])
    return sc.Rollouts.from_records([
        {"episode_id": e["episode_id"], "group_id": e["group_id"], "outcome": e["outcome"],
         "steps": [{"state": s} for s in e["states"]]} for e in ordered
    ])


def per_row(credit_values, ro, rows):
    """[B] the value of each batch row's step."""
    where = {(ro.episode_id[ro.step_episode[s]].as_py(), int(ro.step_index[s])): s for s in range(ro.n_steps)}
    return np.array([credit_values[where[(r[0], r[2])]] for r in rows])


def test_multi_turn_batch_round_trips():
    episodes, rng = agent_episodes(0)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    got = scv.rollouts_from_batch(tlr, mask, nt["uid"], traj_uid=nt["traj_uid"], step=nt["step_idx"],
                                  state=nt["anchor_obs"])
    want = expected_rollouts(episodes, rows)
    ro = got.rollouts
    assert ro.episode_id.equals(want.episode_id) and ro.group_id.equals(want.group_id)
    np.testing.assert_array_equal(ro.outcome, want.outcome)
    np.testing.assert_array_equal(ro.episode_offsets, want.episode_offsets)
    np.testing.assert_array_equal(ro.keys["state"], want.keys["state"])
    np.testing.assert_array_equal(ro.columns["tokens"], mask.sum(1).numpy()[got.step_row])
    # rows -> steps -> rows
    np.testing.assert_array_equal(got.step_row[got.row_step], np.arange(len(rows)))
    steps = [(ro.episode_id[ro.step_episode[s]].as_py(), int(ro.step_index[s])) for s in got.row_step]
    assert steps == [(r[0], r[2]) for r in rows]


@pytest.mark.parametrize("params", [{}, {"norm": "mean", "episode_stats": "steps", "omega": 0.5}])
def test_gigpo_through_the_adapter_equals_estimate(params):
    episodes, rng = agent_episodes(1)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    config = algo_config(params, step_key="step_idx")
    adv, ret = core_algos.get_adv_estimator_fn("stepcredit_gigpo")(
        token_level_rewards=tlr, response_mask=mask, index=nt["uid"], config=config, non_tensor_batch=nt)
    ro = expected_rollouts(episodes, rows)
    credit = sc.estimate(ro, "gigpo", **params)
    assert credit.diagnostics["anchor_groups"] > 0  # the batch does exercise the step part
    m = mask.double()
    torch.testing.assert_close(adv, torch.tensor(per_row(credit.step_advantage, ro, rows))[:, None] * m,
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(ret, torch.tensor(per_row(credit.step_return, ro, rows))[:, None] * m,
                               atol=1e-12, rtol=0)


def test_multi_turn_rows_in_step_order_need_no_step_index():
    episodes, rng = agent_episodes(2)
    tlr, mask, nt, rows = agent_batch(episodes, rng, shuffle=False)
    nt.pop("step_idx")
    adv, _ = core_algos.get_adv_estimator_fn("stepcredit_gigpo")(
        token_level_rewards=tlr, response_mask=mask, index=nt["uid"], config=algo_config(), non_tensor_batch=nt)
    ro = expected_rollouts(episodes, rows)
    want = per_row(sc.estimate(ro, "gigpo").step_advantage, ro, rows)
    torch.testing.assert_close(adv, torch.tensor(want)[:, None] * mask.double(), atol=1e-12, rtol=0)


def test_permuting_rows_permutes_the_advantages():
    episodes, rng = agent_episodes(3)
    tlr, mask, nt, _ = agent_batch(episodes, rng)
    perm = rng.permutation(len(tlr))
    fn = core_algos.get_adv_estimator_fn("stepcredit_gigpo")
    config = algo_config(step_key="step_idx")
    a, _ = fn(token_level_rewards=tlr, response_mask=mask, index=nt["uid"], config=config, non_tensor_batch=nt)
    b, _ = fn(token_level_rewards=tlr[perm], response_mask=mask[perm], index=nt["uid"][perm], config=config,
              non_tensor_batch={k: v[perm] for k, v in nt.items()})
    torch.testing.assert_close(b, a[perm], atol=1e-12, rtol=0)


def test_step_rewards_leave_the_rest_in_the_outcome():
    episodes, rng = agent_episodes(4)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    r = np.where(rng.random(len(rows)) < 0.3, -0.1, 0.0)
    got = scv.rollouts_from_batch(tlr, mask, nt["uid"], traj_uid=nt["traj_uid"], step=nt["step_idx"], step_reward=r)
    ro = got.rollouts
    total = ro.outcome + np.add.reduceat(ro.reward, ro.episode_offsets[:-1])
    want = expected_rollouts(episodes, rows).outcome
    np.testing.assert_allclose(total, want, atol=1e-12)
    np.testing.assert_array_equal(ro.reward, r[got.step_row])


def test_compute_advantage_on_a_dataproto():
    from verl import DataProto

    episodes, rng = agent_episodes(5)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    data = DataProto.from_dict(tensors={"token_level_rewards": tlr.float(), "response_mask": mask},
                               non_tensors=nt)
    data, result = scv.compute_advantage(data, "gigpo", settings=scv.Settings(step_key="step_idx"))
    ro = expected_rollouts(episodes, rows)
    want = per_row(sc.estimate(ro, "gigpo").step_advantage, ro, rows)
    assert data.batch["advantages"].dtype == torch.float32
    torch.testing.assert_close(data.batch["advantages"], torch.tensor(want, dtype=torch.float32)[:, None]
                               * mask.float(), atol=1e-6, rtol=1e-6)
    assert result.credit.estimator == "gigpo"


def test_bad_multi_turn_batches_are_named():
    episodes, rng = agent_episodes(6)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    long = next(e["episode_id"] for e in episodes if len(e["states"]) > 1)
    uid = nt["uid"].copy()
    uid[np.flatnonzero(nt["traj_uid"] == long)[-1]] = "another-uid"
    with pytest.raises(scv.VerlIntegrationError, match="two groups"):
        scv.rollouts_from_batch(tlr, mask, uid, traj_uid=nt["traj_uid"], step=nt["step_idx"])
    step = nt["step_idx"].copy()
    step[:] = 0
    with pytest.raises(scv.VerlIntegrationError, match="step index 0 twice"):
        scv.rollouts_from_batch(tlr, mask, nt["uid"], traj_uid=nt["traj_uid"], step=step)
    with pytest.raises(scv.VerlIntegrationError, match="step_key"):
        core_algos.get_adv_estimator_fn("stepcredit_gigpo")(
            token_level_rewards=tlr, response_mask=mask, index=nt["uid"], non_tensor_batch=nt,
            config=algo_config(step_key="no_such_key"))
    with pytest.raises(sc.MissingColumnError, match="state"):
        core_algos.get_adv_estimator_fn("stepcredit_gigpo")(
            token_level_rewards=tlr, response_mask=mask, index=nt["uid"], config=algo_config())


def test_more_step_fields_come_from_the_config():
    # oprl needs the step field process: here a PRM score per row under non_tensor_batch["prm"]
    episodes, rng = agent_episodes(7)
    tlr, mask, nt, rows = agent_batch(episodes, rng)
    process = {(r[0], r[2]): float(rng.normal()) for r in rows}
    nt["prm"] = np.array([process[(r[0], r[2])] for r in rows])
    adv, _ = core_algos.get_adv_estimator_fn("stepcredit_oprl")(
        token_level_rewards=tlr, response_mask=mask, index=nt["uid"], non_tensor_batch=nt,
        config=algo_config(step_key="step_idx", fields={"process": "prm"}))
    first = {}
    for i, r in enumerate(rows):
        first.setdefault(r[0], i)
    ro = sc.Rollouts.from_records([
        {"episode_id": e["episode_id"], "group_id": e["group_id"], "outcome": e["outcome"],
         "steps": [{"state": s, "process": process[(e["episode_id"], t)]} for t, s in enumerate(e["states"])]}
        for e in sorted(episodes, key=lambda e: first[e["episode_id"]])
    ])
    want = per_row(sc.estimate(ro, "oprl").step_advantage, ro, rows)
    torch.testing.assert_close(adv, torch.tensor(want)[:, None] * mask.double(), atol=1e-12, rtol=0)
    with pytest.raises(scv.VerlIntegrationError, match="fields.process"):
        core_algos.get_adv_estimator_fn("stepcredit_oprl")(
            token_level_rewards=tlr, response_mask=mask, index=nt["uid"], non_tensor_batch=nt,
            config=algo_config(fields={"process": "missing"}))


@pytest.mark.parametrize("refit", [True, False])
def test_a_dropped_episode_gets_advantage_zero(refit):
    # reinforce_pp whitens over the batch, so the equal-score group's centred 0 becomes -mu/sigma;
    # zero_variance drops that group: weight 0, and verl, without per-row weights, gets A = 0
    tlr, mask, uid = single_turn_batch(8)
    equal = (tlr.sum(1) == 0.25).numpy()
    pipe = sc.Pipeline.build("reinforce_pp", filters=["zero_variance"], refit=refit)
    out = scv.compute_advantages(tlr, mask, uid, pipeline=pipe)
    assert torch.all(out.advantages[torch.from_numpy(equal)] == 0)
    plain = scv.compute_advantages(tlr, mask, uid, pipeline="reinforce_pp").advantages
    assert plain[torch.from_numpy(equal)].abs().max() > 0
    kept = scv.compute_advantages(tlr[~equal], mask[~equal], uid[~equal], pipeline="reinforce_pp").advantages
    if refit:  # statistics over the kept episodes only
        torch.testing.assert_close(out.advantages[torch.from_numpy(~equal)], kept, atol=1e-12, rtol=0)
