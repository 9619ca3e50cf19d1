"""Torch process reward models on a causal LM: a step PRM with a scalar head (``LMStepPRM``) and the implicit PRM (``ImplicitPRM``).

Needs the ``lm`` extra (``pip install 'stepcredit[lm]'``: torch and transformers); nothing
imports this module unless one of its classes is asked for (``import stepcredit.prm`` does not
import torch). Both classes follow the model interface of :class:`stepcredit.prm.FeaturePRM`:
``kind``, ``score_steps(ro) -> [S]``, ``fit``, ``config()``, ``tensors()``,
``from_saved(config, tensors, where)``, so :func:`stepcredit.prm.save_model`,
:func:`~stepcredit.prm.load_model` and ``stepcredit prm score|eval|search`` work with them.

Notation: step t of an episode has the state text s_t and the action text a_t (the ``state``
and ``action`` step fields); x(s) are the prompt's token ids, y(a) = (y_1, …, y_L) the action's
token ids ending with the end-of-sequence token; V is the vocabulary; σ(z) = 1/(1 + e^{−z}).

**Backbone.** By default (``base_model=None``) a tiny random-initialised ``transformers`` Qwen2
causal LM, built exactly as the LM policy builds its own (:mod:`stepcredit.policies.lm_policy`):
the character tokenizer :class:`~stepcredit.policies.lm_policy.CharTokenizer` (101 ids), width
H = ``hidden_size`` (64), ``n_layers`` (2) layers, 4 attention heads, 2 key-value heads, MLP
width 2H, 512 positions, tied embeddings, initialised by transformers (normal weights of std
``init_std``) under ``torch.random.fork_rng()`` after ``torch.manual_seed(seed)`` (the global
random state is left as it was; nothing is downloaded). ``init_std`` defaults to 0.1, not the
policy's 0.02 (transformers' default, which ``init_std=0.02`` reproduces weight for weight): at
0.02 the tiny model's attention starts almost uniform and training sits on a long plateau (on
the lock_chain labels of the tests, 400 Adam steps at lr 1e-3 separated the labels for 1 of 5
seeds at 0.02 against 5 of 5 at 0.1). Or ``base_model=PATH``: a causal LM directory the user has
locally, read with ``AutoModelForCausalLM.from_pretrained(PATH, local_files_only=True)`` and
``AutoTokenizer.from_pretrained(PATH, local_files_only=True)``. Everything runs in float32 on the
CPU; the models stay in eval mode (no dropout), so training is deterministic for a seed.

**Input of a step** (as the LM policy formats it): x(s) = ``<bos>`` + the tokens of s + ``<sep>``,
cut from the left (the state's first tokens dropped, ``<bos>`` kept) to ``max_prompt_tokens``;
y(a) = the tokens of a + ``<eos>`` (more than ``max_action_tokens`` is an error). With a
``base_model`` tokenizer: its bos token if it has one, its sep token or else the tokens of
``"\\n"``, and its eos token (required). A (state, action) pair met in several steps is run once.

**LMStepPRM** (kind ``"torch"``): the logit of step t is a scalar head on the last hidden state
of the step's final token (``<eos>``),

    z_t = wᵀ h_L(x(s_t) ⊕ y(a_t)) + b,    score p_t = σ(z_t) ∈ (0, 1),

trained with one of three objectives (all from :mod:`stepcredit.prm.losses`) on step labels y_t:

* ``"classification"``: ``classification_loss(z, y)``, the per-step binary cross-entropy
  −[y log σ(z) + (1 − y) log(1 − σ(z))] (labels 0/1, or soft in [0, 1]);
* ``"regression"``: ``regression_loss(σ(z), y)``, the squared error (σ(z_t) − y_t)² of the
  *probability* (not the logit) against soft Monte-Carlo labels in [0, 1];
* ``"bt"``: ``bradley_terry_loss(z_c, z_r)`` = −log σ(z_c − z_r) over the pairs of
  :func:`bt_pairs`: two steps of one group with the same state, different actions and different
  labels, the higher label chosen. Only score differences are trained, so σ(z) is not a
  calibrated probability under ``"bt"`` (a 0.5 threshold is arbitrary; rank instead).

**ImplicitPRM** (kind ``"implicit"``): a causal LM π_φ (trained) and a frozen reference π_ref,
both the same tiny Qwen2 from the same seed (or ``base_model`` loaded once and copied), so
π_φ = π_ref at initialisation. The reward of step t is

    r_t = β Σ_{k=1..L} [log π_φ(y_k | x(s_t), y_<k) − log π_ref(y_k | x(s_t), y_<k)],

the tokens of its action given its prompt, with the model's unconstrained next-token softmax
over the whole vocabulary (the LM policy decodes constrained to the valid actions, but rollout
files do not hold the valid-action lists, and the paper's log-likelihood ratio is that of the
plain LM). The episode reward is r(y) = Σ_t r_t = β log(π_φ(y)/π_ref(y)) (the steps' tokens
taken as one response), trained on outcome labels l_e = 1[outcome_e ≥ ``outcome_threshold``]
only, with the cross-entropy ``implicit_prm_ce_loss``:

    ℓ_e = −[l_e log σ(r(y_e)) + (1 − l_e) log(1 − σ(r(y_e)))].

The implicit Q-value at the end of step t is q_t = Σ_{i ≤ t} r_i (``q_values``), and
``score_steps`` returns σ(q_t) (``score="accumulative"``, the paper's accumulative reading: with
the 0.5 threshold of ``stepcredit prm eval``, "is the solution still likely to be correct after
this step") or σ(r_t) (``score="single"``). At initialisation every r_t is 0 exactly and every
score 0.5. :meth:`ImplicitPRM.step_rewards` gives r_t (through
:func:`stepcredit.prm.losses.implicit_step_rewards`), :meth:`ImplicitPRM.episode_rewards` r(y).

**Training** (``fit``): Adam (torch's, β₁ 0.9, β₂ 0.999) with step size ``lr`` on mini-batches of
``batch_size`` items (steps, or pairs under ``"bt"``; episodes for the implicit PRM), shuffled
each epoch by a NumPy generator seeded with ``seed``; torch's random state is forked and seeded
with it too, so a fit is deterministic for a seed. ``history`` holds the mean training loss of
each epoch (over its mini-batches, as they were computed). The implicit PRM computes the
reference log-probabilities once per fit (no gradient).

**Saving**: ``config()`` holds everything needed to rebuild (kind, objective or β, sizes, seed,
``base_model`` path or ``"tiny"``, token limits) plus the training settings and history;
``tensors()`` holds the full state dicts (``backbone.*`` + ``head.*``; ``policy.*`` + ``ref.*``).
Loading a ``base_model`` model reads the architecture and tokenizer from PATH again (which must
still exist) and the weights from the saved file, so scores round-trip exactly.

Reference: Free Process Rewards without Process Labels (Yuan, Li et al., 2024,
arXiv:2412.01981), for the implicit PRM; Math-Shepherd: Verify and Reinforce LLMs Step-by-step
without Human Annotations (Wang, Li et al., 2024, arXiv:2312.08935), for per-step classification
on Monte-Carlo labels; HelpSteer2-Preference (Wang, Dong et al., 2024, arXiv:2410.01257), for
Bradley-Terry vs regression reward-model losses. The LM step PRM's architecture (a scalar head on
the last token) and the pair construction of ``"bt"`` are ours.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data import Rollouts
from stepcredit.ops import dense_codes, first_occurrence
from stepcredit.prm.feature_model import PRMError, checked_labels
from stepcredit.prm.models import register_model_kind

try:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from stepcredit.policies.lm_policy import CharTokenizer
    from stepcredit.prm.losses import (
        bradley_terry_loss,
        classification_loss,
        implicit_prm_ce_loss,
        implicit_step_rewards,
        regression_loss,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("stepcredit.prm.torch_models needs torch and transformers: pip install 'stepcredit[lm]'") from exc

__all__ = ["ImplicitPRM", "LMStepPRM", "bt_pairs"]

OBJECTIVES = ("classification", "regression", "bt")
SCORES = ("accumulative", "single")
TINY = "tiny"
_TINY_POSITIONS = 512
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------- text -> tokens
class _CharText:
    """The LM policy's character tokenizer, vectorised over many texts."""

    kind = "char"

    def __init__(self) -> None:
        tok = CharTokenizer()
        self.vocab_size = tok.vocab_size
        self.pad_id = tok.pad_id
        self.prefix = np.array([tok.bos_id], dtype=np.int64)
        self.suffix = np.array([tok.sep_id], dtype=np.int64)
        self.end = np.array([tok.eos_id], dtype=np.int64)
        self.unk_id = tok.unk_id
        self._lut = np.full(128, tok.unk_id, dtype=np.int64)
        for ch in tok.chars:
            self._lut[ord(ch)] = tok.encode(ch)[0]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat [N] int64 ids, [n] int64 lengths): one id per character, ``<unk>`` outside the alphabet."""
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        cp = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        return np.where(cp < 128, self._lut[np.minimum(cp, 127)], self.unk_id), lengths


class _HFText:
    """A ``transformers`` tokenizer: texts tokenised without special tokens, in one batched call."""

    kind = "hf"

    def __init__(self, tokenizer: Any, where: str) -> None:
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise PRMError(f"{where}: the tokenizer has no eos token, which ends every action")
        bos, sep = tokenizer.bos_token_id, tokenizer.sep_token_id
        self.vocab_size = len(tokenizer)
        self.prefix = np.array([] if bos is None else [bos], dtype=np.int64)
        self.suffix = np.array([sep], dtype=np.int64) if sep is not None else self.encode(["\n"])[0]
        self.end = np.array([eos], dtype=np.int64)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((i for row in ids for i in row), dtype=np.int64, count=int(lengths.sum()))
        return flat, lengths


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(starts[i], starts[i] + lengths[i]) over i (int64)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total, dtype=np.int64)


def _codes(arr: pa.Array) -> tuple[np.ndarray, list[str]]:
    """[S] dense codes of a key column (by first appearance, exact on the values) and the distinct texts."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = pc.dictionary_encode(arr)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), [str(v) for v in enc.dictionary.to_pylist()]


