"""pa3d_cli: the ``pa3d`` command line, the application layer on top of the library packages.

``pa3d segment`` (zero-shot part segmentation of a file), ``pa3d build-text-bank``, ``pa3d precompute-teacher``
and ``pa3d info``. Each subcommand lives in its own module and is imported only when it runs.
"""

from .main import COMMANDS, main

__all__ = ["main", "COMMANDS"]
