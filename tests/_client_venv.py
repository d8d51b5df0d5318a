"""The client-only environment: ``pip install radserve`` without extras, beside numpy 2.

Built once under ``build/client-venv`` (the Makefile's ``test`` target runs this file; the test's fixture
calls :func:`ensure`, which rebuilds only when pyproject.toml changed). radserve is
installed editable, so the environment runs this checkout's code with the dependencies of a plain
``pip install radserve``; without requirements/constraints.txt, whose numpy < 2 is the server's.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "client-venv"
NUMPY = "numpy>=2"


def _fingerprint() -> str:
    digest = hashlib.sha256(NUMPY.encode())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def ensure(folder: Path = VENV) -> Path:
    """The client-only environment's Python, (re)built when its inputs changed.

    Args:
        folder: where the environment lives.

    Returns:
        The path of its ``python``.
    """
    python = folder / "bin" / "python"
    stamp = folder / ".radserve-stamp"
    if python.exists() and stamp.exists() and stamp.read_text() == _fingerprint():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "-e",
            ROOT,
            NUMPY,
        ],
        check=True,
        cwd=ROOT,
        timeout=900,
    )
    stamp.write_text(_fingerprint())
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else VENV))