@dataclass(frozen=True)
class _Pairs:
    """The distinct (state, action) pairs of a batch of steps as prompt + action token sequences.

    Attributes:
        step_pair: [S] int64 the pair of each step (dense, by first appearance).
        tokens: [N] int64 the U sequences x(s) ⊕ y(a), concatenated.
        offsets: [U+1] int64 sequence u is ``tokens[offsets[u]:offsets[u+1]]``.
        prompt_len: [U] int64 P_u = |x(s)|.
        action_len: [U] int64 L_u = |y(a)| (the end token included).
    """

    step_pair: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray
    prompt_len: np.ndarray
    action_len: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.prompt_len.shape[0])

    @property
    def token_offsets(self) -> np.ndarray:
        """[U+1] CSR offsets of the pairs' action tokens (in pair order)."""
        out = np.zeros(self.n_pairs + 1, dtype=np.int64)
        np.cumsum(self.action_len, out=out[1:])
        return out


# ---------------------------------------------------------------------- the backbone
def _tiny_qwen2(hidden_size: int, n_layers: int, seed: int, init_std: float) -> Any:
    """The LM policy's tiny Qwen2 (random, seeded inside a forked random state), float32, eval mode.

    ``init_std`` is transformers' ``initializer_range`` (the policy keeps the default 0.02).
    """
    tok = CharTokenizer()
    cfg = Qwen2Config(
        vocab_size=tok.vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=_TINY_POSITIONS, tie_word_embeddings=True, initializer_range=init_std,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    return model.float().eval()


def _local_dir(path: str, where: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise PRMError(f"{where}: base_model {str(path)!r} is not a local model directory")
    return d


def _load_base(path: str, where: str, *, weights: bool) -> tuple[Any, Any]:
    """(causal LM in float32 eval mode, tokenizer) of a local directory; ``weights=False`` builds the architecture only."""
    d = _local_dir(path, where)
    try:
        with torch.random.fork_rng(devices=[]):  # initialising (from_config) must not move the global random state
            if weights:
                model = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True, dtype=torch.float32)
            else:
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(d), local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise PRMError(f"{where}: cannot load base_model {str(path)!r} ({exc})") from None
    cfg = model.config
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(cfg, attr, None) not in (None, 1.0):
            raise PRMError(f"{where}: base_model {str(path)!r} transforms its logits ({attr}); only plain lm_head logits are supported")
    return model.float().eval(), tokenizer


def _hidden_size(model: Any) -> int:
    return int(model.get_input_embeddings().embedding_dim)


def _max_positions(model: Any) -> int | None:
    n = getattr(model.config, "max_position_embeddings", None)
    return int(n) if n else None


def _freeze(model: Any) -> Any:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_state(module: Any, tensors: Mapping[str, np.ndarray], prefix: str, where: str) -> None:
    """Copy the saved ``prefix.NAME`` arrays into ``module`` (every name, every shape checked)."""
    mine = module.state_dict()
    saved = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing = sorted(set(mine) - set(saved))
    extra = sorted(set(saved) - set(mine))
    if missing or extra:
        raise PRMError(f"{where}: saved weights do not fit the model: missing {[f'{prefix}.{k}' for k in missing[:3]]}, "
                       f"unexpected {[f'{prefix}.{k}' for k in extra[:3]]}")
    for k, v in saved.items():
        if tuple(v.shape) != tuple(mine[k].shape):
            raise PRMError(f"{where}: weights '{prefix}.{k}' of shape {tuple(v.shape)}, expected {tuple(mine[k].shape)}")
    module.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in saved.items()}, strict=True)


