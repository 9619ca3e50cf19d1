"""A learned SPA progress model: a small PyTorch MLP over hashed step features.

Needs the ``torch`` extra (``pip install 'stepcredit[torch]'``); nothing else in stepcredit
imports this module. :class:`TorchProgressMLP` satisfies
:class:`stepcredit.estimators.attribution.ProgressModel`, so its contributions go through
:func:`~stepcredit.estimators.attribution.spa_credit` like the least-squares model's:

>>> model = TorchProgressMLP(epochs=300, seed=0).fit(ro)
>>> credit = spa_credit(ro, model, beta=0.5)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "stepcredit.estimators.attribution_torch needs PyTorch: pip install 'stepcredit[torch]'"
    ) from err

from stepcredit.data import Rollouts
from stepcredit.estimators.registry import EstimatorError

__all__ = ["TorchProgressMLP"]


class _Net(nn.Module):
    """Embedding of each hashed field (bucket = hash mod n_buckets), concatenated -> MLP -> c_t."""

    def __init__(self, n_fields: int, n_buckets: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        # sparse gradients: an Adam step touches only the rows of the features in the batch
        self.embed = nn.ModuleList(nn.Embedding(n_buckets, embed_dim, sparse=True) for _ in range(n_fields))
        self.mlp = nn.Sequential(nn.Linear(n_fields * embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:  # [S, n_fields] -> [S]
        x = torch.cat([emb(buckets[:, k]) for k, emb in enumerate(self.embed)], dim=1)
        return self.mlp(x).squeeze(1)


class TorchProgressMLP:
    """Progress model c_t = MLP(embedding(hash(state_t) mod n_buckets)) trained on the SPA loss.

    Loss over the episodes of the batch (full batch, Adam, ``epochs`` steps):
        L = mean_i (Σ_t c_t^i − R_i)²,
    the paper's progress-estimator objective with a small network in place of its LLM. The
    embeddings are trained with SparseAdam (only the rows of the batch's features move), the
    MLP with Adam. With
    ``features="state_action"`` the state and action embeddings are concatenated. Calling
    :meth:`fit` again continues training from the current weights on the new batch (the
    optimiser state is kept), so the model can follow the policy across batches.

    Args:
        features: ``"state"`` or ``"state_action"`` (needs the ``action`` field).
        n_buckets: size of each embedding table; hashes are reduced modulo it (two features in
            one bucket share an embedding).
        embed_dim: embedding width.
        hidden: width of the hidden layer.
        epochs: full-batch Adam steps per :meth:`fit`.
        lr: Adam learning rate.
        weight_decay: weight decay of the MLP's Adam (not of the embeddings; the released
            script uses 0.01 on its LLM).
        seed: seed of the weight initialisation (training is deterministic on CPU).
        device: torch device for training and inference.

    Attributes:
        diagnostics: after a fit: ``epochs``, ``initial_loss``, ``final_loss`` (the loss before
            the first and after the last step of that fit).
    """

    def __init__(
        self,
        *,
        features: Literal["state", "state_action"] = "state",
        n_buckets: int = 1 << 16,
        embed_dim: int = 16,
        hidden: int = 64,
        epochs: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if features not in ("state", "state_action"):
            raise EstimatorError(f"TorchProgressMLP: features={features!r} must be 'state' or 'state_action'")
        for name, v in (("n_buckets", n_buckets), ("embed_dim", embed_dim), ("hidden", hidden), ("epochs", epochs)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EstimatorError(f"TorchProgressMLP: {name}={v!r} must be an int >= 1")
        if not lr > 0 or not weight_decay >= 0:
            raise EstimatorError("TorchProgressMLP: lr must be > 0 and weight_decay >= 0")
        self.features, self.n_buckets, self.epochs = features, n_buckets, epochs
        self.lr, self.weight_decay, self.device = lr, weight_decay, torch.device(device)
        fields = ("state",) if features == "state" else ("state", "action")
        self._fields = fields
        with torch.random.fork_rng(devices=[]):  # seeded init, the global RNG left untouched
            torch.manual_seed(seed)
            self.net = _Net(len(fields), n_buckets, embed_dim, hidden).to(self.device)
        self._opts = (
            torch.optim.SparseAdam(list(self.net.embed.parameters()), lr=lr),
            torch.optim.Adam(self.net.mlp.parameters(), lr=lr, weight_decay=weight_decay),
        )
        self.diagnostics: dict[str, int | float] = {}

    def _buckets(self, ro: Rollouts) -> torch.Tensor:
        by = f"TorchProgressMLP (features='{self.features}')"
        cols = [ro.column(name, by=by) % np.uint64(self.n_buckets) for name in self._fields]
        return torch.as_tensor(np.stack(cols, axis=1).astype(np.int64), device=self.device)

    def fit(self, ro: Rollouts) -> TorchProgressMLP:
        """Train ``epochs`` full-batch steps on the episodes of ``ro``; returns the model."""
        x = self._buckets(ro)
        episode = torch.as_tensor(np.repeat(np.arange(ro.n_episodes), ro.step_counts), device=self.device)
        target = torch.tensor(ro.outcome, dtype=torch.float32, device=self.device)
        self.net.train()

        def loss_fn() -> torch.Tensor:
            c = self.net(x)
            sums = torch.zeros(ro.n_episodes, device=self.device).index_add(0, episode, c)
            return torch.mean((sums - target) ** 2)

        initial = None
        for _ in range(self.epochs):
            for opt in self._opts:
                opt.zero_grad()
            loss = loss_fn()
            if initial is None:
                initial = float(loss.detach())
            loss.backward()
            for opt in self._opts:
                opt.step()
        with torch.no_grad():
            final = float(loss_fn())
        self.diagnostics = {"epochs": self.epochs, "initial_loss": initial or 0.0, "final_loss": final}
        return self

    def contributions(self, ro: Rollouts) -> np.ndarray:
        """[S] c_t of every step of ``ro`` (float64)."""
        self.net.eval()
        with torch.no_grad():
            return self.net(self._buckets(ro)).double().cpu().numpy()
