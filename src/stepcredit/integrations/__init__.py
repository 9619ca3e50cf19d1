"""Adapters that put stepcredit's credit into existing trainers.

Each integration lives in its own module and imports its trainer lazily, so importing
``stepcredit.integrations`` needs nothing beyond the core:

* :mod:`stepcredit.integrations.verl`: stepcredit estimators and pipelines in verl's
  advantage-estimator registry (``algorithm.adv_estimator=stepcredit_gigpo``), and the batch
  adapter behind them (verl batch -> ``Rollouts`` -> pipeline -> ``[B, T]`` advantages).
* :mod:`stepcredit.integrations.trl`: ``StepCreditGRPOTrainer``, TRL's ``GRPOTrainer`` with
  per-token advantages from any stepcredit pipeline (multi-turn and tool episodes split into
  steps).
* :mod:`stepcredit.integrations.ray_credit`: ``stepcredit advantages DIR --backend ray``, the
  advantages of a Parquet dataset by Ray tasks, partitioned by whole groups.
"""

__all__: list[str] = []
