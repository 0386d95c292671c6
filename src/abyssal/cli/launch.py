"""``abyssal train ... --nproc N``: start the same command in N processes with ``torchrun``.

The processes run on this host (``--standalone``: torchrun picks a free port and its own
rendezvous). For several hosts, run ``torchrun`` yourself on each (docs/distributed.md has the
steps); the command after ``-m abyssal`` is the same.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The ``torchrun`` command line that runs ``abyssal`` with ``argv`` (minus ``--nproc``) in
    ``nproc`` processes.

    Example:
        >>> torchrun_command(2, ["train", "fraud", "--nproc", "2", "train.strategy=ddp"])[5:]
        ['2', '-m', 'abyssal', 'train', 'fraud', 'train.strategy=ddp']
    """
    rest: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        rest.append(item)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "abyssal",
        *rest,
    ]


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run ``abyssal`` in ``nproc`` processes under torchrun; its exit status (non-zero when any
    process failed: torchrun then stops the others)."""
    command = torchrun_command(nproc, argv)
    print(f"starting {nproc} processes: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    return subprocess.call(command)
