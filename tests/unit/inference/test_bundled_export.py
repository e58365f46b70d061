"""The bundled model's OpenVINO export, kept in the repository beside the .pt, is the export of those weights.

CPU workers run the export, installed without PyTorch (the ``worker-cpu`` extra): a ``.pt`` retrained and committed
without its new export would leave them on the old weights' export (or, were the digest not checked, on PyTorch they
do not have). ``make model`` rebuilds the export, which records the digest of the weights it was made from; this
checks that digest at once. That its predictions still agree with the ``.pt``'s is
``tests/functional/test_backends.py``.
"""

from __future__ import annotations

import subprocess

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from inference.backends import OPENVINO, Choice, choose, export_source, openvino_export_of, sha256_of

EXPORT = openvino_export_of(str(BUNDLED_MODEL))


def test_the_bundled_export_was_made_from_the_bundled_weights() -> None:
    assert export_source(EXPORT) == sha256_of(BUNDLED_MODEL), "make model rebuilds the export of new weights"
    assert choose(str(BUNDLED_MODEL), "cpu") == Choice(str(EXPORT), OPENVINO)


def test_the_bundled_export_is_not_ignored_by_git() -> None:
    """What git ignores is neither committed nor in the wheel (which ships the export: setup.cfg's package_data)."""
    files = sorted(str(path.relative_to(PROJECT_ROOT)) for path in EXPORT.iterdir())
    assert {name.rsplit(".", 1)[-1] for name in files} == {"xml", "bin", "yaml"}
    checked = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", *files], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 1, f"ignored: {checked.stdout}"
