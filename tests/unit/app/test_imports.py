"""The modules every request goes through take part in no import cycle, so each can be imported (and tested)
on its own: the job service lives in ``jobs.service`` and counts nothing, so ``app.extensions`` no longer leads
back to itself through ``app.metrics``."""

from __future__ import annotations

import grimp
import pytest

# What builds the app's answers and holds its state: everything else imports these.
CORE = ["app.extensions", "app.errors", "app.refusals", "app.metrics", "app.forms", "app.job_actions"]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("app", "jobs", "accounts", "webhooks", "storage", "config", cache_dir=None)


@pytest.mark.parametrize("module", CORE)
def test_nothing_a_core_module_imports_leads_back_to_it(graph: grimp.ImportGraph, module: str) -> None:
    cycles = [
        chain
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if (chain := graph.find_shortest_chain(importer=imported, imported=module)) is not None
    ]
    assert cycles == [], [" -> ".join((module, *chain)) for chain in cycles]
