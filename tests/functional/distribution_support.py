"""What the distribution tests share: the test venv's pip, run off the checkout, and a wheel built from a
folder and installed into a bare venv (no pip, no setuptools: only what installing the wheel brings).

Used by ``test_client_distribution.py`` and ``test_service_distribution.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT_S = 300


def off_the_checkout(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what would put the checkout or another venv on a child's path."""
    return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def pip(*args: str, cwd: Path) -> None:
    """The running venv's pip (``--python`` points it at another environment), with pip's configured index."""
    argv = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check", *args]
    result = subprocess.run(
        argv, env=off_the_checkout(os.environ), cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr


@dataclass(frozen=True)
class BareInstall:
    """A wheel and the bare venv it was installed into."""

    wheel: Path
    venv: Path
    workdir: Path  # where the venv's commands run: an empty folder, so neither the checkout nor a copy is on sys.path


def install_in_bare_venv(
    source: Path, root: Path, build: Sequence[str] = (), install: Sequence[str] = ()
) -> BareInstall:
    """Build ``source``'s wheel under ``root`` (with ``build``'s pip options) and install it (with ``install``'s)
    into a new venv there."""
    pip("wheel", "--no-deps", *build, "--wheel-dir", str(root / "dist"), str(source), cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    pip("--python", str(root / "venv" / "bin" / "python"), "install", *install, str(wheel), cwd=root)
    workdir = root / "work"
    workdir.mkdir()
    return BareInstall(wheel, root / "venv", workdir)
