"""The torch PRMs: LMStepPRM (a scalar head on a causal LM) and ImplicitPRM (β log-likelihood ratios).

Tiny models (width 32-64, 1-2 layers) on tiny rollouts, one torch thread; the whole file runs in
well under a minute on a CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from reference.prm_torch import (  # noqa: E402
    bt_pairs_loop,
    char_action,
    char_prompt,
    implicit_step_rewards_loop,
    q_values_loop,
    step_logits_loop,
)
from stepcredit.data import Rollouts  # noqa: E402
from stepcredit.policies.lm_policy import CharTokenizer, LMPolicy  # noqa: E402
from stepcredit.prm import load_model, save_model  # noqa: E402
from stepcredit.prm.feature_model import PRMError  # noqa: E402
from stepcredit.prm.losses import implicit_prm_ce_loss  # noqa: E402
from stepcredit.prm.torch_models import ImplicitPRM, LMStepPRM, _CharText, bt_pairs  # noqa: E402

SMALL = {"hidden_size": 32, "n_layers": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny models are far faster on one thread, above all on a shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ro(episodes: list[list[tuple[str, str]]], outcome=None, labels=None, groups=None) -> Rollouts:
    recs = []
    k = 0
    for e, steps in enumerate(episodes):
        st_ = []
        for s, a in steps:
            d = {"state": s, "action": a}
            if labels is not None:
                d["label"] = float(labels[k])
            k += 1
            st_.append(d)
        recs.append({"episode_id": f"e{e}", "group_id": f"g{e if groups is None else groups[e]}",
                     "outcome": 0.0 if outcome is None else float(outcome[e]), "steps": st_})
    return Rollouts.from_records(recs)


def _bad_action_rollouts(n: int = 48, seed: int = 0) -> Rollouts:
    """Three rooms, moves left/right/stop; an episode fails exactly when it contains "stop"."""
    rng = np.random.default_rng(seed)
    acts = rng.choice(["left", "right", "stop"], size=(n, 3), p=[0.4, 0.4, 0.2])
    eps = [[(f"room {t}", str(a)) for t, a in enumerate(row)] for row in acts]
    return _ro(eps, outcome=["stop" not in row for row in acts], groups=[e // 4 for e in range(n)])


def _lock_rollouts() -> Rollouts:
    """lock_chain (4 positions, 4 digits), one fixed task, 8 uniform episodes; label = the oracle process score."""
    from stepcredit.envs import make_env
    from stepcredit.policies import TabularPolicy
    from stepcredit.train.rollout import collect

    envs = [make_env("lock_chain", length=4, n_actions=4) for _ in range(8)]
    ro = collect(envs, TabularPolicy(), [7], 8, np.random.default_rng(0)).rollouts
    return ro.replace_columns(label=ro.column("process"))


def _texts(ro: Rollouts) -> tuple[list[str], list[str]]:
    return [str(s) for s in ro.key_values["state"].to_pylist()], [str(a) for a in ro.key_values["action"].to_pylist()]


# ---------------------------------------------------------------------- encoding
@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=12), max_size=6))
def test_char_encoding_matches_the_char_tokenizer(texts):
    flat, lengths = _CharText().encode(texts)
    tok = CharTokenizer()
    assert lengths.tolist() == [len(t) for t in texts]
    assert flat.tolist() == [i for t in texts for i in tok.encode(t)]


def test_step_tokens_are_the_lm_policy_prompt_and_action():
    states = ["lock position 0/4", "a long state with\nnewlines and ünïcode", "x"]
    actions = ["press 1", "go", ""]
    ro = _ro([[(s, a)] for s, a in zip(states, actions)])
    for max_prompt in (384, 8):
        m = LMStepPRM(**SMALL, max_prompt_tokens=max_prompt)
        pol = LMPolicy(hidden_size=32, max_prompt_tokens=max_prompt)
        p = m._pairs(ro)
        for t, (s, a) in enumerate(zip(states, actions)):
            u = p.step_pair[t]
            seq = p.tokens[p.offsets[u]:p.offsets[u + 1]].tolist()
            assert seq == pol.prompt_ids(s) + pol.action_ids(a) == char_prompt(s, max_prompt) + char_action(a)
            assert p.prompt_len[u] == len(pol.prompt_ids(s)) and p.action_len[u] == len(pol.action_ids(a))


def test_init_std_002_builds_the_lm_policy_initial_model():
    m = LMStepPRM(seed=3, init_std=0.02)
    pol = LMPolicy(hidden_size=64, seed=3)
    a, b = m.model.state_dict(), pol.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = torch.random.get_rng_state()
    ImplicitPRM(**SMALL, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # built inside a forked random state


# ---------------------------------------------------------------------- Bradley-Terry pairs
def test_bt_pairs_by_hand():
    # group g0: state A with actions x (0.9), y (0.2), x again (0.5), z (0.2); state B alone
    # group g1: state A with action y (1.0) — another group, never paired with g0
    ro = _ro([[("A", "x"), ("A", "y")], [("A", "x"), ("B", "y"), ("A", "z")], [("A", "y")]],
             labels=[0.9, 0.2, 0.5, 0.7, 0.2, 1.0], groups=[0, 0, 1])
    c, r = bt_pairs(ro)
    # steps 0..4 are group 0; state A: 0 (x, .9), 1 (y, .2), 2 (x, .5), 4 (z, .2)
    # ordered pairs with a strictly higher label and a different action:
    #   0>1, 0>4 (0 vs 2: same action x); 2>1, 2>4; 1 vs 4 tie; step 3 (state B) alone; step 5 other group
    assert list(zip(c.tolist(), r.tolist())) == [(0, 1), (0, 4), (2, 1), (2, 4)]
    c, r = bt_pairs(ro, mask=np.array([True, True, False, True, True, True]))
    assert list(zip(c.tolist(), r.tolist())) == [(0, 1), (0, 4)]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_bt_pairs_match_the_loop_oracle(data):
    n_ep = data.draw(st.integers(1, 6))
    eps, labels, groups = [], [], []
    for _ in range(n_ep):
        k = data.draw(st.integers(1, 4))
        eps.append([(data.draw(st.sampled_from(["s0", "s1", "s2"])), data.draw(st.sampled_from(["a", "b", "c"]))) for _ in range(k)])
        labels += data.draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=k, max_size=k))
        groups.append(data.draw(st.integers(0, 2)))
    mask = data.draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    ro = _ro(eps, labels=labels, groups=groups)
    c, r = bt_pairs(ro, mask=np.array(mask))
    states, actions = _texts(ro)
    g = ro.episode_group[ro.step_episode].tolist()
    assert list(zip(c.tolist(), r.tolist())) == bt_pairs_loop(g, states, actions, labels, mask)


# ---------------------------------------------------------------------- the implicit PRM
def test_implicit_prm_at_initialisation_gives_zero_rewards_exactly():
    ro = _bad_action_rollouts(8)
    m = ImplicitPRM(**SMALL)
    assert np.array_equal(m.step_rewards(ro), np.zeros(ro.n_steps))
    assert np.array_equal(m.episode_rewards(ro), np.zeros(ro.n_episodes))
    assert np.array_equal(m.score_steps(ro), np.full(ro.n_steps, 0.5))
    m.score = "single"
    assert np.array_equal(m.score_steps(ro), np.full(ro.n_steps, 0.5))


def test_implicit_rewards_match_the_token_by_token_oracle_and_telescope():
    ro = _bad_action_rollouts(12)
    m = ImplicitPRM(**SMALL, beta=0.5).fit(ro, epochs=2, batch_size=4, lr=3e-3)
    r = m.step_rewards(ro)
    assert np.abs(r).max() > 0.05  # trained away from π_ref: the comparison is not between zeros
    states, actions = _texts(ro)
    want = implicit_step_rewards_loop(m.model, m.ref_model, [char_prompt(s) for s in states], [char_action(a) for a in actions], 0.5)
    np.testing.assert_allclose(r, want, rtol=0, atol=1e-5)
    # the episode reward is the sum of its step rewards; q_t the running sum; σ(q_t) the score
    episode = m.episode_rewards(ro)
    np.testing.assert_allclose(np.add.reduceat(r, ro.episode_offsets[:-1]), episode, rtol=1e-12, atol=1e-12)
    q = m.q_values(ro)
    np.testing.assert_allclose(q, q_values_loop(r.tolist(), ro.episode_offsets.tolist()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(q[ro.episode_offsets[1:] - 1], episode, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.score_steps(ro), 1 / (1 + np.exp(-q)), rtol=1e-12)
    # the CE objective reads the same episode reward: ℓ = −log σ(±r(y)), r(y) = β Σ log-ratio
    y = (ro.outcome >= 1).astype(float)
    tok, _ = m.token_log_ratios(ro)
    ce = implicit_prm_ce_loss(torch.from_numpy(episode / 0.5), torch.from_numpy(y), beta=0.5, reduction="none").numpy()
    np.testing.assert_allclose(ce, np.logaddexp(0, -np.where(y == 1, episode, -episode)), rtol=1e-9)
    assert tok.size == sum(len(char_action(a)) for a in actions)


def test_implicit_ce_on_outcomes_finds_the_bad_action():
    ro = _bad_action_rollouts(48)
    m = ImplicitPRM(**SMALL).fit(ro, epochs=8, batch_size=8, lr=3e-3)
    assert m.history[-1] < 0.5 * m.history[0]
    episode = m.episode_rewards(ro)
    win = ro.outcome == 1
    # every success above every failure, by a margin far above float noise (~1e-6)
    assert episode[win].min() - episode[~win].max() > 0.5
    r = m.step_rewards(ro)
    _, actions = _texts(ro)
    stop = np.array(actions) == "stop"
    assert np.all(r[stop] < -0.5) and np.all(r[~stop] > 0)
    # accumulative scores flag the first "stop" as the first step below 0.5
    s = m.score_steps(ro)
    first_stop = np.array([next((t for t in range(3) if actions[3 * e + t] == "stop"), -1) for e in range(ro.n_episodes)])
    from stepcredit.prm.evaluation import predict_first_error

    assert np.array_equal(predict_first_error(s, ro.episode_offsets, 0.5), first_stop)


# ---------------------------------------------------------------------- the LM step PRM
def test_lm_step_prm_logits_match_one_forward_per_step():
    ro = _bad_action_rollouts(4)
    m = LMStepPRM(**SMALL).fit(ro, labels=np.linspace(0, 1, ro.n_steps), epochs=1, batch_size=4)
    states, actions = _texts(ro)
    want = step_logits_loop(m.model, m.head, [char_prompt(s) for s in states], [char_action(a) for a in actions])
    np.testing.assert_allclose(m.step_logits(ro), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.score_steps(ro), 1 / (1 + np.exp(-np.asarray(want))), rtol=0, atol=1e-5)


@pytest.mark.parametrize("objective, epochs", [("classification", 10), ("regression", 10), ("bt", 1)])
def test_lm_step_prm_learns_the_lock_chain_labels(objective, epochs):
    ro = _lock_rollouts()
    y = ro.column("label")
    m = LMStepPRM(objective).fit(ro, epochs=epochs, batch_size=16 if objective != "bt" else 32, lr=1e-3)
    assert len(m.history) == epochs and m.history[-1] < (m.history[0] if epochs > 1 else np.log(2))
    if objective == "bt":  # only differences are trained: rank the pairs, not the 0.5 threshold
        c, r = bt_pairs(ro)
        z = m.step_logits(ro)
        assert np.mean(z[c] > z[r]) > 0.95
    else:
        assert np.mean((m.score_steps(ro) >= 0.5) == (y == 1)) > 0.95


# ---------------------------------------------------------------------- determinism and saving
@pytest.mark.parametrize("kind", ["torch", "implicit"])
def test_fit_is_deterministic_for_a_seed(kind):
    ro = _bad_action_rollouts(8)
    y = (np.arange(ro.n_steps) % 3 == 0).astype(float)

    def fit(seed):
        if kind == "torch":
            return LMStepPRM(**SMALL).fit(ro, labels=y, epochs=2, batch_size=5, seed=seed)
        return ImplicitPRM(**SMALL).fit(ro, epochs=2, batch_size=3, seed=seed)

    a, b, c = fit(1), fit(1), fit(2)
    assert a.history == b.history and a.history != c.history
    assert np.array_equal(a.score_steps(ro), b.score_steps(ro))
    assert not np.array_equal(a.score_steps(ro), c.score_steps(ro))


def test_progress_is_reported_after_every_batch():
    ro = _bad_action_rollouts(8)
    calls = []
    ImplicitPRM(**SMALL).fit(ro, epochs=2, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(1, 7)]  # ceil(8 / 3) = 3 batches × 2 epochs


@pytest.mark.parametrize("make", [
    lambda: LMStepPRM("regression", **SMALL, seed=4),
    lambda: LMStepPRM("bt", **SMALL),
    lambda: ImplicitPRM(**SMALL, beta=0.2, score="single"),
    lambda: ImplicitPRM(**SMALL, outcome_threshold=0.5),
])
def test_save_and_load_give_identical_scores(tmp_path, make):
    ro = _bad_action_rollouts(8)
    m = make()
    if isinstance(m, LMStepPRM):
        y = (np.array(_texts(ro)[1]) == "left").astype(float)
        m.fit(ro, labels=y, epochs=1, batch_size=8)
    else:
        m.fit(ro, epochs=1, batch_size=4)
    d = save_model(m, tmp_path / "m")
    back = load_model(d)
    assert type(back) is type(m) and back.config() == m.config()
    assert json.loads((d / "config.json").read_text())["base_model"] == "tiny"
    assert np.array_equal(back.score_steps(ro), m.score_steps(ro))
    if isinstance(m, ImplicitPRM):
        assert np.array_equal(back.step_rewards(ro), m.step_rewards(ro))


def test_load_refuses_weights_that_do_not_fit(tmp_path):
    m = LMStepPRM(**SMALL)
    d = save_model(m, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(PRMError, match=r"weights 'backbone\.[a-z_.]+weight' of shape \(101, 32\), expected \(101, 64\)"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "seed"}))
    with pytest.raises(PRMError, match="config.json lacks seed"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({**cfg, "kind": "implicit", "beta": 0.05, "score": "single", "outcome_threshold": 1.0}))
    with pytest.raises(PRMError, match="missing \\['policy"):
        load_model(d)


# ---------------------------------------------------------------------- a local transformers model
def _local_llama(tmp_path):
    """A tiny random Llama causal LM and a character-level fast tokenizer saved to a directory."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    chars = "".join(chr(c) for c in range(32, 127)) + "\n"
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *chars])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # one token per character
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    return str(tmp_path), vocab


