"""``abyssal audit``: the model card of a version and its pass or fail against a policy
(:mod:`abyssal.govern.audit`)."""

from __future__ import annotations

import argparse


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="a model card (HTML, PDF, PNG pages) and a pass or fail against a policy: metrics, "
        "fairness, explanations, privacy",
    )
    p.add_argument("model", help="the version to audit: NAME, NAME:ALIAS or NAME:N")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="over the policy")
    p.add_argument("--policy", metavar="FILE", help="the policy (YAML); default: an empty one")
    p.add_argument(
        "--out", metavar="DIR", help="write here (default: $ABYSSAL_HOME/audits/NAME/N/TIME)"
    )
    p.add_argument("--device", default="cpu", help="where the model runs (default: cpu)")
    p.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    policy = load_policy(args.policy, args.overrides)
    result = audit_version(args.model, policy, out=args.out, device=args.device)
    print(result.summary())
    for path in result.files:
        if path.suffix in (".html", ".pdf"):
            print(f"{path.suffix[1:]}: {path}")
    pages = [p for p in result.files if p.suffix == ".png"]
    if pages:
        print(f"pages: {len(pages)} PNG in {pages[0].parent}")
    return 0 if result.passed else 1
