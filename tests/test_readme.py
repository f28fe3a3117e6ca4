"""The README is a test: its Python quick-start runs, its two commands come first, its links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_two_commands_come_first():
    first_block = re.search(r"^```(\w*)\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
    assert first_block and first_block.group(1) == "bash"
    lines = [ln.split("#")[0].strip() for ln in first_block.group(2).splitlines() if ln.strip()]
    assert lines == ["make demo", "make test"]


def test_quick_start_runs(tmp_path):
    blocks = python_blocks(README)
    assert blocks, "README has no python quick-start"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the block prints the label and score shapes: one per point
    assert "torch.Size([2048]) torch.Size([2048])" in proc.stdout, proc.stdout


def test_local_links_and_images_exist():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "README links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
