"""stepcredit inside TRL's GRPO trainer, against the real TRL package (CPU, a tiny random model).

Every training test runs ``GRPOTrainer.train()`` for one step: real generation (or a
``rollout_func`` that generates with the model, for multi-turn episodes), real reward functions
and TRL's own loss. A subclass records the ``inputs`` that reach ``_compute_loss``; the
advantages there are checked against stepcredit computed again here from the completions and
rewards the reward functions saw (and, for GiGPO, against the loop oracle), row by row: TRL
shuffles the batch before the loss, so rows are matched by their token ids.

No model or data is downloaded: the tokenizer is one token per character built here, the model a
2-layer width-32 Qwen2 with random weights, the dataset four prompts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("STEPCREDIT_REQUIRE_TRL"):  # CI sets it: there a missing TRL is a failure
    import torch
    import trl
else:
    torch = pytest.importorskip("torch", reason="the TRL integration needs torch (the trl extra)")
    trl = pytest.importorskip(
        "trl", reason="trl is not installed: install the trl extra (docs/integrations.md, TRL)", exc_type=ImportError
    )
from datasets import Dataset  # noqa: E402  (comes with trl)
from reference.anchor import gigpo as gigpo_oracle  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import stepcredit as sc  # noqa: E402
from stepcredit.integrations import trl as sct  # noqa: E402
from stepcredit.estimators import EstimatorError  # noqa: E402
from stepcredit.pipeline import PipelineError  # noqa: E402

pytestmark = pytest.mark.integration

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +=?."
PROMPTS = ["1+1=?", "2+3=?", "what is 4?", "hello"]


@pytest.fixture(scope="module", autouse=True)
def offline_one_thread():
    """No Hub access (HF_HUB_OFFLINE; huggingface_hub reads it once, when imported, so its
    constant too), TRL's "experimental rollout_func" warning silenced, and one torch thread
    (two cores are shared; the tiny model is fastest on one). All restored afterwards."""
    import huggingface_hub.constants as hub

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
        mp.setattr(hub, "HF_HUB_OFFLINE", True)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------- tiny model
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: <pad>=0, <eos>=1, <unk>=2, then CHARS."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=3 + len(CHARS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


def grpo_config(tmp_path, **overrides) -> GRPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=1, per_device_train_batch_size=6,
        num_generations=3, max_completion_length=8, learning_rate=1e-2, report_to="none",
        save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True,
    )
    settings.update(overrides)
    return GRPOConfig(**settings)


def recording(cls):
    """``cls`` recording the inputs of every ``_compute_loss`` call and its loss."""

    class Recording(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_inputs, self.losses = [], []

        def _compute_loss(self, model, inputs):
            keep = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "tool_mask", "advantages")
            self.loss_inputs.append({k: inputs[k].detach().cpu().clone() for k in keep if k in inputs})
            loss = super()._compute_loss(model, inputs)
            self.losses.append(float(loss.detach()))
            return loss

    return Recording


class RewardLog:
    """Reward functions that record what TRL passed them and what they returned."""

    def __init__(self):
        self.calls = {}

    def make(self, name, score):
        def reward(prompts, completions, completion_ids, **kwargs):
            values = [float(score(c)) for c in completions]
            self.calls[name] = (list(prompts), list(completions), [list(map(int, x)) for x in completion_ids], values)
            return values

        reward.__name__ = name
        return reward


def loss_rows(trainer):
    """(completion ids, advantages [T], loss mask [T]) of every row that reached the loss."""
    rows = []
    for inp in trainer.loss_inputs:
        mask = inp["completion_mask"] * inp.get("tool_mask", torch.ones_like(inp["completion_mask"]))
        adv = inp["advantages"]
        for r in range(adv.shape[0]):
            n = int(inp["completion_mask"][r].sum())
            rows.append((tuple(inp["completion_ids"][r, :n].tolist()), adv[r], mask[r]))
    return rows


def assert_rows_match(rows, expected, atol):
    """Every loss row equals an expected [T] row of the same completion ids (duplicates: any)."""
    assert rows, "no batch reached the loss"
    for ids, adv, _ in rows:
        candidates = expected.get(ids)
        assert candidates, f"completion {ids} reached the loss but was never scored"
        errs = [float((adv.double() - torch.as_tensor(e[: adv.shape[0]])).abs().max()) for e in candidates]
        assert min(errs) <= atol, f"advantages of completion {ids}: off by {min(errs):.3g}"


def padded(values_per_token, T):
    out = np.zeros(T)
    out[: len(values_per_token)] = values_per_token
    return out


def params_changed(model, before):
    return any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---------------------------------------------------------------------------------- (1) a pipeline in one real step
def test_train_step_pipeline_advantages_reach_the_loss(tmp_path):
    """One real GRPO step with a pipeline (composite reward of two reward functions -> rloo ->
    zero-variance filter): the advantages in the loss equal the pipeline run again here on the
    completions and rewards the reward functions saw; the step updates the model."""
    log = RewardLog()
    fmt = log.make("fmt", lambda c: any(ch.isdigit() for ch in c))
    size = log.make("size", lambda c: (len(c) % 3) / 2)
    pipe = sc.Pipeline.build(
        "rloo", transforms=[("composite", {"components": "fmt:0.5,size:1.0"})], filters=["zero_variance"]
    )
    model = tiny_model()
    trainer = recording(sct.StepCreditGRPOTrainer)(
        model=model, reward_funcs=[fmt, size], args=grpo_config(tmp_path, per_device_train_batch_size=9),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tiny_tokenizer(), pipeline=pipe,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()

    assert trainer.state.global_step == 1
    assert len(trainer.losses) == 1 and math.isfinite(trainer.losses[0])
    assert params_changed(model, before)
    assert trainer.stepcredit_state.stages  # composite's schedule step advanced

    # stepcredit on the same completions: group = the prompt's G consecutive samples
    prompts, texts, ids, fmt_r = log.calls["fmt"]
    size_r = log.calls["size"][3]
    G = 3
    records = [
        {"episode_id": f"e{i}", "group_id": f"g{i // G}", "outcome": fmt_r[i] + size_r[i],
         "rewards": {"fmt": fmt_r[i], "size": size_r[i]}, "steps": [{"tokens": len(ids[i])}]}
        for i in range(len(ids))
    ]
    assert all(prompts[i] == prompts[i - i % G] for i in range(len(ids)))  # TRL's groups are consecutive
    credit = pipe.run(sc.Rollouts.from_records(records)).credit
    weight = np.ones(len(ids)) if credit.episode_weight is None else credit.episode_weight
    T = trainer.loss_inputs[0]["advantages"].shape[1]
    expected = {}
    for i in range(len(ids)):
        expected.setdefault(tuple(ids[i]), []).append(padded([credit.step_advantage[i] * weight[i]] * len(ids[i]), T))
    rows = loss_rows(trainer)
    assert len(rows) == len(ids)
    assert_rows_match(rows, expected, atol=1e-6)
    assert any(float(a.abs().max()) > 0 for _, a, _ in rows)


# ---------------------------------------------------------------------------------- (2) multi-turn
def tool_rollout(tokenizer, turn_tokens=3):
    """A ``rollout_func``: assistant turn, tool result (masked, env_mask 0), assistant turn.

    Both turns are sampled from the model being trained; the tool answers ``=0`` or ``=1``
    (the parity of the turn's first token), which is the second step's observation, with a
    step reward of 0.5 for ``=1``.
    """

    def rollout(prompts, trainer):
        model = trainer.model
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": [],
               "observation": [], "tool_reward": []}
        for p in prompts:
            prompt_ids = tokenizer(p)["input_ids"]
            ctx = torch.tensor([prompt_ids])
            with torch.no_grad():
                gen = dict(max_new_tokens=turn_tokens, min_new_tokens=turn_tokens, do_sample=True, pad_token_id=0)
                turn1 = model.generate(ctx, **gen)[0, ctx.shape[1]:].tolist()
                obs = f"={turn1[0] % 2}"
                obs_ids = tokenizer(obs)["input_ids"]
                ctx2 = torch.tensor([prompt_ids + turn1 + obs_ids])
                turn2 = model.generate(ctx2, **gen)[0, ctx2.shape[1]:].tolist()
            out["prompt_ids"].append(prompt_ids)
            out["completion_ids"].append(turn1 + obs_ids + turn2)
            out["env_mask"].append([1] * len(turn1) + [0] * len(obs_ids) + [1] * len(turn2))
            out["observation"].append(obs)
            out["tool_reward"].append(0.5 if obs == "=1" else 0.0)
        return out

    return rollout


def turns_with_states(c: sct.Completion):
    """One step per assistant turn (the default split), states and rewards from the episode."""
    first, second = sct.steps_by_turn(c)
    return [sct.Step(first.start, first.end, state="start", reward=0.0),
            sct.Step(second.start, second.end, state=c.inputs["observation"], reward=c.inputs["tool_reward"])]


def test_multi_turn_tool_episodes_get_per_turn_advantages(tmp_path):
    """Tool episodes: each assistant turn is a step with its own GiGPO advantage; the tool
    tokens get 0. Checked against the GiGPO loop oracle and a loop over tokens."""
    tok = tiny_tokenizer()
    log = RewardLog()
    digits = log.make("digits", lambda c: sum(ch.isdigit() for ch in c[-3:]) / 3)
    model = tiny_model(1)
    trainer = recording(sct.StepCreditGRPOTrainer)(
        model=model, reward_funcs=digits, args=grpo_config(tmp_path, max_completion_length=16),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        rollout_func=tool_rollout(tok), pipeline="gigpo", params={"gamma": 0.9, "omega": 1.0},
        steps=turns_with_states,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert math.isfinite(trainer.losses[0]) and params_changed(model, before)

    _, texts, ids, outcome = log.calls["digits"]
    G = 3
    records = []
    for i in range(len(ids)):
        obs = "=" + str(ids[i][0] % 2)
        records.append({"episode_id": f"e{i}", "group_id": f"g{i // G}", "outcome": outcome[i], "steps": [
            {"state": "start", "reward": 0.0},
            {"state": obs, "reward": 0.5 if obs == "=1" else 0.0},
        ]})
    oracle = gigpo_oracle(records, omega=1.0, gamma=0.9)
    T = trainer.loss_inputs[0]["advantages"].shape[1]
    expected = {}
    for i in range(len(ids)):
        a1, a2 = oracle.step_advantage[2 * i], oracle.step_advantage[2 * i + 1]
        per_token = []
        for t in range(len(ids[i])):  # 3 tokens of turn 1, 2 of the tool result, 3 of turn 2
            per_token.append(a1 if t < 3 else 0.0 if t < 5 else a2)
        expected.setdefault(tuple(ids[i]), []).append(padded(per_token, T))
    rows = loss_rows(trainer)
    assert len(rows) == len(ids)
    assert_rows_match(rows, expected, atol=1e-5)
    for _, adv, mask in rows:
        assert torch.all(adv[mask == 0] == 0)  # tool tokens and padding carry no advantage
    # the two turns of a completion get different advantages (per-token, not per-completion)
    assert any(abs(float(a[0]) - float(a[5])) > 1e-3 for _, a, _ in rows)


# ---------------------------------------------------------------------------------- (3) equals TRL's own GRPO
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_default_one_step_path_equals_trl_grpo(tmp_path, scale):
    """One step per completion with ``grpo`` (epsilon 1e-4, scale = TRL's scale_rewards) gives
    TRL's own advantages on the same completions (same seed, same initial model)."""
    runs = {}
    for name, cls, extra in [("trl", GRPOTrainer, {}),
                             ("stepcredit", sct.StepCreditGRPOTrainer,
                              {"pipeline": "grpo", "params": {"epsilon": 1e-4, "scale": scale}})]:
        log = RewardLog()
        trainer = recording(cls)(
            model=tiny_model(), reward_funcs=log.make("size", lambda c: len(c) % 4),
            args=grpo_config(tmp_path / name, scale_rewards=scale),
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tiny_tokenizer(), **extra,
        )
        trainer.train()
        runs[name] = (trainer, log.calls["size"])
    assert runs["trl"][1][2] == runs["stepcredit"][1][2], "the two runs generated different completions"
    trl_rows = {}
    for ids, adv, mask in loss_rows(runs["trl"][0]):
        assert adv.dim() == 0  # TRL's own advantages: one value per completion, [B]
        trl_rows.setdefault(ids, []).append(float(adv) * mask.double().numpy())
    assert_rows_match(loss_rows(runs["stepcredit"][0]), trl_rows, atol=1e-5)
    assert runs["stepcredit"][0].losses[0] == pytest.approx(runs["trl"][0].losses[0], abs=1e-5)


# ---------------------------------------------------------------------------------- (4) errors
def completion(mask, index=0):
    mask = np.asarray(mask)
    return sct.Completion(index=index, prompt="p", completion="c", completion_ids=np.arange(len(mask)) + 3,
                          loss_mask=mask, reward=1.0, inputs={})


def test_bad_pipeline_refused_before_trl_builds_anything(tmp_path):
    args = dict(model=tiny_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                args=grpo_config(tmp_path), train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
                processing_class=tiny_tokenizer())
    with pytest.raises(sct.TRLIntegrationError, match="unknown pipeline 'gipgo'.*gigpo"):
        sct.StepCreditGRPOTrainer(**args, pipeline="gipgo")
    with pytest.raises(EstimatorError, match="gigpo' has no parameter 'omgea'"):
        sct.StepCreditGRPOTrainer(**args, pipeline="gigpo", params={"omgea": 0.5})
    with pytest.raises(PipelineError, match="missing.toml"):
        sct.StepCreditGRPOTrainer(**args, pipeline=str(tmp_path / "missing.toml"))
    with pytest.raises(sct.TRLIntegrationError, match="steps must be a function"):
        sct.StepCreditGRPOTrainer(**args, steps=[sct.Step(0, 1)])


def test_pipeline_given_as_object_name_or_file(tmp_path):
    pipe = sc.Pipeline.build("gigpo", params={"omega": 0.5})
    pipe.save(tmp_path / "pipe.toml")
    for given in (pipe, str(tmp_path / "pipe.toml"), tmp_path / "pipe.toml"):
        assert sct.resolve_pipeline(given).to_dict() == pipe.to_dict()
    assert sct.resolve_pipeline("gigpo", {"omega": 0.5}).to_dict() == pipe.to_dict()
    with pytest.raises(sct.TRLIntegrationError, match="must be a Pipeline"):
        sct.resolve_pipeline(3)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([], "non-empty list"),
        ([sct.Step(0, 3), sct.Step(4, 9)], r"span \[4, 9\) is not inside the completion's 8 tokens"),
        ([sct.Step(0, 4), sct.Step(3, 8)], "starts before step 0 ends"),
        ([sct.Step(0, 3), sct.Step(6, 8)], r"token 5 is trained \(loss mask 1\) but in no step span"),
        ([sct.Step(0, 3, state="a"), sct.Step(5, 8)], "step 1: no state"),
        ([sct.Step(0, 3, fields={"tokens": 1}), sct.Step(5, 8, fields={"tokens": 1})], "may not set 'tokens'"),
        ([{"start": 0, "stop": 8}], "unexpected keyword argument 'stop'"),
    ],
    ids=["empty", "outside", "overlap", "uncovered", "partial-state", "reserved", "bad-key"],
)
def test_check_steps_errors(steps, message):
    c = completion([1, 1, 1, 0, 0, 1, 1, 1], index=7)
    with pytest.raises(sct.TRLIntegrationError, match="completion 7"):
        sct.check_steps(c, steps)
    with pytest.raises(sct.TRLIntegrationError, match=message):
        sct.check_steps(c, steps)


