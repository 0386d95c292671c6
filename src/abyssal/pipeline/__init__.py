"""Pipelines: data validation, training, performance test, quality gate, deployment or
retraining, as resumable steps (:mod:`abyssal.pipeline.dag`)."""
