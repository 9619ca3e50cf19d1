"""Loop oracle of the LM policy's constrained-decoding probabilities (``LMPolicy``).

Written from the definition, slowly: for every admissible action a and every position k of its
token sequence y(a) (characters + <eos>), one forward pass of the model over the prompt and
y_<k, the logits of the last position, and a softmax restricted by hand to the tokens that
continue some admissible action with the same prefix (found by comparing the token lists,
no trie):

    π(a|s) = Π_k exp z_{y_k} / Σ_{v ∈ N_k} exp z_v,   N_k = {y'_k : a' ∈ A(s), y'_<k = y_<k}.

No code is shared with ``stepcredit.policies.lm_policy`` apart from the model object and the
token ids the test passes in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["constrained_log_probs", "constrained_token_log_probs"]


def constrained_token_log_probs(model, prompt: Sequence[int], actions: Sequence[Sequence[int]]) -> list[list[torch.Tensor]]:
    """Per action, the list of log p̃(y_k | prompt, y_<k) (0-d tensors, with the graph).

    Args:
        model: a transformers causal LM (``LMPolicy.model``).
        prompt: the prompt's token ids.
        actions: every admissible action's token ids, <eos> included.
    """
    out: list[list[torch.Tensor]] = []
    for y in actions:
        terms = []
        for k in range(len(y)):
            allowed = sorted({z[k] for z in actions if len(z) > k and list(z[:k]) == list(y[:k])})
            ids = torch.tensor([list(prompt) + list(y[:k])], dtype=torch.int64)
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]  # one forward per prefix
            sub = logits[allowed]
            terms.append(sub[allowed.index(y[k])] - torch.logsumexp(sub, dim=0))
        out.append(terms)
    return out


def constrained_log_probs(model, prompt: Sequence[int], actions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Per action, log π(a|s) = Σ_k log p̃(y_k | prompt, y_<k) (0-d tensors, with the graph)."""
    return [torch.stack(t).sum() for t in constrained_token_log_probs(model, prompt, actions)]
