"""`make audit`: pip-audit over the installed packages, failing whenever it could not check them.

pip-audit reports "No known vulnerabilities found" and exits 0 when its vulnerability
service answered 404 for every package (a registry mirror, a blocked network): it
audited nothing and said nothing. This wrapper runs it with JSON output and reads the
answer: the run passes only when every installed package (this project's own editable
install aside) was really looked up and none has a known vulnerability. Otherwise it
names what could not be checked, or what is vulnerable, and exits non-zero.

``python -m scripts.audit [pip-audit arguments…]``; extra arguments go to pip-audit
(``-s osv`` asks OSV instead of PyPI's JSON API).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

# The project's own editable install is not on any index, so pip-audit is told to skip it.
EDITABLE_SKIP_REASON = "distribution marked as editable"
# Where nothing could be checked, every package has the same reason: a few name it.
LISTED_UNCHECKED = 5


@dataclass(frozen=True)
class Verdict:
    """What one pip-audit report says: packages checked, packages it could not check, known vulnerabilities."""

    audited: list[str]
    unchecked: dict[str, str]
    vulnerable: dict[str, list[str]]

    @property
    def passed(self) -> bool:
        return bool(self.audited) and not self.unchecked and not self.vulnerable

    def summary(self) -> str:
        lines = [f"audit: {len(self.audited)} packages checked, {len(self.unchecked)} could not be checked"]
        lines += [f"  vulnerable: {name} ({', '.join(ids)})" for name, ids in sorted(self.vulnerable.items())]
        unchecked = sorted(self.unchecked.items())
        lines += [f"  not checked: {name}: {reason}" for name, reason in unchecked[:LISTED_UNCHECKED]]
        if len(unchecked) > LISTED_UNCHECKED:
            lines.append(f"  not checked: {len(unchecked) - LISTED_UNCHECKED} more")
        if not self.audited or self.unchecked:
            lines.append(
                "audit: FAILED: the vulnerability service did not answer for every package, so this run proves "
                "nothing. Run it where PyPI's JSON API (https://pypi.org/pypi/NAME/VERSION/json) or OSV "
                "(`make audit AUDIT_ARGS='-s osv'`, https://api.osv.dev) is reachable."
            )
        elif self.vulnerable:
            lines.append("audit: FAILED: known vulnerabilities above")
        else:
            lines.append("audit: passed")
        return "\n".join(lines)


def verdict_of(report: dict[str, Any]) -> Verdict:
    """Read pip-audit's ``-f json`` report."""
    audited: list[str] = []
    unchecked: dict[str, str] = {}
    vulnerable: dict[str, list[str]] = {}
    for dependency in report.get("dependencies", []):
        name = dependency["name"]
        reason = dependency.get("skip_reason")
        if reason == EDITABLE_SKIP_REASON:
            continue
        if reason is not None:
            unchecked[name] = reason
            continue
        audited.append(name)
        if dependency.get("vulns"):
            vulnerable[name] = [vuln["id"] for vuln in dependency["vulns"]]
    return Verdict(audited, unchecked, vulnerable)


def main(argv: list[str]) -> int:
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off", "--skip-editable"]
    finished = subprocess.run([*command, *argv], capture_output=True, text=True, check=False)
    # pip-audit exits 1 both for "vulnerabilities found" and for its own fatal errors (a service it cannot
    # reach): only a JSON report on stdout says it ran.
    try:
        report = json.loads(finished.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(finished.stderr)
        print(f"audit: FAILED: pip-audit did not finish (exit {finished.returncode}); see its message above")
        return 2
    verdict = verdict_of(report)
    print(verdict.summary())
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
