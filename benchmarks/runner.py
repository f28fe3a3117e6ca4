"""Run the benchmark families in one process and write the results files."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from ._harness import Context, environment
from .report import to_markdown

__all__ = ["FAMILIES", "SCHEMA_VERSION", "run_benchmarks"]

SCHEMA_VERSION = 1
# Order matters: the roofline comes first so later families can relate to the GEMM rate.
FAMILIES = ["roofline", "grouping", "losses", "encoder", "cputime", "accuracy", "training", "segment", "scaling"]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def run_benchmarks(
    only: list[str] | None = None,
    *,
    quick: bool = False,
    toy: bool = False,
    out_dir: str | Path | None = RESULTS_DIR,
    docs_page: str | Path | None = None,
    device: str | None = None,
    repeats: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run the families (all, or ``only``) and return the results dict; write JSON + markdown to ``out_dir``.

    Args:
        only: family names to run (default all, in :data:`FAMILIES` order).
        quick: reduced sizes and repeats.
        toy: tiny sizes for the test suite (implies quick).
        out_dir: where ``<date>.json`` and ``<date>.md`` go (None: write nothing).
        docs_page: also write the markdown there (the docs page), or None.
        device: ``"cpu"``/``"cuda"``; default CUDA when available.
        repeats: timed runs per measurement (default 5, 3 when quick).
        log: progress printer.
    """
    names = FAMILIES if not only else only
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"only must name families from {FAMILIES}, got {unknown}")
    quick = quick or toy
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx = Context(quick=quick, toy=toy, device=dev, repeats=repeats or (3 if quick else 5),
                  budget_s=5.0 if toy else (10.0 if quick else 20.0), log=log)
    now = _dt.datetime.now()
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "mode": "toy" if toy else ("quick" if quick else "full"),
        "env": environment(dev),
        "families": {},
    }
    t_all = time.perf_counter()
    # The roofline feeds the encoder's "% of GEMM": run it first even when only the encoder is asked for.
    order = [n for n in FAMILIES if n in names]
    if "encoder" in order and "roofline" not in order:
        order.insert(0, "roofline")
    for name in order:
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            fam = importlib.import_module(f".{name}", __package__).run(ctx)
        except Exception as err:  # a family that cannot run (missing piece) is reported, not fatal
            fam = {"rows": [], "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
            log(f"[bench] {name} FAILED: {fam['error']}")
        fam["seconds"] = round(time.perf_counter() - t0, 2)
        results["families"][name] = fam
        log(f"[bench] {name} done in {fam['seconds']} s")
    results["total_seconds"] = round(time.perf_counter() - t_all, 2)
    results["env"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    md = to_markdown(results)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = results["date"] + ("" if results["mode"] == "full" else f"-{results['mode']}")
        (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        (out / f"{stem}.md").write_text(md)
        results["files"] = [str(out / f"{stem}.json"), str(out / f"{stem}.md")]
    if docs_page is not None:
        Path(docs_page).write_text(md)
    return results
