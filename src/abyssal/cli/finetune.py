"""``abyssal finetune`` (train a LoRA adapter) and ``abyssal merge`` (fold one into its base)."""

from __future__ import annotations

import argparse


def add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="train a LoRA adapter on a solution's base model and register only the adapter",
    )
    p.add_argument("solution", help="a solution with LoRA fine-tuning, e.g. text")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lora.r=8"
    )
    p.add_argument("--config", help="YAML config file (see `abyssal config SOLUTION --yaml`)")
    p.add_argument("--resume", metavar="RUN", help="continue run RUN (or 'latest')")
    p.add_argument("--name", help="model name in the store (default: SOLUTION-lora)")
    p.add_argument("--alias", help="point this alias (e.g. candidate) at the new version")
    p.set_defaults(handler=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    """``abyssal train`` with ``model.tuning=lora`` before the user's overrides (which may
    change anything else, e.g. ``lora.r=16``)."""
    from abyssal.cli.commands import _print_metrics
    from abyssal.core.errors import ConfigError
    from abyssal.solutions import get_solution
    from abyssal.train.api import train

    solution = get_solution(args.solution)
    fields = getattr(solution.config_cls, "__dataclass_fields__", {})
    if "lora" not in fields:
        raise ConfigError(
            f"solution '{args.solution}' has no LoRA fine-tuning (no lora section in its "
            "config); train it with `abyssal train`"
        )
    given = [o for o in args.overrides if o.split("=", 1)[0].strip() == "model.tuning"]
    if given and given[-1].split("=", 1)[1].strip() != "lora":
        raise ConfigError(
            f"abyssal finetune trains LoRA adapters; for {given[-1]} use `abyssal train`"
        )
    out = train(
        args.solution,
        args.config,
        ["model.tuning=lora", *args.overrides],
        resume=args.resume,
        model_name=args.name or f"{args.solution}-lora",
        alias=args.alias,
    )
    if out is None:
        return 0
    size = sum(a.size or 0 for a in out.version.artifacts if a.role == "adapter")
    print(f"\nrun {out.run.id}: registered {out.version.ref} (adapter {size / 1024:.0f} KiB)")
    _print_metrics(solution.metric_layout, out.metrics)
    return 0


def add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="fold a LoRA adapter version into its base and register the plain model (for "
        "serving and `abyssal optimize`)",
    )
    p.add_argument("model", help="the adapter version, e.g. text-lora:2")
    p.add_argument("--name", help="the merged model's name (default: NAME-merged)")
    p.add_argument("--alias", help="point this alias at the merged version")
    p.set_defaults(handler=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore
    from abyssal.solutions import get_solution

    store = ModelStore()
    mv = store.resolve(args.model)
    solution = get_solution(mv.solution)
    version = solution.merge_adapter(mv.ref, name=args.name, alias=args.alias, store=store)
    diff = version.metrics.get("merge_max_abs_logit_diff")
    print(
        f"merged {mv.ref} into its base: registered {version.ref} (parent {mv.ref}); largest "
        f"logit difference on a probe batch {diff:.2e}"
    )
    print(f"next: abyssal optimize {version.ref} --target cpu --methods onnx,int8")
    return 0