def test_base_model_from_a_local_directory(tmp_path):
    path, vocab = _local_llama(tmp_path / "llama")
    ro = _bad_action_rollouts(6)
    m = ImplicitPRM(base_model=path, max_prompt_tokens=64, max_action_tokens=16)
    assert np.array_equal(m.step_rewards(ro), np.zeros(ro.n_steps))
    # the local tokenizer: <bos> + state characters + "\n" (no sep token) | action characters + <eos>
    p = m._pairs(ro)
    states, actions = _texts(ro)
    u = p.step_pair[0]
    want = [1, *(vocab[c] for c in states[0]), vocab["\n"], *(vocab[c] for c in actions[0]), 2]
    assert p.tokens[p.offsets[u]:p.offsets[u + 1]].tolist() == want
    m.fit(ro, epochs=2, batch_size=3, lr=3e-3)
    prompts = [[1, *(vocab[c] for c in s), vocab["\n"]] for s in states]
    acts = [[*(vocab[c] for c in a), 2] for a in actions]
    want_r = implicit_step_rewards_loop(m.model, m.ref_model, prompts, acts, m.beta)
    np.testing.assert_allclose(m.step_rewards(ro), want_r, rtol=0, atol=1e-5)
    back = load_model(save_model(m, tmp_path / "imp"))
    assert back.config()["base_model"] == path
    assert np.array_equal(back.score_steps(ro), m.score_steps(ro))
    s = LMStepPRM(base_model=path, max_prompt_tokens=64, max_action_tokens=16).fit(
        ro, labels=(np.arange(ro.n_steps) % 2).astype(float), epochs=1, batch_size=4)
    assert np.array_equal(load_model(save_model(s, tmp_path / "lm")).score_steps(ro), s.score_steps(ro))
    with pytest.raises(PRMError, match="not a local model directory"):
        LMStepPRM(base_model=str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    ro = _bad_action_rollouts(4)
    with pytest.raises(PRMError, match="objective='nope'"):
        LMStepPRM("nope")
    with pytest.raises(PRMError, match="beta=0"):
        ImplicitPRM(beta=0)
    with pytest.raises(PRMError, match="score='last'"):
        ImplicitPRM(score="last")
    with pytest.raises(PRMError, match="hidden_size=30"):
        LMStepPRM(hidden_size=30)
    m = LMStepPRM(**SMALL)
    with pytest.raises(PRMError, match="no step field 'label'"):
        m.fit(ro)
    no_action = Rollouts.from_records([{"episode_id": "e", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]}])
    with pytest.raises(PRMError, match="no step field 'action'"):
        m.score_steps(no_action)
    with pytest.raises(PRMError, match="no step field 'action'"):
        ImplicitPRM(**SMALL).fit(no_action)
    bad = np.zeros(ro.n_steps)
    bad[5] = 1.5
    with pytest.raises(PRMError, match="label of step 5 is 1.5; the classification objective needs labels in \\[0, 1\\]"):
        m.fit(ro, labels=bad)
    with pytest.raises(PRMError, match="labels have shape \\(3,\\)"):
        m.fit(ro, labels=np.zeros(3))
    with pytest.raises(PRMError, match="no Bradley-Terry pair"):
        LMStepPRM("bt", **SMALL).fit(ro, labels=np.zeros(ro.n_steps))
    with pytest.raises(PRMError, match="label of episode 2 is -1.0"):
        ImplicitPRM(**SMALL).fit(ro, labels=np.array([0, 1, -1, 0.0]))
    with pytest.raises(PRMError, match="epochs=0"):
        ImplicitPRM(**SMALL).fit(ro, epochs=0)
    long = _ro([[("s", "x" * 40)]])
    with pytest.raises(PRMError, match="step 0 has an action of 41 tokens"):
        LMStepPRM(**SMALL, max_action_tokens=16).score_steps(long)


