"""The live pinned daemon matches the recorded contract (what `oc:daemon:contract` checks)."""

from __future__ import annotations

import pytest

from intentd.config import Settings
from intentd.oc import contract

pytestmark = pytest.mark.live


def test_live_daemon_has_no_breaking_drift(live_daemon: Settings) -> None:
    recorded_doc, recorded_agents = contract._load_recorded()
    health, live_doc, live_agents = contract.fetch(live_daemon)
    assert health["version"] == "1.18.33"
    findings = contract.compare_docs(recorded_doc, live_doc) + contract.compare_agents(recorded_agents, live_agents)
    assert [f for f in findings if f.breaking] == []


def test_live_daemon_refuses_callers_without_its_password(live_daemon: Settings) -> None:
    findings = contract.lock_findings(live_daemon)
    assert [f for f in findings if f.breaking] == []
    # Informational: opencode does not check Host, so against DNS rebinding the password is the defence.
    assert [f.where for f in findings if not f.breaking] in ([], ["Host header"])
