"""The client-only environment: ``pip install radserve`` without extras, beside numpy 2.

Built once under ``build/client-venv`` (the Makefile's ``test`` target runs this file beside the
project's own install; the test's fixture calls :func:`ensure`, which rebuilds only when pyproject.toml
changed). The dependencies of a plain ``pip install radserve`` are resolved together with numpy 2 (without
requirements/constraints.txt, whose numpy < 2 is the server's); radserve itself is then installed
editable, so the environment runs this checkout's code. That last step writes ``radserve.egg-info`` in the
checkout, as the project's own editable install does, so both take the same lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "client-venv"
NUMPY = "numpy>=2"
EDITABLE_LOCK = ROOT / "build" / ".editable-install.lock"  # the Makefile's install takes it too


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
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pip = [python, "-m", "pip", "install", "--quiet", "--no-compile"]
    subprocess.run([*pip, *dependencies, NUMPY], check=True, cwd=ROOT, timeout=900)
    EDITABLE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with EDITABLE_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([*pip, "--no-deps", "-e", ROOT], check=True, cwd=ROOT, timeout=900)
    stamp.write_text(_fingerprint())
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else VENV))
