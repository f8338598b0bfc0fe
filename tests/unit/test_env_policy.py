"""policy:env-in-config passes on this repository and fails on each way of reading the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentd.config import REPO_ROOT
from intentd_dev import policies


def _tree(tmp_path: Path, source: str, rel: str = "src/intentd/planted.py") -> Path:
    (tmp_path / "src" / "intentd").mkdir(parents=True)
    (tmp_path / "src" / "intentd" / "config.py").write_text('import os\nX = os.environ.get("X")\n')
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return tmp_path


def test_the_repository_reads_its_environment_in_config_only() -> None:
    assert policies.check_env_in_config(REPO_ROOT) == []
    assert policies.main([]) == 0


@pytest.mark.parametrize(
    "source",
    [
        'import os\nLEVEL = os.environ.get("LOG_LEVEL", "INFO")\n',
        'import os\nLEVEL = os.getenv("LOG_LEVEL")\n',
        'from os import getenv\nLEVEL = getenv("LOG_LEVEL")\n',
        'import os\nLEVEL = os.environ["LOG_LEVEL"]\n',
        'from os import environ\nLIVE = "OC_MODE" in environ\n',
        'import os\nos.environ["OC_MODE"] = "live"\n',
        'import os\nos.environ.setdefault("DBOS__APPVERSION", "demo")\n',
    ],
)
def test_a_read_outside_config_fails(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, source, "src/intentd/worker/planted.py")
    found = policies.check_env_in_config(root)
    assert len(found) == 1 and found[0].startswith("src/intentd/worker/planted.py:")
    assert policies.main(["--root", str(root)]) == 1


@pytest.mark.parametrize(
    "source",
    [
        "import os\nenv = dict(os.environ)\n",
        "import os\nenv = os.environ.copy()\n",
        "import os\nenv = {**os.environ, 'PORT': '1'}\n",
    ],
)
def test_a_child_environment_copy_passes(tmp_path: Path, source: str) -> None:
    assert policies.check_env_in_config(_tree(tmp_path, source)) == []
