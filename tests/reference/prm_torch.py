"""Loop oracles of the torch PRMs (``stepcredit.prm.torch_models``), written from the definitions.

Slowly: one unpadded forward pass per sequence (or per token prefix), the token ids built here
from the LM policy's character tokenizer, plain Python loops over steps, episodes and pairs. No
code is shared with ``stepcredit.prm.torch_models`` apart from the model objects the test passes
in.

* implicit step reward: r_t = β Σ_k [log π_φ(y_k | x, y_<k) − log π_ref(y_k | x, y_<k)], each
  log-probability the log-softmax over the whole vocabulary of the last logits of one forward
  pass over x ⊕ y_<k (``model(...).logits``, not the lm_head shortcut);
* LM step PRM logit: z = head(last hidden state of x ⊕ y), one forward pass per step;
* implicit Q-values: q_t = Σ_{i ≤ t} r_i within each episode;
* Bradley-Terry pairs: every ordered pair of steps of one group and state, different actions,
  the first labelled strictly higher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stepcredit.policies.lm_policy import CharTokenizer

__all__ = ["bt_pairs_loop", "char_prompt", "char_action", "implicit_step_rewards_loop", "q_values_loop", "step_logits_loop"]

_TOK = CharTokenizer()


def char_prompt(state: str, max_prompt_tokens: int = 384) -> list[int]:
    """x(s) = <bos> + the state's characters (the last max_prompt_tokens − 2) + <sep>."""
    body = [_TOK.encode(ch)[0] for ch in state]
    keep = max_prompt_tokens - 2
    return [_TOK.bos_id, *body[len(body) - min(len(body), keep):], _TOK.sep_id]


def char_action(action: str) -> list[int]:
    """y(a) = the action's characters + <eos>."""
    return [*(_TOK.encode(ch)[0] for ch in action), _TOK.eos_id]


def implicit_step_rewards_loop(policy, ref, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]], beta: float) -> list[float]:
    """[S] r_t, one forward pass of each model per action token (float64 sums of float32 log-probs)."""
    out = []
    with torch.no_grad():
        for x, y in zip(prompts, actions):
            total = 0.0
            for k in range(len(y)):
                ids = torch.tensor([list(x) + list(y[:k])], dtype=torch.int64)
                lp = torch.log_softmax(policy(input_ids=ids, use_cache=False).logits[0, -1].float(), dim=-1)[y[k]]
                lr = torch.log_softmax(ref(input_ids=ids, use_cache=False).logits[0, -1].float(), dim=-1)[y[k]]
                total += float(lp) - float(lr)
            out.append(beta * total)
    return out


def step_logits_loop(model, head, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]]) -> list[float]:
    """[S] z_t = head(h_last(x ⊕ y)), one forward pass per step."""
    out = []
    with torch.no_grad():
        for x, y in zip(prompts, actions):
            ids = torch.tensor([list(x) + list(y)], dtype=torch.int64)
            h = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[-1][0, -1]
            out.append(float(head(h)[0]))
    return out


def q_values_loop(rewards: Sequence[float], episode_offsets: Sequence[int]) -> list[float]:
    """[S] q_t = Σ_{i ≤ t} r_i within each episode."""
    out = []
    for e in range(len(episode_offsets) - 1):
        run = 0.0
        for s in range(episode_offsets[e], episode_offsets[e + 1]):
            run += rewards[s]
            out.append(run)
    return out


def bt_pairs_loop(groups: Sequence, states: Sequence[str], actions: Sequence[str], labels: Sequence[float],
                  mask: Sequence[bool]) -> list[tuple[int, int]]:
    """Every (i, j): same group and state, different actions, labels[i] > labels[j], both in the mask."""
    pairs = []
    n = len(labels)
    for i in range(n):
        for j in range(n):
            if (mask[i] and mask[j] and groups[i] == groups[j] and states[i] == states[j]
                    and actions[i] != actions[j] and labels[i] > labels[j]):
                pairs.append((i, j))
    return sorted(pairs)
