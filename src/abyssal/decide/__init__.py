"""Decisions from scores: operating points chosen on validation data (a target precision or
recall, a review budget, an expected-cost rule) and three-way triage (approve, review, block).
See :mod:`abyssal.decide.points`."""
