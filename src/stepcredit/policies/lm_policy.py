"""A tiny transformer language-model policy (``LMPolicy``) and its character tokenizer.

Needs the ``lm`` extra (``pip install 'stepcredit[lm]'``: torch and transformers); nothing else
in stepcredit imports this module unless ``policy="lm"`` is asked for. No weights are
downloaded: the model is a ``transformers`` Qwen2 causal LM built from a config with random
initialisation, and the tokenizer is built here.

Notation: s a state text (the environment's canonical key ``info["state"]``, as the other
policies read), A(s) its admissible actions, a ∈ A(s) an action text, x(s) the prompt's token
ids, y(a) = (y_1, …, y_L) the action's token ids ending with ``<eos>``, V the vocabulary, H the
width.

**Tokenizer** (:class:`CharTokenizer`): one token per character. Ids 0–4 are the special tokens
``<pad>``, ``<bos>``, ``<eos>``, ``<sep>``, ``<unk>``; then the 95 printable ASCII characters
(space to ``~``) and ``"\\n"``: 101 ids, the same in every process and version. Any other
character is ``<unk>``.

**Model**: ``Qwen2Config(vocab_size=101, hidden_size=H, intermediate_size=2H, 2 layers, 4
attention heads, 2 key-value heads, 512 positions, tied input/output embeddings)``, its bos/eos/
pad ids set to the tokenizer's, initialised by transformers (normal, std 0.02) under
``torch.random.fork_rng()`` after ``torch.manual_seed(seed)``, so the global random state is
left as it was. It runs in float32 by default (the MLP and GRU policies use float64;
``dtype="float64"`` is there for tests, with float32 RMSNorm statistics inside transformers'
Qwen2). π₀, the reference model, is a frozen copy of the initial model: ``ref_log_prob`` =
log π₀(a|s), and the KL penalty is to π₀.

**Prompt and action**: x(s) = ``<bos>`` + the characters of s + ``<sep>``, truncated from the
left (the state's first characters are dropped, ``<bos>`` kept) to at most
``max_prompt_tokens``; y(a) = the characters of a + ``<eos>``, at most ``max_action_tokens``
(a longer action is an error).

**Constrained decoding**: the policy generates y token by token, each next-token distribution
being the model's softmax restricted to the tokens that continue some admissible action. The
token sequences y(a), a ∈ A(s), form a trie; at node y_<k the admissible next tokens are
N(y_<k) = {y'_k : a' ∈ A(s), y'_<k = y_<k} (``<eos>`` where an action ends), and

    p̃_θ(v | s, y_<k) = exp z_v / Σ_{u ∈ N(y_<k)} exp z_u  for v ∈ N(y_<k), else 0,
    π_θ(a|s) = Π_k p̃_θ(y_k | s, y_<k),

z the model's logits at the position before y_k. Every path from the root ends at the
``<eos>`` leaf of exactly one action, so Σ_{a ∈ A(s)} π_θ(a|s) = 1 and nothing else (an
unparsable action) can be produced; "press 1" and "press 12" both work (after "press 1" the
admissible tokens are ``<eos>`` and "2"). A position with a single admissible token has
p̃ = 1 exactly (log-prob 0, no gradient).

**Acting**: π_θ(·|s) is computed exactly by teacher forcing: every admissible action of the
state is one row (x(s) + y(a) without its last token), all rows of the call's new states in one
batched pass, the logits at the action's positions masked by the trie. Each distinct prompt is
run once and its keys and values are repeated for its actions' rows (transformers' key-value
cache), so a state costs its prompt once plus its actions' tokens. The action is
then drawn by inverse CDF over the valid-action list with one uniform number per environment
(as ``MLPPolicy.act``). By the chain rule the probability of drawing a is Π_k p̃_θ(y_k|…), the
probability with which sampling token by token from p̃_θ produces y(a): the two are the same
distribution (they consume the generator differently: one number per environment here, one
per token there).

*Caching*: within one collection the parameters do not change, so each (state, valid list)'s
table of log π_θ and log π₀ over its actions is computed once and reused (lock_chain: a forward
pass per lock position per iteration). Both tables are cleared at the start of every collection
(:meth:`begin_collection`, which the collectors call) and when the parameters change: the
float32 results of a row depend in the last bits on what else is in its batch (the padding
length), so a table kept across iterations would make a resumed run (whose caches start empty)
differ from one that never stopped. The per-state trie masks (parameter-free) are kept (at
most 1,024 valid lists, then cleared).

**Token-level update**: :meth:`steps` gives an :class:`LMBatch` with, per stored step, its
prompt + action token ids padded to [S, T] (``input_ids``) and ``response_mask`` [S, T] (1 on
the action's tokens, ``<eos>`` included), the layout of ``Credit.to_padded(response_mask,
rows="steps")``. :meth:`token_log_prob` gives log p̃_θ(y_{t,k} | s_t, y_{t,<k}) at the mask's
positions ([S, T], 0 elsewhere), :meth:`log_prob` its row sums = log π_θ(a_t|s_t). Internally a
(state, action) pair met in several steps is one forward row. :meth:`ascend` takes per-token
coefficients c_{t,k} (``stepcredit.train.trainer.clipped_surrogate_token_coef``) and does one
Adam step (β₁ 0.9, β₂ 0.999, ε 1e-8) up

    Σ_{t,k} c_{t,k} log p̃_θ(y_{t,k} | s_t, y_{t,<k}) − β (1/S) Σ_t KL_t;

with c_{t,k} = c_t on every token of step t its gradient is Σ_t c_t ∇ log π_θ(a_t|s_t), the
step-level policy gradient of the other policies. No gradient clipping.

**KL to π₀** of a step: the per-token KL of the constrained next-token distributions along the
taken action, KL_t = Σ_k KL(p̃_θ(·|s_t, y_{t,<k}) ‖ p̃₀(·|s_t, y_{t,<k})) (0 at initialisation,
exactly: both models compute the same numbers).

**Admissible actions of stored steps**: as ``MLPPolicy``, the policy remembers A(s) of every
state met (an action seen once in s stays in A(s)), part of the state dict.

**Determinism and saving**: draws use the caller's generator; :meth:`state_dict` holds both
models' parameters, Adam's moments and step count, the admissible-action table and the
tokenizer's alphabet as plain arrays (``np.savez(..., allow_pickle=False)``), so a checkpointed
run resumes exactly.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.policies._actions import AdmissibleActions

try:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("policy='lm' needs the lm extra: pip install 'stepcredit[lm]'") from exc

from stepcredit.policies.torch_policies import adam_ascent  # noqa: E402  (after the extra's check)

__all__ = ["CharTokenizer", "LMAction", "LMBatch", "LMPolicy"]

_NEG = -1e30  # logit of a token the trie does not admit (exp underflows to exactly 0)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_STRUCT_CACHE = 1024  # trie masks kept (per valid-action list; household: up to ~45 kB each), then cleared
#: the key-value cache's keyword and output field: ``cache`` from transformers 5.x on, ``past_key_values`` before
_CACHE = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"
_ACT_CHUNK_TOKENS = 65536  # tokens (prompts once, actions per row) of one forward pass while acting


class CharTokenizer:
    """Character-level tokenizer built locally: 5 special tokens, printable ASCII and "\\n".

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<sep>`` 3, ``<unk>`` 4, then the characters
    ``" "`` (32) to ``"~"`` (126) as ids 5–99 and ``"\\n"`` as 100 (``vocab_size`` 101).
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")
    pad_id, bos_id, eos_id, sep_id, unk_id = 0, 1, 2, 3, 4

    def __init__(self) -> None:
        self.chars = "".join(chr(c) for c in range(32, 127)) + "\n"
        self._id = {ch: i + len(self.SPECIALS) for i, ch in enumerate(self.chars)}
        self._text = list(self.SPECIALS) + list(self.chars)

    @property
    def vocab_size(self) -> int:
        """|V| = 101."""
        return len(self._text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, one per character (``<unk>`` for characters outside the vocabulary)."""
        get, unk = self._id.get, self.unk_id
        return [get(ch, unk) for ch in text]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """The text of ``ids``; special tokens as their names (``"<eos>"``), or dropped with ``skip_special``."""
        n = len(self.SPECIALS)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._text):
                raise ValueError(f"CharTokenizer.decode: id {i} is outside the vocabulary (0..{len(self._text) - 1})")
            if i >= n or not skip_special:
                out.append(self._text[i])
        return "".join(out)


@dataclass(frozen=True)
class LMAction:
    """What :meth:`LMPolicy.act` returns for B environments stepped together.

    Attributes:
        index: [B] int64 index of the chosen action in each environment's valid-action list.
        log_prob: [B] float64 log π_θ(a|s) of the chosen action (constrained decoding).
        ref_log_prob: [B] float64 log π₀(a|s) under the frozen initial model.
        tokens: [B] int64 tokens of the chosen action, ``<eos>`` included.
    """

    index: np.ndarray
    log_prob: np.ndarray
    ref_log_prob: np.ndarray
    tokens: np.ndarray


@dataclass(frozen=True)
class _Table:
    """One valid-action list as token sequences and the trie's admissible-token masks."""

    tokens: tuple[tuple[int, ...], ...]  # [n] y(a), <eos> included
    lengths: np.ndarray  # [n] int64 L_a
    allowed: np.ndarray  # [n, Lmax, V] bool: N(y_<k) at each action position (False past L_a)


@dataclass(frozen=True, eq=False)
class _Rows:
    """Teacher-forcing rows, one per (prompt, action), each distinct prompt run once.

    Rows are grouped by prompt length (chunks, in order); chunk c holds ``prompts`` [N_c, P_c]
    (distinct prompts of that length), ``row_prompt`` [R_c] (each row's prompt) and ``act_in``
    [R_c, La−1] (the action's tokens without its last, padded with <pad>), so the hidden state
    predicting action token k is the prompt's last one (k = 0) or act_in's k−1 (read with the
    prompt's keys and values, repeated per row).
    """

    chunks: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    target: torch.Tensor  # [R, La] the action tokens (0 past L)
    valid: torch.Tensor  # [R, La] bool, k < L
    allowed: torch.Tensor  # [R, La, V] bool trie masks (all True past L, ignored there)


@dataclass(eq=False)
class LMBatch:
    """Stored steps prepared for token-level evaluation (:meth:`LMPolicy.steps`).

    Attributes:
        n_steps: S.
        input_ids: [S, T] int64 prompt + action token ids of each step, padded with ``<pad>``.
        response_mask: [S, T] bool, True on the action's tokens (``<eos>`` included): the
            layout of ``Credit.to_padded(response_mask, rows="steps")``.
        tokens: [S] int64 action tokens per step (the mask's row sums).
        step_row: [S] int64 the forward row of each step (one row per distinct (state, action);
            each distinct prompt is run once, its keys and values shared by its rows).
        rows: the U rows (token targets, trie masks [U, La, V], the prompts and action inputs).
        ref_logq: [U, La, V] log p̃₀ of the reference model at each action position.
        tok_step: [K] flat index s·T + P_s + k of every action token in the [S, T] layout;
        tok_row: [K] flat index u·La + k of the same token in the rows.
    """

    n_steps: int
    input_ids: np.ndarray
    response_mask: np.ndarray
    tokens: np.ndarray
    step_row: np.ndarray
    rows: _Rows
    ref_logq: torch.Tensor
    tok_step: np.ndarray
    tok_row: np.ndarray
    cache: Any = field(default=None, repr=False)  # (version, [U, La] token log-probs, [U] KL) with graph


class LMPolicy(AdmissibleActions):
    """A tiny random-initialised transformer LM that generates admissible actions token by token.

    See the module docstring for the tokenizer, the model, constrained decoding, caching and
    the token-level update.

    Args:
        hidden_size: H, the model width (a multiple of 2·n_heads).
        seed: seeds the initial weights.
        n_layers: transformer layers (2).
        n_heads: attention heads (4); n_kv_heads: key-value heads (2, divides n_heads).
        intermediate_size: the MLP width (None = 2H).
        max_prompt_tokens: the prompt is cut from the left to this many tokens (>= 3).
        max_action_tokens: longest admissible action, ``<eos>`` included (>= 1); the sum of
            the two is at most 512, the model's positions.
        dtype: ``"float32"`` (default) or ``"float64"`` (for tests; transformers' Qwen2 still
            computes its RMSNorm statistics and rotary angles in float32, so results agree with
            another evaluation order to about 1e-7, not 1e-15).
    """

    recurrent = False
    token_level = True
    kind = "lm"
    max_positions = 512

    def __init__(
        self,
        hidden_size: int = 64,
        seed: int = 0,
        *,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int = 2,
        intermediate_size: int | None = None,
        max_prompt_tokens: int = 384,
        max_action_tokens: int = 128,
        dtype: str = "float32",
    ) -> None:
        inter = 2 * hidden_size if intermediate_size is None else intermediate_size
        name = type(self).__name__
        if n_heads < 1 or n_kv_heads < 1 or n_heads % n_kv_heads or hidden_size < 2 * n_heads or hidden_size % (2 * n_heads):
            raise ValueError(f"{name}: hidden_size={hidden_size} must be a positive multiple of 2·n_heads (n_heads={n_heads}) "
                             f"and n_kv_heads={n_kv_heads} must divide n_heads")
        if n_layers < 1 or inter < 1:
            raise ValueError(f"{name}: n_layers={n_layers} and intermediate_size={inter} must be >= 1")
        if max_prompt_tokens < 3 or max_action_tokens < 1 or max_prompt_tokens + max_action_tokens > self.max_positions:
            raise ValueError(f"{name}: max_prompt_tokens={max_prompt_tokens} must be >= 3, max_action_tokens={max_action_tokens} "
                             f">= 1, and their sum at most {self.max_positions}")
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype={dtype!r} must be one of {', '.join(_DTYPES)}")
        self.hidden_size, self.seed = int(hidden_size), int(seed)
        self.n_layers, self.n_heads, self.n_kv_heads = int(n_layers), int(n_heads), int(n_kv_heads)
        self.intermediate_size = int(inter)
        self.max_prompt_tokens, self.max_action_tokens = int(max_prompt_tokens), int(max_action_tokens)
        self.dtype = dtype
        self.tokenizer = CharTokenizer()
        tok = self.tokenizer
        self.config = Qwen2Config(
            vocab_size=tok.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads,
            max_position_embeddings=self.max_positions, tie_word_embeddings=True,
            bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = AutoModelForCausalLM.from_config(self.config, attn_implementation="sdpa")
        self.model = model.to(_DTYPES[dtype]).eval()
        self.ref_model = copy.deepcopy(self.model).eval()
        for p in self.ref_model.parameters():
            p.requires_grad_(False)
        self._params = dict(self.model.named_parameters())
        self._ref_params = dict(self.ref_model.named_parameters())
        self._m = {k: torch.zeros_like(p) for k, p in self._params.items()}
        self._v = {k: torch.zeros_like(p) for k, p in self._params.items()}
        self._t = 0
        self._version = 0
        self._init_actions()  # state -> A(s), in order of first appearance
        self._tables: dict[tuple[str, ...], _Table] = {}
        self._act_cache: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self._act_version = 0

    # ------------------------------------------------------------------ text -> tokens
    def prompt_ids(self, state: str) -> list[int]:
        """x(s): ``<bos>`` + the state's characters + ``<sep>``, cut from the left to ``max_prompt_tokens``."""
        tok = self.tokenizer
        body = tok.encode(str(state))[-(self.max_prompt_tokens - 2):]
        return [tok.bos_id, *body, tok.sep_id]

    def action_ids(self, action: str) -> list[int]:
        """y(a): the action's characters + ``<eos>``."""
        return [*self.tokenizer.encode(str(action)), self.tokenizer.eos_id]

    def _table(self, actions: tuple[str, ...]) -> _Table:
        """The trie of an admissible-action list: token sequences and the masks N(y_<k)."""
        table = self._tables.get(actions)
        if table is not None:
            return table
        if not actions:
            raise ValueError("LMPolicy: a state with no valid action (the environment listed none)")
        seqs: list[tuple[int, ...]] = []
        owner: dict[tuple[int, ...], str] = {}
        for a in actions:
            y = tuple(self.action_ids(a))
            if len(y) > self.max_action_tokens:
                raise ValueError(f"LMPolicy: action {a!r} has {len(y)} tokens with <eos>, more than max_action_tokens="
                                 f"{self.max_action_tokens}")
            if y in owner:
                if owner[y] == a:
                    raise ValueError(f"LMPolicy: the valid actions repeat an action: {a!r}")
                raise ValueError(f"LMPolicy: actions {owner[y]!r} and {a!r} have the same tokens (characters outside the "
                                 "tokenizer's printable ASCII map to <unk>): the policy cannot tell them apart")
            owner[y] = a
            seqs.append(y)
        # the trie: node ids for prefixes, the admissible next tokens of each node
        child: dict[tuple[int, int], int] = {}
        nxt: list[set[int]] = [set()]
        nodes: list[list[int]] = []
        for y in seqs:
            node, path = 0, []
            for v in y:
                path.append(node)
                nxt[node].add(v)
                key = (node, v)
                if key not in child:
                    child[key] = len(nxt)
                    nxt.append(set())
                node = child[key]
            nodes.append(path)
        lengths = np.fromiter((len(y) for y in seqs), dtype=np.int64, count=len(seqs))
        allowed = np.zeros((len(seqs), int(lengths.max()), self.tokenizer.vocab_size), dtype=bool)
        for i, path in enumerate(nodes):
            for k, node in enumerate(path):
                allowed[i, k, list(nxt[node])] = True
        if len(self._tables) >= _STRUCT_CACHE:
            self._tables.clear()
        table = self._tables[actions] = _Table(tuple(seqs), lengths, allowed)
        return table

    # ------------------------------------------------------------------ the forward pass
    def _rows(self, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]],
              allowed: Sequence[np.ndarray]) -> tuple[_Rows, np.ndarray]:
        """Teacher-forcing rows of (prompt, action) pairs, grouped by prompt length.

        Args:
            prompts: [R] prompt ids; actions: [R] action ids (<eos> included); allowed: [R]
                [L_r, V] bool trie masks.

        Returns:
            (:class:`_Rows`, [R] order): row i of the result is input pair ``order[i]``.
        """
        R = len(prompts)
        P = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=R)
        order = np.argsort(P, kind="stable")
        L = np.fromiter((len(actions[i]) for i in order), dtype=np.int64, count=R)
        La, V = int(L.max()), self.tokenizer.vocab_size
        target = np.zeros((R, La), dtype=np.int64)
        mask = np.ones((R, La, V), dtype=bool)  # past L: everything admitted (finite, ignored)
        act_in = np.full((R, max(La - 1, 0)), self.tokenizer.pad_id, dtype=np.int64)
        for r, i in enumerate(order):
            y = actions[i]
            target[r, :L[r]] = y
            act_in[r, :L[r] - 1] = y[:-1]
            mask[r, :L[r]] = allowed[i][:L[r]]
        chunks = []
        Ps = P[order]
        bounds = np.flatnonzero(np.diff(Ps)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, R]):
            uniq: dict[tuple[int, ...], int] = {}
            row_prompt = np.fromiter((uniq.setdefault(tuple(prompts[i]), len(uniq)) for i in order[lo:hi]),
                                     dtype=np.int64, count=int(hi - lo))
            chunks.append((torch.tensor(list(uniq), dtype=torch.int64).reshape(len(uniq), int(Ps[lo])),
                           torch.from_numpy(row_prompt), torch.from_numpy(act_in[lo:hi])))
        valid = np.arange(La)[None, :] < L[:, None]
        rows = _Rows(tuple(chunks), torch.from_numpy(target), torch.from_numpy(valid), torch.from_numpy(mask))
        return rows, order

    @staticmethod
    def _masked_log_softmax(model: Any, rows: _Rows) -> torch.Tensor:
        """[R, La, V] log p̃ (the model's log-softmax over the trie's admissible tokens; −1e30-ish elsewhere)."""
        hs = []
        for prompts, row_prompt, act_in in rows.chunks:
            out = model.model(input_ids=prompts, use_cache=True)
            first = out.last_hidden_state[:, -1][row_prompt]  # [R_c, H]: predicts the first action token
            if act_in.shape[1]:
                cache = getattr(out, _CACHE)
                cache.reorder_cache(row_prompt)  # each row reads its prompt's keys and values
                P = prompts.shape[1]
                pos = torch.arange(P, P + act_in.shape[1])[None, :].expand(act_in.shape[0], -1)
                rest = model.model(input_ids=act_in, position_ids=pos, use_cache=True, **{_CACHE: cache}).last_hidden_state
                hs.append(torch.cat([first[:, None], rest], dim=1))
            else:
                hs.append(first[:, None])
        logits = model.lm_head(torch.cat(hs))  # [R, La, V]
        logits = torch.where(rows.allowed, logits, torch.full_like(logits, _NEG))
        return torch.log_softmax(logits, dim=-1)

    @staticmethod
    def _token_lp(logq: torch.Tensor, rows: _Rows) -> torch.Tensor:
        """[R, La] log p̃(y_k | …) along the row's action, 0 past its end."""
        lp = torch.gather(logq, 2, rows.target[..., None])[..., 0]
        return torch.where(rows.valid, lp, torch.zeros_like(lp))

    @staticmethod
    def _token_kl(logq: torch.Tensor, ref_logq: torch.Tensor, rows: _Rows) -> torch.Tensor:
        """[R] Σ_k KL(p̃(·|y_<k) ‖ p̃₀(·|y_<k)) over the row's action positions."""
        terms = torch.exp(logq) * (logq - ref_logq)
        keep = rows.allowed & rows.valid[..., None]
        return torch.where(keep, terms, torch.zeros_like(terms)).sum(dim=(1, 2))

    # ------------------------------------------------------------------ acting
    def begin_collection(self) -> None:
        """Forget the per-state action tables (the collectors call this before each collection)."""
        self._act_cache.clear()
        self._act_version = self._version

    def _fill_tables(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        """Compute log π_θ and log π₀ over the actions of each (state, valid list) in ``keys``."""
        prompts, actions, allowed, owner = [], [], [], []
        for j, (state, acts) in enumerate(keys):
            table = self._table(acts)
            x = self.prompt_ids(state)
            for i, y in enumerate(table.tokens):
                prompts.append(x)
                actions.append(y)
                allowed.append(table.allowed[i])
                owner.append(j)
        # forward passes over at most _ACT_CHUNK_TOKENS tokens each (whole states, in order)
        R = len(prompts)
        pol, ref = np.zeros(R), np.zeros(R)
        start = 0
        while start < R:
            stop, size = start, 0
            while stop < R:
                first = stop == 0 or owner[stop] != owner[stop - 1]  # a new state: its prompt counts once
                size += (len(prompts[stop]) if first else 0) + len(actions[stop])
                if stop > start and first and size > _ACT_CHUNK_TOKENS:
                    break
                stop += 1
            rows, order = self._rows(prompts[start:stop], actions[start:stop], allowed[start:stop])
            with torch.no_grad():
                for model, out in ((self.model, pol), (self.ref_model, ref)):
                    lp = self._token_lp(self._masked_log_softmax(model, rows), rows)
                    out[start + order] = lp.double().sum(dim=1).numpy()
            start = stop
        owner_a = np.asarray(owner, dtype=np.int64)
        for j, key in enumerate(keys):
            sel = owner_a == j
            self._act_cache[key] = (pol[sel], ref[sel])

    def action_log_probs(self, state: str, valid_actions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """([n] log π_θ(a|s), [n] log π₀(a|s)) over the valid actions of one state (exact, constrained decoding)."""
        key = (str(state), tuple(str(a) for a in valid_actions))
        if self._act_version != self._version:
            self.begin_collection()
        if key not in self._act_cache:
            self._fill_tables([key])
        pol, ref = self._act_cache[key]
        return pol.copy(), ref.copy()

    def act(self, states: Sequence[str], valid_actions: Sequence[Sequence[str]], rng: np.random.Generator) -> LMAction:
        """Sample one action in each of B environments stepped together.

        Args:
            states: [B] state texts (``info["state"]``).
            valid_actions: [B] lists of admissible action texts (non-empty).
            rng: the generator of the draws (one uniform number per environment).

        Returns:
            :class:`LMAction` with the chosen indices, their log-probabilities under the policy
            and the reference model, and their token counts.
        """
        B = len(states)
        if len(valid_actions) != B:
            raise ValueError(f"act: {B} states but {len(valid_actions)} valid-action lists")
        if B == 0:
            z = np.zeros(0)
            return LMAction(np.zeros(0, dtype=np.int64), z, z.copy(), np.zeros(0, dtype=np.int64))
        if self._act_version != self._version:
            self.begin_collection()
        keys = []
        for s, a in zip(states, valid_actions):
            acts = tuple(str(x) for x in a)
            self._register(str(s), acts)
            keys.append((str(s), acts))
        missing = [k for k in dict.fromkeys(keys) if k not in self._act_cache]
        if missing:
            self._fill_tables(missing)
        counts = np.fromiter((len(k[1]) for k in keys), dtype=np.int64, count=B)
        amax = int(counts.max())
        logp = np.full((B, amax), -np.inf)
        ref = np.full((B, amax), -np.inf)
        for b, k in enumerate(keys):
            pol_b, ref_b = self._act_cache[k]
            logp[b, :counts[b]] = pol_b
            ref[b, :counts[b]] = ref_b
        p = np.exp(logp)
        cum = np.cumsum(p, axis=1)
        u = rng.random(B) * cum[:, -1]
        index = np.minimum((cum <= u[:, None]).sum(axis=1), counts - 1)
        rows = np.arange(B)
        tokens = np.fromiter((self._table(k[1]).lengths[i] for k, i in zip(keys, index)), dtype=np.int64, count=B)
        return LMAction(index.astype(np.int64), logp[rows, index].copy(), ref[rows, index].copy(), tokens)

    # ------------------------------------------------------------------ stored steps
    def steps(self, ro: Rollouts) -> LMBatch:
        """Prepare the stored steps of ``ro`` (state and action texts) for the token-level update.

        Args:
            ro: rollouts whose ``state`` key holds the state texts the actions were taken in.

        Returns:
            :class:`LMBatch`; (state, action) pairs not met before are added to A(s). The
            reference model's distributions are computed here, once.
        """
        states = [str(s) for s in ro.key_values["state"].to_pylist()]
        actions = [str(a) for a in ro.key_values["action"].to_pylist()]
        for s, a in zip(states, actions):
            self._register(s, [a])
        S = len(states)
        pairs = list(dict.fromkeys(zip(states, actions)))
        row_of = {p: i for i, p in enumerate(pairs)}
        prompts, ys, allowed = [], [], []
        pos_cache: dict[str, dict[str, int]] = {}
        for s, a in pairs:
            table = self._table(tuple(self._valid[s]))
            d = pos_cache.get(s)
            if d is None:
                d = pos_cache[s] = {x: j for j, x in enumerate(self._valid[s])}
            i = d[a]
            prompts.append(self.prompt_ids(s))
            ys.append(table.tokens[i])
            allowed.append(table.allowed[i])
        U = len(pairs)
        if not U:  # pragma: no cover - Rollouts have at least one step
            raise ValueError("LMPolicy.steps: no steps")
        step_pair = np.fromiter((row_of[p] for p in zip(states, actions)), dtype=np.int64, count=S)
        Pu = np.fromiter((len(x) for x in prompts), dtype=np.int64, count=U)
        Lu = np.fromiter((len(y) for y in ys), dtype=np.int64, count=U)
        P, L = Pu[step_pair], Lu[step_pair]
        T = int((P + L).max())
        input_ids = np.full((S, T), self.tokenizer.pad_id, dtype=np.int64)
        full = [np.asarray([*prompts[u], *ys[u]], dtype=np.int64) for u in range(U)]
        for t in range(S):
            seq = full[step_pair[t]]
            input_ids[t, :seq.size] = seq
        cols = np.arange(T)[None, :]
        response_mask = (cols >= P[:, None]) & (cols < (P + L)[:, None])
        rows, order = self._rows(prompts, ys, allowed)
        inv = np.empty(U, dtype=np.int64)
        inv[order] = np.arange(U)
        step_row = inv[step_pair]
        with torch.no_grad():
            ref_logq = self._masked_log_softmax(self.ref_model, rows)
        La = int(rows.target.shape[1])
        # flat token maps between the [S, T] layout and the [U, La] rows (steps in row-major order)
        tok_s = np.repeat(np.arange(S), L)
        tok_k = np.arange(int(L.sum())) - np.repeat(np.cumsum(L) - L, L)
        return LMBatch(
            n_steps=S,
            input_ids=input_ids,
            response_mask=response_mask,
            tokens=L.astype(np.int64),
            step_row=step_row,
            rows=rows,
            ref_logq=ref_logq,
            tok_step=tok_s * T + P[tok_s] + tok_k,
            tok_row=step_row[tok_s] * La + tok_k,
        )

    def _cached(self, batch: LMBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """([U, La] token log-probs, [U] KL to π₀) of the batch's rows, with the graph."""
        if batch.cache is None or batch.cache[0] != self._version:
            rows = batch.rows
            with torch.enable_grad():
                logq = self._masked_log_softmax(self.model, rows)
                batch.cache = (self._version, self._token_lp(logq, rows), self._token_kl(logq, batch.ref_logq, rows))
        return batch.cache[1], batch.cache[2]

    def token_log_prob(self, batch: LMBatch) -> np.ndarray:
        """[S, T] float64 log p̃_θ(y_{t,k} | s_t, y_{t,<k}) at the response mask's positions, 0 elsewhere."""
        lp = self._cached(batch)[0].detach().double().numpy().reshape(-1)
        out = np.zeros(batch.input_ids.size)
        out[batch.tok_step] = lp[batch.tok_row]
        return out.reshape(batch.input_ids.shape)

    def log_prob(self, batch: LMBatch) -> np.ndarray:
        """[S] log π_θ(a_t|s_t): the row sums of :meth:`token_log_prob`."""
        return self.token_log_prob(batch).sum(axis=1)

    def kl_to_initial(self, batch: LMBatch) -> np.ndarray:
        """[S] KL_t: the per-token KL of the constrained distributions along each step's action."""
        return self._cached(batch)[1].detach().double().numpy()[batch.step_row]

    def _objective(self, batch: LMBatch, coef: np.ndarray, kl_coef: float) -> torch.Tensor:
        c = np.asarray(coef, dtype=np.float64)
        if c.shape != batch.input_ids.shape:
            raise ValueError(f"LMPolicy: token coefficients {c.shape} for a batch of shape {batch.input_ids.shape}")
        lp, kl = self._cached(batch)
        U, La = lp.shape
        # Σ_{t,k} c_{t,k} log p̃ = Σ_{u,k} (Σ_{t in row u} c_{t,k}) log p̃_{u,k}
        w = np.bincount(batch.tok_row, weights=c.reshape(-1)[batch.tok_step], minlength=U * La).reshape(U, La)
        obj = (torch.from_numpy(w).to(lp.dtype) * lp).sum()
        if kl_coef:
            share = np.bincount(batch.step_row, minlength=U) / batch.n_steps  # (1/S) Σ_t KL_t by rows
            obj = obj - kl_coef * (torch.from_numpy(share).to(kl.dtype) * kl).sum()
        return obj

    def gradient(self, batch: LMBatch, coef: np.ndarray, kl_coef: float = 0.0) -> dict[str, np.ndarray]:
        """∇θ of Σ_{t,k} c_{t,k} log p̃_θ(y_{t,k}|…) − β (1/S) Σ_t KL_t (what :meth:`ascend` climbs).

        Args:
            batch: the prepared steps.
            coef: [S, T] c_{t,k} (only the response mask's positions are read).
            kl_coef: β >= 0.

        Returns:
            parameter name -> gradient array (the parameters' dtype).
        """
        grads = torch.autograd.grad(self._objective(batch, coef, kl_coef), list(self._params.values()),
                                    retain_graph=True, allow_unused=True)
        return {k: (torch.zeros_like(p) if g is None else g).numpy().copy() for (k, p), g in zip(self._params.items(), grads)}

    def ascend(self, batch: LMBatch, weights: np.ndarray, lr: float, kl_coef: float = 0.0) -> None:
        """One Adam step up Σ_{t,k} c_{t,k} log p̃_θ(y_{t,k} | s_t, y_{t,<k}) − β (1/S) Σ_t KL_t.

        Args:
            batch: the prepared steps (:meth:`steps`).
            weights: [S, T] the per-token coefficients c_{t,k} (e.g.
                ``stepcredit.train.trainer.clipped_surrogate_token_coef``); read on the response mask.
            lr: Adam's step size.
            kl_coef: β >= 0.
        """
        c = np.asarray(weights, dtype=np.float64)
        if c.shape != batch.input_ids.shape:
            raise ValueError(f"ascend: token coefficients {c.shape} for a batch of shape {batch.input_ids.shape}")
        if not kl_coef and not np.any(c[batch.response_mask]):
            return  # no signal: leave the parameters (and Adam's moments) as they are
        grads = torch.autograd.grad(self._objective(batch, c, kl_coef), list(self._params.values()), allow_unused=True)
        batch.cache = None
        self._t += 1
        adam_ascent(self._params, grads, self._m, self._v, self._t, lr)
        self._version += 1

    # ------------------------------------------------------------------ saving
    def _config_array(self) -> np.ndarray:
        return np.array([self.hidden_size, self.seed, self.n_layers, self.n_heads, self.n_kv_heads, self.intermediate_size,
                         self.max_prompt_tokens, self.max_action_tokens], dtype=np.int64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Both models' parameters, Adam's moments and the admissible-action table as plain arrays.

        Returns:
            ``{"kind", "dtype", "tokenizer" (the alphabet): str; "config": [8] int64 (H, seed,
            layers, heads, kv heads, intermediate, max prompt, max action tokens); "adam_t": []
            int64; "param.NAME", "ref.NAME", "adam_m.NAME", "adam_v.NAME": arrays of the model
            dtype; "valid_states": [N] str, "valid_offsets": [N+1] int64, "valid_actions": [P]
            str}``: safe for ``np.savez(..., allow_pickle=False)``.
        """
        out: dict[str, np.ndarray] = {
            "kind": np.array(self.kind),
            "dtype": np.array(self.dtype),
            "tokenizer": np.array(self.tokenizer.chars),
            "config": self._config_array(),
            "adam_t": np.array(self._t, dtype=np.int64),
            **self._actions_state(),
        }
        for name, p in self._params.items():
            out[f"param.{name}"] = p.detach().numpy().copy()
            out[f"ref.{name}"] = self._ref_params[name].detach().numpy().copy()
            out[f"adam_m.{name}"] = self._m[name].numpy().copy()
            out[f"adam_v.{name}"] = self._v[name].numpy().copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a policy saved by :meth:`state_dict` of the same kind, sizes and dtype (exactly)."""
        try:
            kind, dtype = str(np.asarray(state["kind"])), str(np.asarray(state["dtype"]))
            cfg = np.asarray(state["config"]).tolist()
            alphabet = str(np.asarray(state["tokenizer"]))
            mine = self._config_array().tolist()
            if kind != self.kind or dtype != self.dtype or cfg[:1] + cfg[2:] != mine[:1] + mine[2:]:
                raise ValueError(f"policy state: a {kind} policy ({dtype}, config {cfg}), expected {self.kind} "
                                 f"({self.dtype}, config {mine}; the seed may differ)")
            if alphabet != self.tokenizer.chars:
                raise ValueError("policy state: saved with another tokenizer alphabet")
            table = self._read_actions(state)
            arrays = {f"{pre}.{k}": np.asarray(state[f"{pre}.{k}"])
                      for pre in ("param", "ref", "adam_m", "adam_v") for k in self._params}
            t = int(np.asarray(state["adam_t"]))
        except KeyError as exc:
            raise ValueError(f"policy state: missing array {exc}") from None
        for key, a in arrays.items():
            shape = tuple(self._params[key.split(".", 1)[1]].shape)
            if a.shape != shape:
                raise ValueError(f"policy state: {key} has shape {a.shape}, expected {shape}")
        self._set_actions(table)
        self.seed = int(cfg[1])
        with torch.no_grad():
            for k, p in self._params.items():
                p.copy_(torch.from_numpy(arrays[f"param.{k}"]))
                self._ref_params[k].copy_(torch.from_numpy(arrays[f"ref.{k}"]))
                self._m[k].copy_(torch.from_numpy(arrays[f"adam_m.{k}"]))
                self._v[k].copy_(torch.from_numpy(arrays[f"adam_v.{k}"]))
        self._t = t
        self._version += 1
        self.begin_collection()
