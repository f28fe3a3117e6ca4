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


def _hwm_mb() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the address space made at exec, whereas ``ru_maxrss``
    keeps the (larger) parent's value across fork + exec on Linux, so it is used only as a fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str]) -> int:
    target, kwargs = argv[0], json.loads(argv[1])
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    base = _hwm_mb()
    result = fn(**kwargs)
    result["base_rss_mb"] = round(base, 1)
    result["peak_rss_mb"] = round(_hwm_mb(), 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
