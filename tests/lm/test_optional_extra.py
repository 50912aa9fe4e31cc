"""Without the ``unikd[lm]`` extra: ``unikd`` and its help still work; unikd.lm names the extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# Blocks the import of transformers/tokenizers in a fresh interpreter (a None entry makes import fail).
BLOCK = "import sys; sys.modules.update(transformers=None, tokenizers=None); "


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_works_without_the_extra():
    done = _python("from unikd.cli import main; main(['lm-distill', '--help'])")
    assert done.returncode == 0, done.stderr
    assert "steps=300" in done.stdout and "methods=[ce,kd,reverse_kl,taid,nkd,dkd]" in done.stdout


def test_import_names_the_extra():
    done = _python("from unikd.lm import DistillationTrainer")
    assert done.returncode != 0
    assert "pip install 'unikd[lm]'" in done.stderr


def test_cli_reports_the_missing_extra():
    args = "['lm-distill', '--quick', '--out', '/nonexistent/x']"
    done = _python(f"from unikd.cli import main; raise SystemExit(main({args}))")
    assert done.returncode == 1
    assert "unikd lm-distill: error:" in done.stderr and "unikd[lm]" in done.stderr
