"""GET /runs and GET /intents: keyset pages in a stable order, filters, one SQL statement per call,
and a deterministic 400 that reads nothing and writes nothing for every bad parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import AsyncCursor

from intentd.api import reads
from intentd.config import Settings
from tests.conftest import row_counts

STATUSES = ["queued", "running", "waiting_input", "succeeded", "failed", "retries_exceeded"]


def _seed(conninfo: str, n: int, *, same_instant: bool = False, tag: str = "seed") -> list[str]:
    """n intents, each with a run; same_instant: one transaction, so all share created_at (ties)."""
    ids = []
    with psycopg.connect(conninfo) as conn:
        for i in range(n):
            intent_id = str(uuid.uuid4())
            status = STATUSES[i % len(STATUSES)]
            conn.execute("INSERT INTO app.intents (intent_id, goal) VALUES (%s, %s)", (intent_id, f"{tag} {i}"))
            conn.execute(
                "INSERT INTO app.runs (run_id, intent_id, workflow_id, status, next_action, recipe_name, workload,"
                " app_version) VALUES (%s, %s, %s, %s, %s, 'sandbox-default', '{}', 'it')",
                (
                    f"run-{intent_id}",
                    intent_id,
                    intent_id,
                    status,
                    "approve_plan" if status == "waiting_input" else None,
                ),
            )
            if not same_instant:
                conn.commit()
            ids.append(intent_id)
    return ids


@pytest.fixture(scope="module")
def seeded(db_settings: Settings) -> list[str]:
    return _seed(db_settings.database_url, 30, same_instant=True, tag="tie") + _seed(db_settings.database_url, 25)


def _walk(api: TestClient, path: str, key: str, limit: int, during: Any = None, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        resp = api.get(path, params=query)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"items", "nextCursor"} and len(page["items"]) <= limit
        seen += [item[key] for item in page["items"]]
        cursor = page["nextCursor"]
        if during is not None:
            during()
        if cursor is None:
            return seen


def _order(conninfo: str, sql: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [r[0] for r in conn.execute(sql)]


def test_run_pages_walk_every_run_once_in_a_stable_order_while_runs_are_added(
    api: TestClient, db_settings: Settings, seeded: list[str]
) -> None:
    url = db_settings.database_url
    expected = _order(url, "SELECT run_id FROM app.runs ORDER BY created_at DESC, run_id DESC")
    added: list[str] = []
    seen = _walk(api, "/runs", "runId", 7, during=lambda: added.extend(_seed(url, 1, tag="during")))
    assert len(added) > 5
    assert len(seen) == len(set(seen)), "a run was served twice"
    # Runs created during the walk are newer than the first page: the walk shows exactly the older ones.
    assert seen == expected


def test_intent_pages_walk_every_intent_once_with_its_run(
    api: TestClient, db_settings: Settings, seeded: list[str]
) -> None:
    url = db_settings.database_url
    expected = _order(url, "SELECT intent_id FROM app.intents ORDER BY created_at DESC, intent_id DESC")
    seen = _walk(api, "/intents", "intentId", 9)
    assert seen == expected
    first = api.get("/intents", params={"limit": 1}).json()["items"][0]
    assert set(first) == {"intentId", "goal", "goalTruncated", "createdAt", "runId", "status"}
    assert first["runId"] == f"run-{first['intentId']}"


def test_run_summary_has_the_fields_a_person_needs(api: TestClient, seeded: list[str]) -> None:
    items = api.get("/runs", params={"status": "waiting_input", "limit": 200}).json()["items"]
    assert items and all(i["status"] == "waiting_input" for i in items)
    assert set(items[0]) == {
        "runId", "workflowId", "intentId", "status", "nextAction", "lastStep", "retryCount", "recipeName",
        "planHash", "createdAt", "updatedAt", "finishedAt", "waitingSince",
    }  # fmt: skip
    assert all(i["nextAction"] == "approve_plan" and i["waitingSince"] == i["updatedAt"] for i in items)
    queued = api.get("/runs", params={"status": "queued", "limit": 1}).json()["items"][0]
    assert queued["waitingSince"] is None


def test_filters_select_by_status_list_intent_and_since(
    api: TestClient, db_settings: Settings, seeded: list[str]
) -> None:
    url = db_settings.database_url
    both = _walk(api, "/runs", "runId", 50, status="failed,succeeded")
    want = _order(
        url,
        "SELECT run_id FROM app.runs WHERE status IN ('failed', 'succeeded') ORDER BY created_at DESC, run_id DESC",
    )
    assert both == want and len(want) > 2
    one = api.get("/runs", params={"intentId": seeded[3]}).json()
    assert [i["runId"] for i in one["items"]] == [f"run-{seeded[3]}"] and one["nextCursor"] is None
    assert api.get("/runs", params={"intentId": "nope"}).json() == {"items": [], "nextCursor": None}
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT created_at FROM app.runs WHERE run_id = %s", (f"run-{seeded[40]}",)).fetchone()
    assert row is not None
    since = row[0].isoformat()
    newer = _walk(api, "/runs", "runId", 200, since=since)
    assert newer == _order(
        url, f"SELECT run_id FROM app.runs WHERE created_at >= '{since}' ORDER BY created_at DESC, run_id DESC"
    )
    assert f"run-{seeded[40]}" in newer and f"run-{seeded[0]}" not in newer
    intents = _walk(api, "/intents", "intentId", 200, since=since.replace("+00:00", "Z"))
    assert seeded[40] in intents and seeded[0] not in intents


BAD_RUN_QUERIES = [
    ({"cursor": ""}, "bad_cursor"),
    ({"cursor": "%%%"}, "bad_cursor"),
    ({"cursor": "r.1.zz"}, "bad_cursor"),
    ({"cursor": "r.1.abc"}, "bad_cursor"),
    ({"cursor": "r.-5.61"}, "bad_cursor"),
    ({"cursor": "r.123456789012345678.61"}, "bad_cursor"),
    ({"cursor": "i.1795887600123456.61"}, "bad_cursor"),
    ({"cursor": "r.1795887600123456.61.62"}, "bad_cursor"),
    ({"cursor": "r.1795887600123456." + "61" * 801}, "bad_cursor"),
    ({"limit": "0"}, "validation_error"),
    ({"limit": "201"}, "validation_error"),
    ({"limit": "ten"}, "validation_error"),
    ({"since": "yesterday"}, "bad_since"),
    ({"since": "2026-01-01"}, "bad_since"),
    ({"since": "2026-01-01T00:00:00"}, "bad_since"),
    ({"since": "2026-02-30T00:00:00Z"}, "bad_since"),
    ({"since": "1700000000"}, "bad_since"),
    ({"since": "2026-01-01T00:00:00+0100"}, "bad_since"),
    ({"status": "done"}, "validation_error"),
    ({"status": "queued,"}, "validation_error"),
    ({"intentId": "a\x00b"}, "validation_error"),
    ({"statusx": "queued"}, "unknown_parameter"),
    ([("status", "queued"), ("status", "failed")], "repeated_parameter"),
]


@pytest.mark.parametrize(("query", "code"), BAD_RUN_QUERIES)
def test_bad_run_list_query_is_400_and_writes_nothing(
    api: TestClient, db_settings: Settings, seeded: list[str], query: Any, code: str
) -> None:
    before = row_counts(db_settings.database_url)
    resp = api.get("/runs", params=query)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"} and resp.json()["error"]["code"] == code, resp.text
    assert row_counts(db_settings.database_url) == before


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"cursor": "r.1795887600123456.61"}, "bad_cursor"),
        ({"since": "soon"}, "bad_since"),
        ({"limit": "-1"}, "validation_error"),
        ({"status": "queued"}, "unknown_parameter"),
    ],
)
def test_bad_intent_list_query_is_400_and_writes_nothing(
    api: TestClient, db_settings: Settings, query: Any, code: str
) -> None:
    before = row_counts(db_settings.database_url)
    resp = api.get("/intents", params=query)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code, resp.text
    assert row_counts(db_settings.database_url) == before


class _CountingCursor(AsyncCursor[Any]):
    """Every statement the shim's read pool sends to PostgreSQL goes through a cursor's execute."""

    statements: ClassVar[list[str]] = []

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        _CountingCursor.statements.append(str(query))
        return await super().execute(query, *args, **kwargs)


@pytest.fixture
def counted_api(db_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from intentd.api.app import create_app

    opened = reads.open_pool

    def open_pool(settings: Settings) -> Any:
        pool = opened(settings)
        pool.kwargs["cursor_factory"] = _CountingCursor  # passed to each connection the pool opens
        return pool

    monkeypatch.setattr(reads, "open_pool", open_pool)
    with TestClient(create_app(db_settings.model_copy(update={"app_version": "it"}))) as client:
        client.get("/healthz")
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/runs?limit=5",
        "/runs?status=queued,failed&limit=3",
        "/intents?limit=4",
        "/intents?since=2020-01-01T00:00:00Z",
    ],
)
def test_each_list_call_is_one_sql_statement(counted_api: TestClient, seeded: list[str], path: str) -> None:
    first = counted_api.get(path)
    assert first.status_code == 200 and first.json()["nextCursor"], first.text
    for url in (path, f"{path}&cursor={first.json()['nextCursor']}"):
        _CountingCursor.statements.clear()
        assert counted_api.get(url).status_code == 200
        assert len(_CountingCursor.statements) == 1, _CountingCursor.statements


def test_an_edited_cursor_of_the_grammar_is_a_position_not_an_error(
    api: TestClient, db_settings: Settings, seeded: list[str]
) -> None:
    """Every schema-valid cursor is answered 200: the key is public, so an edited one pages from there."""
    first = api.get("/runs", params={"limit": 3}).json()
    _, micros, hex_id = first["nextCursor"].split(".")
    same = api.get("/runs", params={"limit": 3, "cursor": f"r.{micros}.{hex_id}"}).json()
    assert [i["runId"] for i in same["items"]] == _walk(api, "/runs", "runId", 200)[3:6]
    for cursor in ("r.0.00", "r.99999999999999999.ff00c3", f"r.{micros}.{'00' * 3}"):
        before = row_counts(db_settings.database_url)
        resp = api.get("/runs", params={"cursor": cursor, "limit": 2})
        assert resp.status_code == 200, resp.text
        assert row_counts(db_settings.database_url) == before
    assert api.get("/runs", params={"cursor": "r.0.00"}).json() == {"items": [], "nextCursor": None}


def test_a_wrong_method_on_intents_allows_both_list_and_create(api: TestClient) -> None:
    resp = api.request("OPTIONS", "/intents")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, POST", resp.headers
