"""Child-process entry: ``python -m benchmarks._probe module:function '<json kwargs>'`` prints one JSON line.

The result gets ``peak_rss_mb`` (the child's max RSS) and ``base_rss_mb`` (its RSS after imports, before the
measured work) so the memory of one measurement is not mixed with any other.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    target, kwargs = argv[0], json.loads(argv[1])
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = fn(**kwargs)
    result["base_rss_mb"] = round(base, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
