"""Every tutorial's code runs: the docs site is tested like the library.

Each page of ``docs/tutorials/`` (and ``docs/concepts.md``) is cut into its fenced blocks, in order. ```python
blocks run in ONE fresh interpreter per page (state carries from block to block, as for a reader going down the
page); ```bash blocks that call ``pa3d ...`` or ``python recipes/...`` run through ``bash -e`` with the
``.venv``'s bin first on PATH; other bash blocks (installs, ``make``) are shown, not run. A block preceded by
``<!-- skip -->`` is not run; the page must say why (only a hub download is allowed to be skipped).

Pages run in their own temporary directory, offline (``HF_HUB_OFFLINE=1``), on fixtures the page writes itself;
``recipes/`` is linked into that directory so that ``python recipes/patchalign3d.py`` works as from a clone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted((DOCS / "tutorials").glob("*.md")) + [DOCS / "concepts.md"]

FENCE = re.compile(r"^(?P<skip><!-- skip -->\s*\n(?:\s*\n)*)?```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$",
                   re.MULTILINE | re.DOTALL)
RUNNABLE_BASH = re.compile(r"^\s*(pa3d\s|python\s+recipes/)", re.MULTILINE)

# The driver executes the page's blocks in order in one namespace; bash blocks go through subprocess.
DRIVER = r"""
import json, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1]))
ns = {"__name__": "__tutorial__"}
for i, (lang, code, line) in enumerate(blocks):
    print(f"--- block {i} ({lang}, line {line})", flush=True)
    if lang == "python":
        try:
            exec(compile(code, f"<{sys.argv[2]} line {line}>", "exec"), ns)
        except BaseException:
            traceback.print_exc()
            sys.exit(f"python block at line {line} failed")
    else:
        rc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code]).returncode
        if rc:
            sys.exit(f"bash block at line {line} exited {rc}")
"""


def extract_blocks(text: str) -> list[tuple[str, str, int, bool]]:
    """``(lang, code, line, skipped)`` of every fenced block, in order."""
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        out.append((m.group("lang"), m.group("code"), line, bool(m.group("skip"))))
    return out


def runnable(blocks):
    keep = []
    for lang, code, line, skipped in blocks:
        if skipped:
            continue
        if lang == "python" or (lang == "bash" and RUNNABLE_BASH.search(code)):
            keep.append((lang, code, line))
    return keep


def test_extract_blocks_finds_skips_and_bash():
    text = "x\n```python\na = 1\n```\n<!-- skip -->\n```python\nnope()\n```\n```bash\npip install x\n```\n" \
           "```bash\npa3d info\n```\n"
    blocks = extract_blocks(text)
    assert [(b[0], b[3]) for b in blocks] == [("python", False), ("python", True), ("bash", False), ("bash", False)]
    assert [b[1] for b in runnable(blocks)] == ["a = 1\n", "pa3d info\n"]


def test_tutorials_exist_and_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    names = [p.name for p in PAGES if p.parent.name == "tutorials"]
    assert len(names) == 6, names
    for name in names:
        assert f"tutorials/{name}" in nav, f"{name} is missing from mkdocs.yml nav"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_code_runs(page, tmp_path):
    text = page.read_text()
    blocks = extract_blocks(text)
    skipped = [b for b in blocks if b[3]]
    if skipped:  # a skipped block must be explained on the page
        assert "not run" in text.lower() or "not executed" in text.lower(), f"{page.name} skips a block silently"
    todo = runnable(blocks)
    if page.parent.name == "tutorials":
        assert todo, f"{page.name} has no executed code"
    if not todo:
        pytest.skip(f"{page.name} has no code to run")
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "blocks.json").write_text(json.dumps(todo))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env.update(
        PATH=bindir + os.pathsep + env.get("PATH", ""),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PA3D_CACHE=str(tmp_path / "cache"),
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    proc = subprocess.run([sys.executable, "driver.py", "blocks.json", page.name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{page.name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
