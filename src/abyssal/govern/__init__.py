"""Governance: privacy (PII), fairness, interpretability and the audit of a model version."""