# ---------------------------------------------------------------------- command line and imports
def test_cli_train_implicit_and_torch_then_eval(tmp_path, capsys):
    from stepcredit.cli import main

    data = str(tmp_path / "truth.jsonl")
    kw = ["--env-kwargs", "length=3", "--env-kwargs", "n_candidates=3", "--env-kwargs", "max_number=5"]
    assert main(["prm", "label", "--env", "arith_chain", *kw, "--tasks", "3", "--truth", "-o", data, "-q"]) == 0
    model = str(tmp_path / "imp")
    assert main(["prm", "train", data, "-o", model, "--model", "implicit", "--epochs", "1", "--hidden-size", "32",
                 "--layers", "1", "-q"]) == 0
    assert "implicit PRM (beta 0.05, 1 epochs)" in capsys.readouterr().out
    out = str(tmp_path / "eval.json")
    assert main(["prm", "eval", model, data, "--json", out]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["episodes"] == 12 and 0 <= res["error_acc"] <= 1 and res["steps"] == 36
    lm = str(tmp_path / "lm")
    assert main(["prm", "train", data, "-o", lm, "--model", "torch", "--objective", "regression", "--epochs", "1",
                 "--hidden-size", "32", "--layers", "1", "-q"]) == 0
    assert main(["prm", "score", lm, data, "-o", str(tmp_path / "scored.jsonl")]) == 0
    capsys.readouterr()
    assert main(["prm", "train", data, "-o", lm, "--model", "implicit", "--objective", "bt"]) == 2
    assert "--model implicit takes no --objective" in capsys.readouterr().err
    assert main(["prm", "train", data, "-o", lm, "--model", "torch", "--objective", "ridge"]) == 2


def test_importing_stepcredit_prm_does_not_import_torch():
    code = ("import sys, stepcredit.prm as p; assert {'LMStepPRM', 'ImplicitPRM', 'bt_pairs'} <= set(dir(p)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
