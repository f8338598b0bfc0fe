"""Each OpenCode policy passes on this repository and fails on a planted violation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from intentd.config import REPO_ROOT
from intentd.oc import policies


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the parts of the repository the policies read."""
    shutil.copytree(REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    return tmp_path


def _plant(tree: Path, rel: str, text: str) -> None:
    path = tree / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("name", sorted(policies.CHECKS))
def test_the_repository_passes(name: str) -> None:
    assert policies.CHECKS[name](REPO_ROOT) == []
    assert policies.main([name]) == 0


def test_the_copy_passes_before_planting(tree: Path) -> None:
    assert all(check(tree) == [] for check in policies.CHECKS.values())


@pytest.mark.parametrize(
    "source",
    [
        "import os\nURL = os.environ['OC_BASE_URL']\n",
        "import os\nURL = os.getenv('OC_BASE_URL')\n",
        "from intentd.config import get_settings\nURL = get_settings().oc_base_url\n",
        "import httpx\n\ndef go():\n    return httpx.post('http://127.0.0.1:4096/session', json={})\n",
    ],
)
def test_oc_boundary_catches_a_second_opencode_client(tree: Path, source: str) -> None:
    _plant(tree, "src/intentd/workflow/steps/sneaky.py", source)
    violations = policies.check_oc_boundary(tree)
    assert violations and "sneaky.py" in violations[0]
    assert policies.main(["oc-boundary", "--root", str(tree)]) == 1


def test_oc_boundary_allows_the_wrapper_itself(tree: Path) -> None:
    _plant(tree, "src/intentd/oc/extra.py", "import httpx\nPATH = '/session'\n")
    assert policies.check_oc_boundary(tree) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.update(autoupdate=True), "autoupdate"),
        (lambda c: c.update(share="manual"), "share"),
        (lambda c: c["agent"]["plan"]["permission"].update(bash="allow"), "bash"),
        (lambda c: c["agent"]["plan"]["permission"].pop("edit"), "edit"),
        (lambda c: c["agent"]["plan"]["tools"].update(write=True), "write"),
        (lambda c: c["provider"]["fixture"]["options"].update(apiKey="sk-live-1234567890abcdefghij"), "apiKey"),
        (lambda c: c["provider"]["fixture"]["options"].update(apiKey="hunter2"), "apiKey"),
    ],
)
def test_oc_config_catches_a_weakened_config(tree: Path, edit: object, expected: str) -> None:
    path = tree / "config" / "opencode" / "opencode.json"
    config = json.loads(path.read_text())
    edit(config)  # type: ignore[operator]
    path.write_text(json.dumps(config))
    violations = policies.check_oc_config(tree)
    assert any(expected in v for v in violations), violations
    assert policies.main(["oc-config", "--root", str(tree)]) == 1


def test_oc_config_accepts_env_references_for_keys(tree: Path) -> None:
    path = tree / "config" / "opencode" / "opencode.json"
    config = json.loads(path.read_text())
    config["provider"]["fixture"]["options"]["apiKey"] = "{env:ANTHROPIC_API_KEY}"
    path.write_text(json.dumps(config))
    assert policies.check_oc_config(tree) == []


@pytest.mark.parametrize(
    "source",
    [
        "BODY = {'title': 't', 'parentID': 'ses_1'}\n",
        "def make(model):\n    return model(title='t', parentID='ses_1')\n",
    ],
)
def test_no_parentid_catches_a_child_session(tree: Path, source: str) -> None:
    _plant(tree, "src/intentd/workflow/steps/child.py", source)
    violations = policies.check_no_parentid(tree)
    assert violations and "child.py" in violations[0]
    assert policies.main(["no-parentid", "--root", str(tree)]) == 1


def test_no_parentid_catches_a_request_model_field(tree: Path) -> None:
    models = tree / "src" / "intentd" / "oc" / "models.py"
    text = models.read_text().replace(
        "    title: str\n    permission: list[PermissionRule] | None = None\n",
        '    title: str\n    permission: list[PermissionRule] | None = None\n    parent: str | None = Field(None, alias="parentID")\n',
    )
    assert text != models.read_text()
    models.write_text(text)
    assert any("SessionCreate" in v for v in policies.check_no_parentid(tree))


def test_docstrings_may_explain_the_rule(tree: Path) -> None:
    _plant(tree, "src/intentd/workflow/steps/doc.py", '"""We never send parentID (#8528)."""\n')
    assert policies.check_no_parentid(tree) == []
