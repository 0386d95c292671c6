"""Turn a model into a new, better model version: the trainer and its strategies."""
