"""``abyssal``: the command line. Each verb parses, calls one library function and prints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from abyssal import __version__
from abyssal.core.errors import AbyssalError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    # key=value overrides may come before or after options such as --config
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        status = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except AbyssalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """Output piped into a program that stopped reading (``abyssal models list | head``): not an
    error. Standard output now points at ``os.devnull``, so that Python's own flush at exit does
    not fail again (the recipe in the Python docs, ``signal`` module, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from abyssal.cli import commands

    parser = argparse.ArgumentParser(
        prog="abyssal",
        description="Take AI models from the lab to production: train, evaluate, register, score.",
    )
    parser.add_argument("--version", action="version", version=f"abyssal {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.register_all(sub)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
