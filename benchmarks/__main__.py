"""``python -m benchmarks [--only NAME ...] [--quick]``: run the benchmarks and write the results files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .report import to_markdown
from .runner import DOCS_PAGE, FAMILIES, RESULTS_DIR, run_benchmarks

__all__ = ["main", "render_docs"]


def render_docs(results_dir: Path, page: Path) -> int:
    """Write ``page`` from the newest full-run ``<date>.json`` in ``results_dir``."""
    full = sorted(f for f in results_dir.glob("*.json") if f.stem.count("-") == 2)
    if not full:
        print(f"[bench] no full-run results in {results_dir}", file=sys.stderr)
        return 1
    md = to_markdown(json.loads(full[-1].read_text()))
    page.write_text(md)
    full[-1].with_suffix(".md").write_text(md)
    print(f"[bench] wrote {page} and {full[-1].with_suffix('.md')} from {full[-1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", action="append", choices=FAMILIES, metavar="NAME",
                   help=f"run only this family (repeatable): {', '.join(FAMILIES)}")
    p.add_argument("--quick", action="store_true", help="reduced sizes and repeats")
    p.add_argument("--toy", action="store_true", help="tiny sizes (the smoke test)")
    p.add_argument("--out-dir", default=str(RESULTS_DIR), help="results folder (default benchmarks/results)")
    p.add_argument("--docs", default=None,
                   help="also write the markdown here (default: docs/benchmarks.md for a full run of all families)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    p.add_argument("--render-docs", action="store_true",
                   help="only regenerate docs/benchmarks.md (and the results .md) from the latest full results JSON, "
                        "measuring nothing")
    args = p.parse_args(argv)
    if args.render_docs:
        return render_docs(Path(args.out_dir), Path(args.docs or DOCS_PAGE))
    docs = args.docs
    if docs is None and not (args.quick or args.toy or args.only):
        docs = str(DOCS_PAGE)
    res = run_benchmarks(args.only, quick=args.quick, toy=args.toy, out_dir=args.out_dir, docs_page=docs,
                         device=args.device, repeats=args.repeats)
    for f in res.get("files", []):
        print(f"[bench] wrote {f}")
    if docs:
        print(f"[bench] wrote {docs}")
    failed = [n for n, f in res["families"].items() if f.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
