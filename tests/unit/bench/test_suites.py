"""Every suite ``make bench`` runs imports and has its ``run``: a renamed helper once broke ``bench.cli`` unseen."""

from __future__ import annotations

import importlib

import pytest

from bench.__main__ import SUITES


@pytest.mark.parametrize("name", SUITES)
def test_each_suite_imports_and_runs_by_name(name: str) -> None:
    assert callable(importlib.import_module(name).run)
