"""The ``pa3d build-text-bank`` subcommand: encode part names once for training and evaluation.

``pa3d build-text-bank --names FILE --text-model SPEC --out BANK.safetensors`` (or ``--dataset NAME``) writes a
:class:`~pa3d_models.TextBank`. It refuses to write over ``--names``, reads only UTF-8 text, and turns every
error into one line and a non-zero exit (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .segment import SegmentError, _fail, _same, load_text_encoder

__all__ = ["add_arguments", "run", "build_text_bank_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pa3d build-text-bank``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--names", help="UTF-8 text file with one part name per line (# comments allowed)")
    src.add_argument("--dataset", help="a registered dataset name (pa3d_data.DATASETS)")
    parser.add_argument("--data", help="dataset root for --dataset (default: found under $PA3D_DATA)")
    parser.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                        help='dataset keyword (JSON value), e.g. class_choice=\'["Cap"]\' (repeatable)')
    parser.add_argument("--text-model", default="auto", help="text encoder spec (see pa3d segment --help)")
    parser.add_argument("--out", required=True, help="the bank to write (.safetensors)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SegmentError(f"--dataset-option must be KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _names_from_dataset(name: str, root: str | None, options: dict[str, Any] | None = None) -> list[str]:
    """Every label text (the dataset's prompt map, else the cleaned names) over all shapes of a dataset."""
    from pa3d_data import build_dataset

    try:  # root None: the dataset's folder under the default data root
        dataset = build_dataset(name, root, **(options or {}))
    except TypeError as err:  # an unknown keyword
        raise SegmentError(f"--dataset-option: {err}") from err
    names: list[str] = []
    for i in range(len(dataset)):
        sample = dataset[i]
        names.extend(sample.texts if hasattr(sample, "texts") else sample.label_names)
    return names


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise SegmentError(f"--names file {path} does not exist" if not path.exists() else
                           f"--names {path} is not a file")
    raw = path.read_bytes()
    if b"\0" in raw:
        raise SegmentError(f"--names {path} is a binary file; expected UTF-8 text with one part name per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SegmentError(f"--names {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def run(args: argparse.Namespace) -> int:
    """Run ``pa3d build-text-bank``."""
    from pa3d_models.text import TextBank

    try:
        out = Path(args.out)
        if args.names and _same(out, Path(args.names)):
            raise SegmentError(f"refusing to overwrite the input --names {args.names} with --out {args.out}")
        if out.is_dir():
            raise SegmentError(f"--out {out} is a directory; name the .safetensors file to write")
        if args.names:
            names = _read_names(Path(args.names))
            if not names:
                raise SegmentError(f"--names {args.names} holds no part names (one per line; # starts a comment)")
        else:
            names = _names_from_dataset(args.dataset, args.data, _parse_options(args.dataset_option))
        if not names:
            raise SegmentError("no part names to encode")
        encoder = load_text_encoder(args.text_model)
        bank = TextBank.build(names, encoder)
        if not bool(torch.isfinite(bank.embeddings).all()):
            raise SegmentError(f"the text encoder {encoder.name} gave NaN/Inf features")
        bank.save(out)
    except (SegmentError, ValueError, RuntimeError, KeyError, OSError) as err:
        return _fail("build-text-bank", err, getattr(args, "debug", False))
    print(f"wrote {args.out}: {len(bank)} names, {bank.dim}-d, encoder {bank.encoder}")
    return 0


#: The subcommand as one object (``add_arguments``, ``run``), as older code imported it from ``pa3d_cli.segment``.
build_text_bank_command = SimpleNamespace(add_arguments=add_arguments, run=run)