def test_steps_not_covering_the_mask_stop_training(tmp_path):
    """A steps function that leaves trained tokens out fails at the first batch, naming the
    completion and the token."""
    trainer = sct.StepCreditGRPOTrainer(
        model=tiny_model(), reward_funcs=lambda completions, **kw: [1.0] * len(completions),
        args=grpo_config(tmp_path), train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tiny_tokenizer(), steps=lambda c: [sct.Step(0, 1)],
    )
    with pytest.raises(sct.TRLIntegrationError, match=r"completion 0: token 1 is trained \(loss mask 1\) but in no step"):
        trainer.train()


def test_pipeline_field_missing_from_steps(tmp_path):
    """gigpo needs a state per step: the default split gives none, and the pipeline says so."""
    trainer = sct.StepCreditGRPOTrainer(
        model=tiny_model(), reward_funcs=lambda completions, **kw: [1.0] * len(completions),
        args=grpo_config(tmp_path), train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tiny_tokenizer(), pipeline="gigpo",
    )
    with pytest.raises(sct.TRLIntegrationError, match="needs the step field 'state'.*steps function"):
        trainer.train()


# ---------------------------------------------------------------------------------- the batch adapter alone
def test_compute_advantages_loop_reference_and_process_slices():
    """Hand-made batch (2 groups of 3, spans with gaps, an unscorable completion): the [B, T]
    advantages equal a loop over rows and tokens; each process's slice equals the matching rows
    of the whole batch (TRL's process_slice)."""
    masks = np.array([
        [1, 1, 0, 0, 1, 1, 0, 0],   # two turns with a tool result between
        [1, 1, 1, 1, 1, 1, 1, 0],   # one turn (padding after)
        [1, 1, 0, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
    ])
    lengths = [6, 7, 4, 8, 6, 3]
    rewards = np.array([1.0, 0.0, 0.5, np.nan, 2.0, 1.0])  # row 3: no reward function scored it
    group = np.arange(6) // 3
    comps = [completion(masks[i, : lengths[i]], index=i) for i in range(6)]
    checked = [sct.check_steps(c, sct.steps_by_turn(c)) for c in comps]
    assert [len(c.start) for c in checked] == [2, 1, 2, 1, 2, 1]
    whole = sct.compute_advantages(rewards, group, checked, masks, pipeline="grpo")

    # loop reference: grpo over the scorable rows of each group, every trained token of row i gets A_i
    expected = np.zeros(masks.shape)
    for g in (0, 1):
        members = [i for i in range(6) if group[i] == g and not np.isnan(rewards[i])]
        r = [rewards[i] for i in members]
        mean = sum(r) / len(r)
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
        for i in members:
            for t in range(8):
                expected[i, t] = (rewards[i] - mean) / (std + 1e-6) * masks[i, t]
    np.testing.assert_allclose(whole.advantages, expected, rtol=1e-12, atol=1e-12)
    assert np.all(whole.advantages[3] == 0) and whole.episode_advantage[3] == 0
    assert whole.rollouts.n_episodes == 5 and whole.rollouts.n_steps == 8

    for lo, hi in [(0, 3), (3, 6)]:
        part = sct.compute_advantages(rewards, group, checked, masks[lo:hi], pipeline="grpo", local=slice(lo, hi))
        np.testing.assert_array_equal(part.advantages, whole.advantages[lo:hi])


def test_compute_advantages_step_level_differs_within_a_completion():
    """Per-step states and rewards (gigpo): the tokens of each span get that step's advantage,
    as the loop oracle gives it; masked tokens inside a span get 0."""
    masks = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1], [1, 1, 1, 0, 1]])
    spans = [[(0, 3), (3, 5)], [(0, 1), (1, 5)], [(0, 3), (3, 5)]]
    states = [["s", "x"], ["s", "y"], ["s", "x"]]
    step_r = [[0.0, 1.0], [0.0, 0.0], [0.5, 0.25]]
    rewards = np.array([1.0, 0.0, 0.5])
    checked = [
        sct.check_steps(completion(masks[i], index=i), [
            {"start": a, "end": b, "state": s, "reward": r} for (a, b), s, r in zip(spans[i], states[i], step_r[i])
        ]) for i in range(3)
    ]
    out = sct.compute_advantages(rewards, np.zeros(3, dtype=int), checked, masks, pipeline="gigpo",
                                 params={"gamma": 0.9})
    records = [{"episode_id": f"e{i}", "group_id": "g", "outcome": rewards[i], "steps": [
        {"state": states[i][j], "reward": step_r[i][j]} for j in range(2)]} for i in range(3)]
    oracle = gigpo_oracle(records, gamma=0.9)
    expected = np.zeros(masks.shape)
    for i in range(3):
        for j, (a, b) in enumerate(spans[i]):
            for t in range(a, b):
                expected[i, t] = oracle.step_advantage[2 * i + j] * masks[i, t]
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-9, atol=1e-12)
    assert not np.isclose(out.advantages[0, 0], out.advantages[0, 3])
    np.testing.assert_array_equal(out.rollouts.column("tokens"), [2, 2, 1, 2, 3, 1])  # trained tokens per span


