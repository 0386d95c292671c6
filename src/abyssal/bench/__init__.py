"""Evaluation and benchmarks of registered model versions."""
