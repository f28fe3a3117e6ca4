"""The fuzz suite's referee: every call gives a correct result or a ValueError/TypeError with a clear message.

``check(area, fn, *args, **kwargs)`` runs one case and returns ``("ok", result)`` or ``("error", exception)``;
any other exception fails the test with its traceback, and so does a ValueError/TypeError whose message is
empty or reads like a torch/Python internal (a shape error from deep inside, ``not implemented for 'Half'``,
...). The callers then assert what a correct result is. The number of cases run is printed at the end of the
session (``fuzz cases run: N``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

CASES: Counter[str] = Counter()

#: Areas that read files: a missing file or a folder given for a file may also raise FileNotFoundError & co.
FILE_AREAS = ("checkpoints", "text", "cli")

#: Phrases of errors raised from inside torch or Python rather than at pa3d's door: not a clear message.
INTERNAL = re.compile(
    "|".join(
        [
            r"not implemented for '",
            r"cannot reshape tensor",
            r"bitwise_\w+_cpu",
            r"expected scalar type",
            r"The size of tensor a",
            r"Expected all tensors to be on the same device",
            r"index \d+ is out of bounds",
            r"index out of range in self",
            r"max\(\): Expected",
            r"min\(\): Expected",
            r"mat1 and mat2",
            r"unsupported operand type",
            r"not supported between instances",
            r"object is not subscriptable",
            r"object is not iterable",
            r"has no attribute",
            r"where\(\) received an invalid combination",
            r"received an invalid combination of arguments",
            r"division by zero",
        ]
    )
)


def clear_message(err: BaseException) -> bool:
    text = str(err).strip()
    return bool(text) and not INTERNAL.search(text) and len(text) < 4000


def check(area: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Run one fuzz case; see the module docstring."""
    CASES[area] += 1
    expected: tuple[type[BaseException], ...] = (ValueError, TypeError)
    if area.startswith(FILE_AREAS):  # a missing file or a folder for a file is FileNotFoundError & co.
        expected += (FileNotFoundError, IsADirectoryError, NotADirectoryError)
    try:
        return "ok", fn(*args, **kwargs)
    except AssertionError:
        raise
    except expected as err:
        if not clear_message(err):
            raise AssertionError(f"{area}: unclear {type(err).__name__}: {err}") from err
        return "error", err
    except Exception as err:  # anything else is a traceback a user would see: fail with it, as an AssertionError
        raise AssertionError(f"{area}: {type(err).__name__} instead of a clear ValueError/TypeError: {err}") from err


@pytest.fixture(scope="session")
def fuzz():
    """The referee (session-scoped so that hypothesis tests may use it)."""
    return check


@pytest.fixture(scope="session")
def count_case():
    """``count_case(area)`` adds one case to the tally (for cases that do not go through the referee)."""

    def count(area: str) -> None:
        CASES[area] += 1

    return count


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    if CASES:
        areas = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases run: {sum(CASES.values())} ({areas})")
