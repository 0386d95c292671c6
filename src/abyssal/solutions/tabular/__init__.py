"""The tabular solution: classification or regression on a CSV or Parquet table.

A small neural network (an MLP over standardised numbers, missing indicators and category
embeddings) trains beside gradient-boosted trees on the same features and splits. Registered as
``tabular`` in :mod:`abyssal.solutions`; needs the ``tabular`` extra (scikit-learn).
"""
