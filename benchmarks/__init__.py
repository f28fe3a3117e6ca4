"""pa3d benchmarks: ``python -m benchmarks`` (or ``make bench``) measures every family in one run.

Families (one module each): ``roofline`` (fp32/bf16 GEMM), ``grouping`` (FPS/kNN backends, propagation),
``losses`` (vectorised vs per-shape loop), ``encoder`` (pa3d fp32/bf16 vs the official-architecture baseline,
FLOPs and achieved rate, each repeat beside a GEMM), ``cputime`` (the same on one thread in CPU time: the
load-independent ratio, with a per-block profile), ``accuracy`` (bf16 vs fp32 on a briefly trained tiny
model), ``training`` (Stage 1 and Stage 2 step throughput and peak memory, Stage 2 against the official
step re-stated), ``segment`` (end-to-end ``segment()`` latency with a cached text bank), ``scaling`` (N from
2k to 100k with adaptive G).

Each figure is the median of repeated runs with min and max. Results go to ``benchmarks/results/<date>.json``
and ``<date>.md``; a full run also refreshes ``docs/benchmarks.md``. Speed targets are reported as measured
ratios with met / not met, never asserted in tests.
"""

from .report import to_markdown
from .runner import FAMILIES, run_benchmarks

__all__ = ["FAMILIES", "run_benchmarks", "to_markdown"]
