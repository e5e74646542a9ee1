"""The shell commands in the README and docs/ work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- docs-test: (?P<mode>[^>]*?) -->\s*\n)?```bash\n(?P<body>.*?)```", re.S)
_STACK_UP = "python -m airflow_provider_dataworks.local --quiet up --ports auto >/dev/null\n"
_STACK_ENV = "source .dataworks-local/airflow.env\n"
_STACK_DOWN = "python -m airflow_provider_dataworks.local --quiet down\n"


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for number, match in enumerate(_BLOCK.finditer(text), start=1):
            mode = (match.group("mode") or "run").strip()
            found.append((f"{document.relative_to(REPO)}#{number}", mode, match.group("body")))
    return found


BLOCKS = _blocks()


def test_every_shell_block_is_run_or_skipped_with_a_reason():
    for name, mode, _ in BLOCKS:
        assert mode in ("run", "with-stack") or (mode.startswith("skip:") and len(mode) > 10), (
            f"{name}: mark it <!-- docs-test: run -->, <!-- docs-test: with-stack --> or "
            "<!-- docs-test: skip: <why> -->"
        )


@pytest.mark.parametrize(
    ("name", "mode", "body"),
    [b for b in BLOCKS if not b[1].startswith("skip:")],
    ids=[b[0] for b in BLOCKS if not b[1].startswith("skip:")],
)
def test_shell_block_runs(name, mode, body, tmp_path):
    script = body
    if mode == "with-stack":
        script = f"{_STACK_UP}trap '{_STACK_DOWN.strip()}' EXIT\n{_STACK_ENV}{body}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "DATAWORKS_LOCAL_HOME": str(tmp_path / ".dataworks-local"),
        }
    )

    finished = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert finished.returncode == 0, (
        f"{name} failed:\n{script}\n--- output ---\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
    )
