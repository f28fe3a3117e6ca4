"""The ``pa3d`` command line.

Subcommands live in their own modules; each module exposes ``add_arguments(parser)`` and ``run(args) -> int``
and is imported only when its subcommand runs, so ``pa3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "COMMANDS"]

#: subcommand -> (module, one-line help). A module provides ``add_arguments(parser)`` and ``run(args)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("pa3d_cli.main", "print versions and which compiled backends are available"),
    "precompute-teacher": (
        "pa3d_cli.precompute_teacher",
        "render, run a 2D teacher, back-project: cache Stage-1 targets",
    ),
    "segment": (
        "pa3d_cli.segment",
        "zero-shot part segmentation of meshes or point clouds, labels carried back to every vertex/point",
    ),
    "build-text-bank": ("pa3d_cli.text_bank", "encode part names once into a text bank"),
    # the web app lives in the package above this one (pa3d_app); named by string, imported only when it runs
    "app": ("pa3d_app.cli", "local web app: upload a shape, name its parts, see them in 3D (needs pa3d[app])"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:  # the `info` subcommand
    del parser


def run(args: argparse.Namespace) -> int:  # the `info` subcommand
    del args
    import torch

    from pa3d_layers import _backend
    from pa3d_models import __version__

    print(f"pa3d {__version__}")
    print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    print(f"torch-cluster: {'yes' if _backend.WITH_TORCH_CLUSTER else 'no (pure-torch reference)'}")
    print(f"torch-scatter: {'yes' if _backend.WITH_TORCH_SCATTER else 'no (pure-torch reference)'}")
    return 0


def _load(name: str):
    module_name, _ = COMMANDS[name]
    module_name, _, attr = module_name.partition(":")  # "module:attr" names an object inside a module
    module = importlib.import_module(module_name) if module_name != __name__ else sys.modules[__name__]
    return getattr(module, attr) if attr else module


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pa3d", description="PatchAlign3D building blocks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands if commands is not None else COMMANDS:
        _, help_text = COMMANDS[name]
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if commands is not None:  # only the chosen subcommand's arguments are built (lazy import)
            _load(name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pa3d`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = build_parser()
        if command is None and not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # prints help or an "invalid choice" error listing the commands
        return 2
    args = build_parser([command]).parse_args(argv)
    return int(_load(command).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