# ---------------------------------------------------------------------------------- two processes
def two_process_child(out_dir: str) -> None:
    """Run under ``torch.distributed.run`` (2 CPU processes, gloo): one GRPO step whose only
    group (G = 6) spans both processes; each process writes what its reward function saw and
    the rows that reached its loss."""
    torch.set_num_threads(1)
    log = RewardLog()
    trainer = recording(sct.StepCreditGRPOTrainer)(
        model=tiny_model(), reward_funcs=log.make("chars", lambda c: len(set(c)) % 3),
        args=grpo_config(Path(out_dir), per_device_train_batch_size=3, num_generations=6),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tiny_tokenizer(), pipeline="grpo",
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    _, _, ids, rewards = log.calls["chars"]
    rows = [(list(k), a.tolist()) for k, a, _ in loss_rows(trainer)]
    out = {"processes": trainer.accelerator.num_processes, "ids": ids, "rewards": rewards, "rows": rows}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(out))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # both results written
    # exit at once: the interpreter's shutdown with gloo's threads alive sometimes aborted
    # ("terminate called without an active exception") or hung, after the work was done
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_gather_the_group_and_keep_their_slice(tmp_path):
    """TRL's distributed layout: the rewards and steps of both processes are gathered, the
    pipeline runs on the whole batch (one group across the two processes) and each process
    trains on its own rows with the advantages of the whole batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    # --standalone: a rendezvous on localhost at a port torchrun picks itself
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    ids = ranks[0]["ids"] + ranks[1]["ids"]  # the gathered batch: process 0's rows, then process 1's
    rewards = ranks[0]["rewards"] + ranks[1]["rewards"]
    records = [{"episode_id": f"e{i}", "group_id": "g0", "outcome": rewards[i], "steps": [{}]} for i in range(6)]
    credit = sc.Pipeline.build("grpo").run(sc.Rollouts.from_records(records)).credit
    assert np.ptp(credit.step_advantage) > 0  # the group's rewards differ: the check below is not 0 == 0
    for rank in ranks:
        T = len(rank["rows"][0][1])
        expected = {}
        for i in range(6):
            expected.setdefault(tuple(ids[i]), []).append(padded([credit.step_advantage[i]] * len(ids[i]), T))
        assert len(rank["rows"]) == 3
        assert_rows_match([(tuple(k), torch.tensor(a), None) for k, a in rank["rows"]], expected, atol=1e-6)


if __name__ == "__main__":  # the child processes of test_two_processes_...
    import faulthandler

    faulthandler.dump_traceback_later(90, exit=True)  # a hang fails with every thread's stack
    two_process_child(sys.argv[1])
