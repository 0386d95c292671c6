"""The ``abyssal`` command: one verb per library call; parsing and printing only."""