def _state_arrays(module: Any, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().float().numpy().copy() for k, v in module.state_dict().items()}


def _check_fit_args(name: str, epochs: int, batch_size: int, lr: float) -> None:
    if int(epochs) != epochs or epochs < 1:
        raise PRMError(f"{name}.fit: epochs={epochs!r} must be an integer >= 1")
    if int(batch_size) != batch_size or batch_size < 1:
        raise PRMError(f"{name}.fit: batch_size={batch_size!r} must be an integer >= 1")
    if not (math.isfinite(lr) and lr > 0):
        raise PRMError(f"{name}.fit: lr={lr!r} must be a finite number > 0")


def _require(ro: Rollouts, fields: Sequence[str], name: str) -> None:
    for f in fields:
        if not ro.has(f):
            have = ", ".join(ro.step_fields) or "none"
            raise PRMError(f"{name}: the rollouts have no step field '{f}' (step fields present: {have})")


class _LMBackbone:
    """What both models share: the backbone, the tokenizer, the step encoding and the forward passes."""

    name = "torch PRM"

    def _init_backbone(self, base_model: str | None, hidden_size: int, n_layers: int, seed: int, init_std: float,
                       max_prompt_tokens: int, max_action_tokens: int, score_batch_size: int, *, weights: bool = True) -> None:
        n = self.name
        if not (isinstance(init_std, (int, float)) and math.isfinite(init_std) and init_std > 0):
            raise PRMError(f"{n}: init_std={init_std!r} must be a finite number > 0")
        self.init_std = float(init_std)
        if base_model in (None, TINY):
            if hidden_size < 8 or hidden_size % 8 or n_layers < 1:
                raise PRMError(f"{n}: hidden_size={hidden_size} must be a positive multiple of 8 and n_layers={n_layers} >= 1")
            self.base_model = None
            self.model = _tiny_qwen2(int(hidden_size), int(n_layers), int(seed), self.init_std)
            self.text: _CharText | _HFText = _CharText()
        else:
            self.base_model = str(base_model)
            self.model, tokenizer = _load_base(self.base_model, n, weights=weights)
            self.text = _HFText(tokenizer, n)
        self.hidden_size = _hidden_size(self.model)
        self.n_layers = int(getattr(self.model.config, "num_hidden_layers", n_layers))
        self.seed = int(seed)
        self.max_prompt_tokens, self.max_action_tokens = int(max_prompt_tokens), int(max_action_tokens)
        self.score_batch_size = int(score_batch_size)
        positions = _max_positions(self.model)
        body = self.max_prompt_tokens - self.text.prefix.size - self.text.suffix.size
        if body < 1 or self.max_action_tokens < self.text.end.size + 1 or (
                positions is not None and self.max_prompt_tokens + self.max_action_tokens > positions):
            raise PRMError(f"{n}: max_prompt_tokens={self.max_prompt_tokens} must leave room for the state (> "
                           f"{self.text.prefix.size + self.text.suffix.size}), max_action_tokens={self.max_action_tokens} "
                           f"must be >= {self.text.end.size + 1}, and their sum at most the model's {positions} positions")
        if self.score_batch_size < 1:
            raise PRMError(f"{n}: score_batch_size={score_batch_size} must be >= 1")

    def _backbone_config(self) -> dict[str, Any]:
        return {"base_model": TINY if self.base_model is None else self.base_model, "hidden_size": self.hidden_size,
                "n_layers": self.n_layers, "seed": self.seed, "init_std": self.init_std, "max_prompt_tokens": self.max_prompt_tokens,
                "max_action_tokens": self.max_action_tokens, "score_batch_size": self.score_batch_size}

    # ------------------------------------------------------------------ encoding
    def _pairs(self, ro: Rollouts) -> _Pairs:
        """The distinct (state, action) pairs of ``ro`` as token sequences (see the module docstring)."""
        _require(ro, ("state", "action"), self.name)
        sc, states = _codes(ro.key_values["state"])
        ac, actions = _codes(ro.key_values["action"])
        step_pair, U = dense_codes(sc * max(len(actions), 1) + ac)
        first = np.flatnonzero(first_occurrence(step_pair))  # the first step of pair 0, 1, .., U-1
        ps, pa_ = sc[first], ac[first]
        t = self.text
        s_flat, s_len = t.encode(states)
        a_flat, a_len = t.encode(actions)
        L = a_len[pa_] + t.end.size
        too_long = np.flatnonzero(L > self.max_action_tokens)
        if too_long.size:
            u = int(too_long[0])
            raise PRMError(f"{self.name}: step {int(first[u])} has an action of {int(L[u])} tokens with the end token, more "
                           f"than max_action_tokens={self.max_action_tokens}: {actions[pa_[u]][:60]!r}")
        body = self.max_prompt_tokens - t.prefix.size - t.suffix.size
        s_off = np.cumsum(s_len) - s_len
        a_off = np.cumsum(a_len) - a_len
        keep = np.minimum(s_len[ps], body)
        # token pool: prefix | suffix | end | state tokens | action tokens; each sequence is 5 ranges of it
        base_s = t.prefix.size + t.suffix.size + t.end.size
        pool = np.concatenate([t.prefix, t.suffix, t.end, s_flat, a_flat])
        starts = np.stack([np.zeros(U, dtype=np.int64), base_s + s_off[ps] + s_len[ps] - keep,
                           np.full(U, t.prefix.size), base_s + s_flat.size + a_off[pa_],
                           np.full(U, t.prefix.size + t.suffix.size)], axis=1)
        lens = np.stack([np.full(U, t.prefix.size), keep, np.full(U, t.suffix.size), a_len[pa_], np.full(U, t.end.size)], axis=1)
        tokens = pool[_ranges(starts.reshape(-1), lens.reshape(-1))]
        offsets = np.zeros(U + 1, dtype=np.int64)
        np.cumsum(lens.sum(axis=1), out=offsets[1:])
        return _Pairs(step_pair, tokens, offsets, t.prefix.size + keep + t.suffix.size, L.astype(np.int64))

    def _padded(self, p: _Pairs, rows: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray]:
        """([B, T] input ids, [B, T] attention mask, [B] P, [B] L) of pairs ``rows``, right-padded."""
        start = p.offsets[rows]
        n = p.offsets[rows + 1] - start
        T = int(n.max())
        cols = np.arange(T, dtype=np.int64)
        valid = cols[None, :] < n[:, None]
        idx = np.minimum(start[:, None] + cols[None, :], p.tokens.size - 1)
        ids = np.where(valid, p.tokens[idx], self.text.pad_id)
        return torch.from_numpy(ids), torch.from_numpy(valid.astype(np.int64)), p.prompt_len[rows], p.action_len[rows]

    def _chunks(self, p: _Pairs) -> list[np.ndarray]:
        """The pairs in scoring batches of ``score_batch_size`` rows, by length (a deterministic order)."""
        order = np.argsort(np.diff(p.offsets), kind="stable")
        return [order[i:i + self.score_batch_size] for i in range(0, order.size, self.score_batch_size)]

    # ------------------------------------------------------------------ forward passes
    @staticmethod
    def _hidden(model: Any, ids: Any, mask: Any) -> Any:
        """[B, T, H] the last hidden states (after the final norm)."""
        return model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    def _token_log_probs(self, model: Any, p: _Pairs, rows: np.ndarray) -> Any:
        """[K] float32 log π(y_k | x, y_<k) of the action tokens of pairs ``rows`` (row by row, in order).

        The logits are ``model.get_output_embeddings()`` of the hidden state before each action
        token: what ``model(...).logits`` holds there (checked in the tests against single
        unpadded forward passes), without computing the logits of the prompt positions.
        """
        ids, mask, P, L = self._padded(p, rows)
        h = self._hidden(model, ids, mask)
        row = np.repeat(np.arange(rows.size), L)
        k = np.arange(row.size) - np.repeat(np.cumsum(L) - L, L)
        pos = torch.from_numpy(P[row] + k)
        row_t = torch.from_numpy(row)
        logits = model.get_output_embeddings()(h[row_t, pos - 1]).float()
        target = ids[row_t, pos]
        return torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]


