"""Adapters that put stepcredit's credit into existing trainers.

Each integration lives in its own module and imports its trainer lazily, so importing
``stepcredit.integrations`` needs nothing beyond the core:

* :mod:`stepcredit.integrations.verl`: stepcredit estimators and pipelines in verl's
  advantage-estimator registry (``algorithm.adv_estimator=stepcredit_gigpo``), and the batch
  adapter behind them (verl batch -> ``Rollouts`` -> pipeline -> ``[B, T]`` advantages).
"""

__all__: list[str] = []
