"""From scores to decisions and back: operating points chosen on validation data (binary:
target precision or recall, review budget, expected cost, with approve, review or block;
more classes: accept or review), decisions in the service and in prediction files, a rules
baseline, confirmed-label feedback with label delay, and prequential evaluation of update
policies. See :mod:`abyssal.decide.points` and ``docs/decisions.md``."""