# ---------------------------------------------------------------------- Bradley-Terry pairs
def bt_pairs(ro: Rollouts, labels: np.ndarray | None = None, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step pairs for the Bradley-Terry objective: same group, same state, different actions and labels.

    P = {(i, j) : g(i) = g(j), s_i = s_j, a_i ≠ a_j, y_i > y_j, m_i = m_j = 1}, i the chosen
    (higher-labelled) step and j the rejected one, g the episode group and s, a the state and
    action texts (compared exactly). Two steps of one state are the natural comparison a
    step-level preference makes (the same decision, two choices); steps of the same state and
    action are never paired, even when their Monte-Carlo labels differ (the model cannot tell
    them apart). Memory grows as Σ n_b², n_b the steps of one (group, state).

    Args:
        ro: rollouts with ``state`` and ``action`` steps.
        labels: [S] finite step labels; default the ``label`` column.
        mask: [S] bool, the steps that may be paired (default all).

    Returns:
        (chosen [P] int64, rejected [P] int64) step indices, sorted by (chosen, rejected).

    Reference: Bradley-Terry reward-model training as compared in HelpSteer2-Preference (Wang,
    Dong et al., 2024, arXiv:2410.01257); the step-level pair construction is ours.
    """
    fn = "bt_pairs"
    _require(ro, ("state", "action") + (() if labels is not None else ("label",)), fn)
    y, m = checked_labels(fn, ro.column("label") if labels is None else labels, mask, ro.n_steps)
    sc, _ = _codes(ro.key_values["state"])
    ac, _ = _codes(ro.key_values["action"])
    block, _ = dense_codes(ro.episode_group[ro.step_episode] * (int(sc.max(initial=0)) + 1) + sc)
    idx = np.flatnonzero(m)
    idx = idx[np.argsort(block[idx], kind="stable")]
    b = block[idx]
    _, first, inverse, counts = np.unique(b, return_index=True, return_inverse=True, return_counts=True)
    n = counts[inverse]  # members of each step's block
    i = np.repeat(np.arange(idx.size), n)
    j = first[inverse][i] + np.arange(i.size) - np.repeat(np.cumsum(n) - n, n)
    ci, ri = idx[i], idx[j]
    keep = (y[ci] > y[ri]) & (ac[ci] != ac[ri])
    ci, ri = ci[keep], ri[keep]
    order = np.lexsort((ri, ci))
    return ci[order].astype(np.int64), ri[order].astype(np.int64)


# ---------------------------------------------------------------------- shared training loop
def _train(n_items: int, *, epochs: int, batch_size: int, lr: float, seed: int, params: list[Any],
           loss_fn: Callable[[np.ndarray], Any], progress: Progress | None) -> list[float]:
    """Adam over ``epochs`` shuffled passes of mini-batches; the mean loss of each epoch."""
    rng = np.random.default_rng(seed)
    n_batches = -(-n_items // batch_size)
    total = epochs * n_batches
    history: list[float] = []
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(params, lr=lr)
        for epoch in range(epochs):
            perm = rng.permutation(n_items)
            acc = 0.0
            for b in range(n_batches):
                items = perm[b * batch_size:(b + 1) * batch_size]
                loss = loss_fn(items)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                acc += float(loss.detach()) * items.size
                if progress is not None:
                    progress(epoch * n_batches + b + 1, total)
            history.append(acc / n_items)
    return history


# ---------------------------------------------------------------------- the LM step PRM
class LMStepPRM(_LMBackbone):
    """A causal-LM backbone with a scalar head on the step's last token (see the module docstring).

    Args:
        objective: ``"classification"``, ``"regression"`` or ``"bt"``.
        base_model: None (or ``"tiny"``) for the tiny random Qwen2, or a local causal-LM directory.
        hidden_size: H of the tiny model (a multiple of 8; ignored with ``base_model``).
        n_layers: layers of the tiny model (ignored with ``base_model``).
        seed: seeds the tiny model's and the head's initial weights, and the default of ``fit``.
        init_std: std of the tiny model's initial weights (0.1; the LM policy's is 0.02).
        max_prompt_tokens: the prompt is cut from the left to this many tokens.
        max_action_tokens: the longest action, end token included (longer is an error).
        score_batch_size: pairs per forward pass when scoring.
    """

    kind = "torch"
    name = "LMStepPRM"

    def __init__(self, objective: Literal["classification", "regression", "bt"] = "classification", *,
                 base_model: str | None = None, hidden_size: int = 64, n_layers: int = 2, seed: int = 0,
                 init_std: float = 0.1, max_prompt_tokens: int = 384, max_action_tokens: int = 128, score_batch_size: int = 64,
                 _weights: bool = True) -> None:
        if objective not in OBJECTIVES:
            raise PRMError(f"LMStepPRM: objective={objective!r} must be one of {', '.join(OBJECTIVES)}")
        self.objective = objective
        self._init_backbone(base_model, hidden_size, n_layers, seed, init_std, max_prompt_tokens, max_action_tokens,
                            score_batch_size, weights=_weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.head = torch.nn.Linear(self.hidden_size, 1).float()
        self.history: list[float] = []
        self.trained: dict[str, Any] = {}

    def _logits(self, p: _Pairs, rows: np.ndarray) -> Any:
        """[B] float32 z of pairs ``rows`` (with the graph when grad is enabled)."""
        ids, mask, P, L = self._padded(p, rows)
        h = self._hidden(self.model, ids, mask)
        last = torch.from_numpy(P + L - 1)
        return self.head(h[torch.arange(rows.size), last])[:, 0]

    def step_logits(self, ro: Rollouts) -> np.ndarray:
        """[S] float64 z_t, the head's logit of every step."""
        p = self._pairs(ro)
        z = np.zeros(p.n_pairs)
        with torch.no_grad():
            for rows in self._chunks(p):
                z[rows] = self._logits(p, rows).double().numpy()
        return z[p.step_pair]

    def score_steps(self, ro: Rollouts) -> np.ndarray:
        """[S] float64 σ(z_t) ∈ (0, 1) of every step of ``ro``."""
        return np.exp(-np.logaddexp(0.0, -self.step_logits(ro)))

    def fit(self, ro: Rollouts, labels: np.ndarray | None = None, mask: np.ndarray | None = None, *,
            epochs: int = 3, batch_size: int = 32, lr: float = 1e-3, seed: int | None = None,
            progress: Progress | None = None) -> LMStepPRM:
        """Train the backbone and the head on step labels.

        Args:
            ro: rollouts with ``state`` and ``action`` steps.
            labels: [S] step labels (in [0, 1] for ``"classification"`` and ``"regression"``,
                any finite number for ``"bt"``); default the ``label`` column.
            mask: [S] bool, the steps to train on (default all).
            epochs: passes over the steps (or pairs).
            batch_size: steps (pairs under ``"bt"``) per Adam step.
            lr: Adam's step size.
            seed: shuffling and torch seed (default the model's ``seed``).
            progress: called as ``progress(done, total)`` after every mini-batch.

        Returns:
            self, with ``history`` (the mean loss of each epoch).
        """
        n = self.name
        _check_fit_args(n, epochs, batch_size, lr)
        _require(ro, ("state", "action") + (() if labels is not None else ("label",)), n)
        y, used = checked_labels(n, ro.column("label") if labels is None else labels, mask, ro.n_steps)
        if self.objective != "bt":
            bad = np.flatnonzero(used & ((y < 0) | (y > 1)))
            if bad.size:
                raise PRMError(f"{n}: label of step {int(bad[0])} is {y[bad[0]]}; the {self.objective} objective needs labels in [0, 1]")
        seed = self.seed if seed is None else int(seed)
        p = self._pairs(ro)
        params = [*self.model.parameters(), *self.head.parameters()]
        if self.objective == "bt":
            chosen, rejected = bt_pairs(ro, y, used)
            if not chosen.size:
                raise PRMError(f"{n}: no Bradley-Terry pair (two steps of one group with the same state, different "
                               "actions and different labels) to train on")

            def loss_fn(items: np.ndarray) -> Any:
                k = items.size
                rows, inv = np.unique(p.step_pair[np.concatenate([chosen[items], rejected[items]])], return_inverse=True)
                z = self._logits(p, rows)[torch.from_numpy(inv)]
                return bradley_terry_loss(z[:k], z[k:])

            n_items = chosen.size
        else:
            steps = np.flatnonzero(used)
            if not steps.size:
                raise PRMError(f"{n}: no step to train on (an all-false mask)")
            y32 = torch.from_numpy(y.astype(np.float32))

            def loss_fn(items: np.ndarray) -> Any:
                s = steps[items]
                rows, inv = np.unique(p.step_pair[s], return_inverse=True)
                z = self._logits(p, rows)[torch.from_numpy(inv)]
                if self.objective == "classification":
                    return classification_loss(z, y32[s])
                return regression_loss(torch.sigmoid(z), y32[s])

            n_items = steps.size
        self.history = _train(n_items, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=seed,
                              params=params, loss_fn=loss_fn, progress=progress)
        self.trained = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "seed": seed,
                        "items": int(n_items)}
        return self

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        """The JSON config: kind, objective, backbone, sizes, seed, token limits, training settings and history."""
        return {"kind": self.kind, "objective": self.objective, **self._backbone_config(),
                "trained": dict(self.trained), "history": list(self.history)}

    def tensors(self) -> dict[str, np.ndarray]:
        """The backbone's (``backbone.*``) and the head's (``head.*``) state dicts as float32 arrays."""
        return {**_state_arrays(self.model, "backbone"), **_state_arrays(self.head, "head")}

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str) -> LMStepPRM:
        """Rebuild a model written by :func:`stepcredit.prm.save_model` (the same scores, exactly)."""
        kw = _saved_backbone(config, where, ("objective",))
        try:
            model = cls(config["objective"], **kw, _weights=False)
        except (TypeError, ValueError) as exc:
            raise PRMError(f"{where}: {exc}") from None
        _load_state(model.model, tensors, "backbone", where)
        _load_state(model.head, tensors, "head", where)
        model.history = [float(v) for v in config.get("history", [])]
        model.trained = dict(config.get("trained", {}))
        return model


