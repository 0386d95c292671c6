"""``abyssal new solution NAME``: write a plugin package for a solution of one's own."""

from __future__ import annotations

import argparse


def add_new(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new", help="start a plugin package (a solution of your own)")
    nsub = p.add_subparsers(title="what", metavar="WHAT")
    sol = nsub.add_parser(
        "solution",
        help="a package with the solution (a working template on generated data), its entry "
        "point, a config, tests through the CLI and a README",
    )
    sol.add_argument("name", help="the solution's name: lowercase letters, digits, underscores")
    sol.add_argument("--dir", help="the package folder (default: ./abyssal-NAME)")
    sol.set_defaults(handler=cmd_new_solution)
    p.set_defaults(handler=lambda _args: p.print_help() or 2)


def cmd_new_solution(args: argparse.Namespace) -> int:
    from abyssal.scaffold import new_solution

    files = new_solution(args.name, args.dir)
    root = files[0].parent
    print(f"wrote the plugin package {root}:")
    for path in files:
        print(f"  {path.relative_to(root)}")
    print(
        f"\nnext:\n  cd {root}\n  pip install -e '.[test]'   # beside abyssal\n"
        f"  abyssal solutions          # lists {args.name}\n"
        f"  pytest                     # trains, evaluates, predicts and serves it\n"
        f"then make src/abyssal_{args.name}/solution.py your own (abyssal's docs/plugins.md)."
    )
    return 0
