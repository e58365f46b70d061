"""The import contracts (pyproject.toml ``[tool.importlinter]``) hold, and each one still catches what it forbids.

A contract that no longer matches anything (a package renamed, a layer or a contract
dropped) passes in silence, so the second test adds forbidden imports to a copy of the
tree and expects every contract broken, each by the import it forbids.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Contract id -> the imports, "importer -> imported", that must break it.
VIOLATIONS = {
    "layers": ["storage.probe -> jobs", "app.probe -> tasks", "inference.probe -> storage"],
    "client": ["yolo_jobs_client.probe -> config"],
    "tools": ["jobs.probe -> training"],
    "model-tools": ["evaluation.probe -> jobs"],
    "api-lean": ["app.probe -> torch"],
    "http-free-domain": ["jobs.probe -> flask"],
    "app-acyclic": ["app.cycle_a -> app.cycle_b", "app.cycle_b -> app.cycle_a"],
    "tasks-acyclic": ["tasks.cycle_a -> tasks.cycle_b", "tasks.cycle_b -> tasks.cycle_a"],
}
CYCLE_CONTRACTS = {"app-acyclic", "tasks-acyclic"}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(LINT_IMPORTS), "--no-logo", "--no-cache"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def contracts() -> dict[str, str]:
    """Each contract's id and name, as pyproject.toml declares them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract["name"] for contract in config["contracts"]}


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout


def test_each_contract_breaks_on_the_import_it_forbids(tmp_path: Path) -> None:
    assert set(contracts()) == set(VIOLATIONS), "a contract was added or removed: name the import that breaks it"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=_all_but_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    probes: dict[str, list[str]] = {}
    for violation in (v for listed in VIOLATIONS.values() for v in listed):
        importer, imported = violation.split(" -> ")
        probes.setdefault(importer, []).append(f"import {imported}\n")
    for module, lines in probes.items():
        (tmp_path / module.replace(".", "/")).with_suffix(".py").write_text("".join(lines))

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Contracts: 0 kept, {len(VIOLATIONS)} broken." in result.stdout, result.stdout
    reports = broken_contracts(result.stdout)
    for contract, name in contracts().items():
        reported = [violation for violation in VIOLATIONS[contract] if reported_as(violation) in reports[name]]
        # A cycle is reported by the one import that would break it; any other contract names each import.
        expected = VIOLATIONS[contract][:1] if contract in CYCLE_CONTRACTS else VIOLATIONS[contract]
        assert len(reported) >= len(expected), f"{contract}: {VIOLATIONS[contract]} not reported\n{result.stdout}"


def reported_as(violation: str) -> str:
    """How lint-imports names an import: whole, or relative to the package for a cycle inside it."""
    importer, imported = violation.split(" -> ")
    package = importer.rpartition(".")[0]
    if imported.rpartition(".")[0] == package:
        return f"{importer.removeprefix(package)} -> {imported.removeprefix(package)}"
    return violation


def broken_contracts(output: str) -> dict[str, str]:
    """Each broken contract's name and the imports reported under its underlined heading."""
    sections = re.split(r"^(.+)\n-+\n", output.split("Broken contracts\n", 1)[1], flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


def _all_but_python(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if not (name.endswith(".py") or (Path(folder) / name).is_dir())]
