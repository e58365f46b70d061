"""``make audit`` passes only when pip-audit really looked every package up (issue 22, item 11)."""

from __future__ import annotations

import os
import subprocess
import sys

from scripts.audit import EDITABLE_SKIP_REASON, verdict_of

NOT_FOUND = "Dependency not found on PyPI and could not be audited: {} ({})"


def skipped(name: str, version: str) -> dict[str, str]:
    """A package as pip-audit reports it when the service answered 404 (the shape of its ``-f json``)."""
    return {"name": name, "skip_reason": NOT_FOUND.format(name, version)}


def test_a_report_of_nothing_but_skips_fails_though_pip_audit_found_no_vulnerability() -> None:
    report = {"dependencies": [skipped("flask", "3.1.0"), skipped("celery", "5.7.0")], "fixes": []}

    verdict = verdict_of(report)

    assert not verdict.passed
    assert verdict.audited == []
    assert set(verdict.unchecked) == {"flask", "celery"}
    assert "FAILED" in verdict.summary() and "not checked: celery" in verdict.summary()


def test_one_unchecked_package_fails_a_run_that_checked_the_rest() -> None:
    report = {
        "dependencies": [{"name": "flask", "version": "3.1.0", "vulns": []}, skipped("celery", "5.7.0")],
        "fixes": [],
    }

    assert not verdict_of(report).passed


def test_every_package_checked_and_clean_passes_with_the_editable_project_left_out() -> None:
    report = {
        "dependencies": [
            {"name": "flask", "version": "3.1.0", "vulns": []},
            {"name": "celery", "version": "5.7.0", "vulns": []},
            {"name": "yolo-jobs", "skip_reason": EDITABLE_SKIP_REASON},
        ],
        "fixes": [],
    }

    verdict = verdict_of(report)

    assert verdict.passed, verdict.summary()
    assert verdict.audited == ["flask", "celery"]
    assert verdict.summary().endswith("audit: passed")


def test_a_known_vulnerability_fails_and_is_named() -> None:
    vuln = {"id": "PYSEC-2023-62", "fix_versions": ["2.3.2"], "aliases": [], "description": ""}
    report = {"dependencies": [{"name": "flask", "version": "2.3.1", "vulns": [vuln]}], "fixes": []}

    verdict = verdict_of(report)

    assert not verdict.passed
    assert "vulnerable: flask (PYSEC-2023-62)" in verdict.summary()


def test_an_unreachable_service_fails_the_real_pip_audit_run() -> None:
    """The real pip-audit, every connection sent to a proxy on a closed loopback port: no service answers."""
    proxy = "http://127.0.0.1:9"
    env = {**os.environ, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    finished = subprocess.run(
        [sys.executable, "-m", "scripts.audit", "--timeout", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert finished.returncode != 0, finished.stdout
    assert "audit: FAILED" in finished.stdout, finished.stdout + finished.stderr