def _saved_backbone(config: Mapping[str, Any], where: str, extra: Sequence[str]) -> dict[str, Any]:
    keys = ("base_model", "hidden_size", "n_layers", "seed", "init_std", "max_prompt_tokens", "max_action_tokens", "score_batch_size")
    missing = sorted(set(keys + tuple(extra)) - set(config))
    if missing:
        raise PRMError(f"{where}: config.json lacks {', '.join(missing)}")
    return {k: config[k] for k in keys}


# ---------------------------------------------------------------------- the implicit PRM
class ImplicitPRM(_LMBackbone):
    """The implicit PRM: β-scaled log-likelihood ratios of a trained LM and its frozen copy (module docstring).

    Args:
        beta: β > 0 (paper default 0.05).
        score: ``"accumulative"`` (σ(q_t), default) or ``"single"`` (σ(r_t)).
        outcome_threshold: an episode is a success (label 1) when its outcome is >= this.
        base_model, hidden_size, n_layers, seed, init_std, max_prompt_tokens, max_action_tokens,
            score_batch_size: as for :class:`LMStepPRM` (π_φ and π_ref start as the same model).
    """

    kind = "implicit"
    name = "ImplicitPRM"

    def __init__(self, *, beta: float = 0.05, score: Literal["accumulative", "single"] = "accumulative",
                 outcome_threshold: float = 1.0, base_model: str | None = None, hidden_size: int = 64,
                 n_layers: int = 2, seed: int = 0, init_std: float = 0.1, max_prompt_tokens: int = 384, max_action_tokens: int = 128,
                 score_batch_size: int = 64, _weights: bool = True) -> None:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise PRMError(f"ImplicitPRM: beta={beta!r} must be a finite number > 0")
        if score not in SCORES:
            raise PRMError(f"ImplicitPRM: score={score!r} must be one of {', '.join(SCORES)}")
        if not (isinstance(outcome_threshold, (int, float)) and math.isfinite(outcome_threshold)):
            raise PRMError(f"ImplicitPRM: outcome_threshold={outcome_threshold!r} must be a finite number")
        self.beta, self.score, self.outcome_threshold = float(beta), score, float(outcome_threshold)
        self._init_backbone(base_model, hidden_size, n_layers, seed, init_std, max_prompt_tokens, max_action_tokens,
                            score_batch_size, weights=_weights)
        self.ref_model = _freeze(copy.deepcopy(self.model)).eval()
        self.history: list[float] = []
        self.trained: dict[str, Any] = {}

    # ------------------------------------------------------------------ rewards
    def _pair_log_ratios(self, p: _Pairs) -> np.ndarray:
        """[K_u] float64 log π_φ − log π_ref of every pair's action tokens (both models on the same batches)."""
        out = np.zeros(int(p.action_len.sum()))
        off = p.token_offsets
        with torch.no_grad():
            for rows in self._chunks(p):
                lp = self._token_log_probs(self.model, p, rows).double().numpy()
                ref = self._token_log_probs(self.ref_model, p, rows).double().numpy()
                out[_ranges(off[rows], p.action_len[rows])] = lp - ref
        return out

    def token_log_ratios(self, ro: Rollouts) -> tuple[np.ndarray, np.ndarray]:
        """Per-token log-ratios of every step's action, in step order.

        Returns:
            ([K] float64 log π_φ(y_k|…) − log π_ref(y_k|…), [S+1] int64 ``step_token_offsets``:
            step t owns tokens offsets[t]:offsets[t+1]).
        """
        p = self._pairs(ro)
        pair_lr = self._pair_log_ratios(p)
        L = p.action_len[p.step_pair]
        offsets = np.zeros(ro.n_steps + 1, dtype=np.int64)
        np.cumsum(L, out=offsets[1:])
        return pair_lr[_ranges(p.token_offsets[p.step_pair], L)], offsets

    def step_rewards(self, ro: Rollouts) -> np.ndarray:
        """[S] float64 r_t = β Σ_{tokens of a_t} (log π_φ − log π_ref) (``implicit_step_rewards``)."""
        tok, off = self.token_log_ratios(ro)
        return implicit_step_rewards(torch.from_numpy(tok), off, beta=self.beta).numpy()

    def episode_rewards(self, ro: Rollouts) -> np.ndarray:
        """[E] float64 r(y_e) = β Σ over all the episode's action tokens of (log π_φ − log π_ref) = Σ_t r_t."""
        tok, off = self.token_log_ratios(ro)
        tok_episode = np.repeat(ro.step_episode, np.diff(off))
        return self.beta * np.bincount(tok_episode, weights=tok, minlength=ro.n_episodes)

    def q_values(self, ro: Rollouts) -> np.ndarray:
        """[S] float64 q_t = Σ_{i ≤ t} r_i, the implicit Q-value at the end of each step (summed in step order)."""
        r = self.step_rewards(ro)
        return _episode_cumsum(r, ro.episode_offsets)

    def score_steps(self, ro: Rollouts) -> np.ndarray:
        """[S] float64 σ(q_t) (``score="accumulative"``) or σ(r_t) (``"single"``)."""
        x = self.q_values(ro) if self.score == "accumulative" else self.step_rewards(ro)
        return np.exp(-np.logaddexp(0.0, -x))

    # ------------------------------------------------------------------ training
    def fit(self, ro: Rollouts, labels: np.ndarray | None = None, mask: np.ndarray | None = None, *,
            epochs: int = 3, batch_size: int = 32, lr: float = 1e-3, seed: int | None = None,
            progress: Progress | None = None) -> ImplicitPRM:
        """Train π_φ with the implicit-PRM cross-entropy on episode outcome labels.

        Args:
            ro: rollouts with ``state`` and ``action`` steps.
            labels: [E] episode labels l_e in [0, 1]; default 1[outcome >= ``outcome_threshold``].
            mask: [E] bool, the episodes to train on (default all).
            epochs: passes over the episodes.
            batch_size: episodes per Adam step.
            lr: Adam's step size.
            seed: shuffling and torch seed (default the model's ``seed``).
            progress: called as ``progress(done, total)`` after every mini-batch.

        Returns:
            self, with ``history`` (the mean loss of each epoch).
        """
        n = self.name
        _check_fit_args(n, epochs, batch_size, lr)
        E = ro.n_episodes
        y, used = checked_labels(
            n, (ro.outcome >= self.outcome_threshold) if labels is None else labels, mask, E, unit="episode"
        )
        bad = np.flatnonzero(used & ~((y >= 0) & (y <= 1)))
        if bad.size:
            raise PRMError(f"{n}: label of episode {int(bad[0])} is {y[bad[0]]}; outcome labels must lie in [0, 1]")
        episodes = np.flatnonzero(used)
        if not episodes.size:
            raise PRMError(f"{n}: no episode to train on (an all-false mask)")
        seed = self.seed if seed is None else int(seed)
        p = self._pairs(ro)
        tok_off = p.token_offsets
        ref = torch.zeros(int(tok_off[-1]), dtype=torch.float32)
        with torch.no_grad():
            for rows in self._chunks(p):
                ref[torch.from_numpy(_ranges(tok_off[rows], p.action_len[rows]))] = self._token_log_probs(self.ref_model, p, rows)
        off, counts = ro.episode_offsets, ro.step_counts
        y32 = torch.from_numpy(y.astype(np.float32))

        def loss_fn(items: np.ndarray) -> Any:
            eps = episodes[items]
            steps = _ranges(off[eps], counts[eps])
            rows, inv = np.unique(p.step_pair[steps], return_inverse=True)
            lr_tok = self._token_log_probs(self.model, p, rows) - ref[torch.from_numpy(_ranges(tok_off[rows], p.action_len[rows]))]
            tok_row = torch.from_numpy(np.repeat(np.arange(rows.size), p.action_len[rows]))
            pair_sum = torch.zeros(rows.size, dtype=lr_tok.dtype).index_add(0, tok_row, lr_tok)
            step_ep = torch.from_numpy(np.repeat(np.arange(eps.size), counts[eps]))
            ep_sum = torch.zeros(eps.size, dtype=lr_tok.dtype).index_add(0, step_ep, pair_sum[torch.from_numpy(inv)])
            return implicit_prm_ce_loss(ep_sum, y32[eps], beta=self.beta)

        self.history = _train(episodes.size, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=seed,
                              params=list(self.model.parameters()), loss_fn=loss_fn, progress=progress)
        self.trained = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "seed": seed,
                        "items": int(episodes.size)}
        return self

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        """The JSON config: kind, β, score, outcome threshold, backbone, sizes, seed, token limits, training."""
        return {"kind": self.kind, "beta": self.beta, "score": self.score, "outcome_threshold": self.outcome_threshold,
                **self._backbone_config(), "trained": dict(self.trained), "history": list(self.history)}

    def tensors(self) -> dict[str, np.ndarray]:
        """π_φ's (``policy.*``) and π_ref's (``ref.*``) state dicts as float32 arrays."""
        return {**_state_arrays(self.model, "policy"), **_state_arrays(self.ref_model, "ref")}

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str) -> ImplicitPRM:
        """Rebuild a model written by :func:`stepcredit.prm.save_model` (the same scores, exactly)."""
        kw = _saved_backbone(config, where, ("beta", "score", "outcome_threshold"))
        try:
            model = cls(beta=config["beta"], score=config["score"], outcome_threshold=config["outcome_threshold"],
                        **kw, _weights=False)
        except (TypeError, ValueError) as exc:
            raise PRMError(f"{where}: {exc}") from None
        _load_state(model.model, tensors, "policy", where)
        _load_state(model.ref_model, tensors, "ref", where)
        model.history = [float(v) for v in config.get("history", [])]
        model.trained = dict(config.get("trained", {}))
        return model


def _episode_cumsum(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[S] running sums within each episode, added in step order (a loop over the time axis only)."""
    out = np.array(x, dtype=np.float64)
    counts = np.diff(offsets)
    starts = offsets[:-1]
    for t in range(1, int(counts.max(initial=0))):
        idx = starts[counts > t] + t
        out[idx] += out[idx - 1]
    return out


register_model_kind(LMStepPRM.kind, LMStepPRM.from_saved)
register_model_kind(ImplicitPRM.kind, ImplicitPRM.from_saved)
