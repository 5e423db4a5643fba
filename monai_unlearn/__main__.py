"""The front door: ``python -m monai_unlearn unlearn --bundle <B> --forget <selector> --output <OUT>``.

The same run as ``python -m monai.bundle run unlearn`` with the overlay, without typing the config list.
``python -m monai_unlearn compose --features <A> --head <B> --output <C>`` composes two unlearned bundles;
``python -m monai_unlearn verify --unlearned <OUT>`` recomputes an unlearned bundle's forget set and evidence;
``python -m monai_unlearn ids`` lists the overlay's config ids (every one can be overridden by id);
``python -m monai_unlearn demo`` runs the main demo.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

__all__ = ["main", "find_train_config"]


def find_train_config(bundle: str, name: str | None = None) -> str:
    """The bundle's training config: ``configs/<name>`` when given, else ``configs/train.json`` / ``.yaml``.

    Raises:
        FileNotFoundError: naming the files that were looked for.
    """
    from monai_unlearn.bundle.layout import find_bundle_config

    path = os.path.join(bundle, "configs", name) if name else find_bundle_config(bundle, "train")
    if path is None or not os.path.isfile(path):
        looked_for = path or os.path.join(bundle, "configs", "train.json / .yaml / .yml")
        raise FileNotFoundError(f"no training config in {bundle}: looked for {looked_for}; name one with --config.")
    return path


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pair(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set expects ID=VALUE, got {item!r}.")
    return key, _value(value)


def _unlearn(args: argparse.Namespace) -> None:
    from monai_unlearn.bundle import UnlearnWorkflow

    overrides: dict[str, Any] = {"forget": args.forget, "output_dir": args.output, "unlearn_reason": args.reason,
                                 "unlearn_overwrite": args.overwrite, "unlearn_progress": not args.quiet}
    for name in ("epochs", "lr", "batch_size", "regime"):
        if getattr(args, name) is not None:
            overrides[f"unlearn_{name}"] = getattr(args, name)
    if args.checkpoint_every:
        overrides["unlearn_checkpoint_every"] = args.checkpoint_every
    if args.resume:
        overrides["unlearn_resume"] = True
    if args.retrained:
        overrides["unlearn_retrained_ckpt"] = args.retrained
    params: dict[str, Any] = {}
    if args.eps is not None:
        params["eps"] = args.eps
    for item in args.set:
        key, value = _pair(item)
        if key.startswith("unlearn_params#"):
            params[key.split("#", 1)[1]] = value
        else:
            overrides[key] = value
    if params:
        overrides["unlearn_params"] = params
    bundle = os.path.abspath(args.bundle)
    meta = os.path.join(bundle, "configs", "metadata.json")
    workflow = UnlearnWorkflow(config_file=find_train_config(bundle, args.config), bundle_root=bundle,
                               meta_file=meta if os.path.isfile(meta) else None, **overrides)
    workflow.initialize()
    summary = workflow.run()
    print(f"\nnew bundle: {summary['output_dir']} ({summary['num_forgotten']} items forgotten)\n{summary['table']}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m monai_unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("unlearn", help="unlearn a forget set from a bundle and write a new bundle")
    run.add_argument("--bundle", required=True, help="the bundle to unlearn from (only read)")
    run.add_argument("--forget", required=True, help="label=3 | key=value | a .txt/.json file of image paths")
    run.add_argument("--output", required=True, help="folder of the new bundle (must not exist)")
    run.add_argument("--config", help="training config file name in <bundle>/configs (default train.json/.yaml)")
    run.add_argument("--reason", default="", help="why the data is forgotten (kept in the audit)")
    run.add_argument("--retrained", help="weights of a model retrained without the forget set, for comparison")
    run.add_argument("--eps", type=float, help="search radius (relative to the intensity range by default)")
    run.add_argument("--epochs", type=int, help="passes over the forget set (the budget of the calibrated stop)")
    run.add_argument("--regime", help="auto (default: decided from the data, stopped at a calibrated target), fixed "
                                      "(every pass), or class / partial / segmentation_class / segmentation_cases")
    run.add_argument("--lr", type=float, help="learning rate")
    run.add_argument("--batch-size", dest="batch_size", type=int, help="batch size")
    run.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                     help="any config override, e.g. --set unlearn_params#gamma=0.5 (values parsed as JSON)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    run.add_argument("--checkpoint-every", dest="checkpoint_every", type=int,
                     help="write <output>.checkpoint every N passes")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from <output>.checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    compose = commands.add_parser("compose", help="feature extractor of one unlearned bundle, head of another")
    compose.add_argument("--features", required=True, help="bundle supplying the feature extractor")
    compose.add_argument("--head", required=True, help="bundle supplying the classification head")
    compose.add_argument("--output", required=True, help="folder of the composed bundle (must not exist)")
    compose.add_argument("--head-prefix", dest="head_prefixes", action="append",
                         help="parameter-name prefix of the head (repeatable; detected for MONAI networks)")
    compose.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    check = commands.add_parser("verify", help="recompute an unlearned bundle's forget set and evidence")
    check.add_argument("--unlearned", required=True, help="the bundle written by the unlearn command")
    check.add_argument("--original", help="the source bundle (default: the path recorded in the report)")
    check.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                       help="config overrides the original run used, e.g. --set dataset_dir=/data/slices")
    commands.add_parser("ids", help="list the unlearn overlay's config ids and defaults (override any with --<id>)")
    commands.add_parser("demo", help="the main demo (see python -m monai_unlearn.apps.demo --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from monai_unlearn.apps.demo import main as demo_main

        demo_main(rest)
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "ids":
        from monai_unlearn.bundle.ids import format_ids, overlay_ids

        print(format_ids(overlay_ids()))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "verify":
        from monai_unlearn.bundle.verify import verify_unlearned_bundle

        overrides = dict(_pair(item) for item in args.set)
        outcome = verify_unlearned_bundle(args.unlearned, args.original, overrides)
        for c in outcome["checks"]:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: recorded {c['recorded']}, recomputed {c['recomputed']}")
        print("verified" if outcome["ok"] else "verification FAILED")
        if not outcome["ok"]:
            raise SystemExit(1)
        return
    if args.command == "compose":
        from monai_unlearn.bundle.compose import compose_bundles

        record = compose_bundles(args.features, args.head, args.output, args.head_prefixes, overwrite=args.overwrite)
        print(f"composed bundle: {os.path.abspath(args.output)} (head {record['head_prefixes']} from {args.head})")
        return
    _unlearn(args)


if __name__ == "__main__":
    main(sys.argv[1:])
