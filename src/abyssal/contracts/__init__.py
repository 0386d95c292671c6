"""The contracts solutions implement: the solution protocol, the training task and its config.

They live below ``solutions/`` and ``train/`` so that a solution never imports upward: a solution
implements :class:`~abyssal.contracts.solution.Solution` and hands the trainer a
:class:`~abyssal.contracts.task.TrainTask`; the trainer only knows these contracts.
"""
