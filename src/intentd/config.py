"""The one configuration object: every environment variable intentd reads, read nowhere else.

Defaults describe the embedded set-up (`mise run db:up`); any PostgreSQL works via DATABASE_URL.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # PostgreSQL
    pghost: str = Field("127.0.0.1", validation_alias="PGHOST")
    pgport: int = Field(55432, validation_alias="PGPORT")
    database_url_env: str | None = Field(None, validation_alias="DATABASE_URL")
    system_database_url_env: str | None = Field(None, validation_alias="DBOS_SYSTEM_DATABASE_URL")
    dbos_system_schema: str = Field("dbos", validation_alias="DBOS_SYSTEM_SCHEMA")
    app_database: str = Field("app_local", validation_alias="APP_DATABASE")

    # Processes
    port: int = Field(3001, validation_alias="PORT")
    # The shim's bind address. Auth may be off only on a loopback address (api/auth.py refuses otherwise).
    host: str = Field("127.0.0.1", validation_alias="HOST")
    # Identity (docs/identity.md): "tokens" requires `Authorization: Bearer <token>` on every call.
    auth: Literal["off", "tokens"] = Field("off", validation_alias="INTENTD_AUTH")
    # Host header values accepted besides loopback ones (comma-separated, e.g. intentd.example:3001);
    # any other Host gets 421, which stops DNS rebinding.
    allowed_hosts_raw: str = Field("", validation_alias="INTENTD_ALLOWED_HOSTS")
    # Writes (POST) each authenticated principal may make per minute (a token bucket in the shim).
    write_rate_per_minute: int = Field(120, ge=1, validation_alias="INTENTD_WRITE_RATE")
    admin_port: int = Field(3002, validation_alias="ADMIN_PORT")
    app_version: str = Field("dev", validation_alias=AliasChoices("DBOS__APPVERSION", "INTENTD_APP_VERSION"))
    executor_id: str | None = Field(None, validation_alias=AliasChoices("INTENTD_EXECUTOR_ID", "DBOS__VMID"))
    # How often a worker polls the queues a run waits on to start or go on: the recipes' queues and its
    # own wake queue (a run's pickup latency, ~half of it on average).
    queue_poll_seconds: float = Field(0.05, gt=0, validation_alias="INTENTD_QUEUE_POLL_SECONDS")
    # ... and the queues no run waits on: branch deliveries and webhook deliveries. Each poll costs
    # the worker ~2 ms of CPU and PostgreSQL a few queries, whether or not anything is queued.
    background_queue_poll_seconds: float = Field(0.5, gt=0, validation_alias="INTENTD_BACKGROUND_QUEUE_POLL_SECONDS")
    # How long a starting worker waits for PostgreSQL to answer (a server still starting, restarting)
    # before it exits with status 69 and one line naming the server; 0: one try.
    db_wait_seconds: float = Field(60.0, ge=0, validation_alias="INTENTD_DB_WAIT_SECONDS")
    worker_heartbeat_seconds: float = Field(2.0, validation_alias="INTENTD_HEARTBEAT_SECONDS")
    # Fleet (docs/fleet.md): an executor whose heartbeat is older than this is taken over by a
    # surviving worker of the same app version (its generation bumped: the old process is fenced).
    takeover_seconds: float = Field(15.0, gt=0, validation_alias="INTENTD_TAKEOVER_SECONDS")
    # A run waiting for a human parks (workflow/park.py): no coroutine, thread or memory in the worker
    # until a message or its timer wakes it. Off: it waits in DBOS.recv_async in the worker.
    park_waits: bool = Field(True, validation_alias="INTENTD_PARK_WAITS")
    # How often the worker wakes its parked runs whose timer (the gate's reminder, deadline) is due.
    wake_poll_seconds: float = Field(1.0, gt=0, validation_alias="INTENTD_WAKE_POLL_SECONDS")
    max_body_bytes: int = Field(64 * 1024, validation_alias="INTENTD_MAX_BODY_BYTES")
    # Fault injection for the chaos drivers: every step body sleeps this long, widening the windows
    # in which a kill lands mid-step. Zero (off) everywhere else.
    fault_step_delay_seconds: float = Field(0.0, validation_alias="INTENTD_FAULT_STEP_DELAY")
    # ... and OC_MODE=mock's fake OpenCode takes this long per prompt (a call in flight to kill).
    fault_oc_delay_seconds: float = Field(0.0, ge=0, validation_alias="INTENTD_FAULT_OC_DELAY")
    # The crash matrix: SIGKILL the worker once per run at this named boundary (intentd.workflow.faults).
    fault_crash_at: str | None = Field(None, validation_alias="INTENTD_FAULT_CRASH_AT")
    # Diagnosis: trace heap allocations with this many frames (0: off); see worker/memory.py.
    tracemalloc_frames: int = Field(0, ge=0, le=100, validation_alias="INTENTD_TRACEMALLOC")
    # The worker's heap walks (admin /debug/memory/objects and /tasks): seconds of a stopped world
    # each, so off unless a diagnosis asks for them.
    debug_heap: bool = Field(False, validation_alias="INTENTD_DEBUG_HEAP")
    # Set by CI runners (CI=true): a live test that would skip (opencode missing) fails instead.
    # Kept as text: a runner's unusual value must not stop intentd from starting.
    ci_env: str = Field("", validation_alias="CI")
    # Telemetry (docs/observability.md). Spans are exported over OTLP/HTTP only when this is set
    # (the standard variable: its base URL, /v1/traces is appended); unset, tracing is off and costs
    # nothing. The test span file (intentd_dev.testing.span_file, loaded by name) is the other way on.
    otel_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    trace_file: Path | None = Field(None, validation_alias="INTENTD_TRACE_FILE")
    # Several shim processes: prometheus-client keeps each process's samples in files here (it reads
    # the variable itself, at import) and /metrics adds them up. Unset: one process, in memory.
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    # The shim's processes (uvicorn workers on one port; `python -m intentd.api --workers N` wins).
    # Each holds its own pools and LISTEN connection: docs/scaling.md counts them.
    shim_workers: int = Field(1, ge=1, le=64, validation_alias="INTENTD_SHIM_WORKERS")
    # The worker's, the shim's and the bench baseline's logging level.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", validation_alias="LOG_LEVEL")

    # OpenCode
    oc_mode: Literal["mock", "live"] = Field("mock", validation_alias="OC_MODE")
    oc_server_port: int = Field(4096, validation_alias="OC_SERVER_PORT")
    oc_base_url_env: str | None = Field(None, validation_alias="OC_BASE_URL")
    fixture_model_port: int = Field(4097, validation_alias="FIXTURE_MODEL_PORT")
    # The daemon's config: the shipped one points at the fixture model; point this at your own file
    # (a real provider and its API key variable) to use a real model, no code change needed.
    oc_config_path: Path = Field(
        REPO_ROOT / "config" / "opencode" / "opencode.json", validation_alias="OPENCODE_CONFIG"
    )
    # The daemon runs as this unprivileged account (made by `mise run setup`) in a bubblewrap jail,
    # with an allowlisted environment; name here (comma-separated) the extra variables it needs,
    # e.g. a real provider's API key: INTENTD_OC_PASS_ENV=ANTHROPIC_API_KEY.
    oc_user: str = Field("intentd-oc", validation_alias="INTENTD_OC_USER")
    oc_pass_env_raw: str = Field("", validation_alias="INTENTD_OC_PASS_ENV")
    # The daemon's password (random at each start, 0600); default .tmp/run/oc-daemon-<port>.password.
    oc_password_file_env: Path | None = Field(None, validation_alias="INTENTD_OC_PASSWORD_FILE")
    # Switch off what intentd never uses in the daemon (file watcher, LSP downloads, Claude Code and
    # external skills); 0 restores OpenCode's defaults (bench:live measures both).
    oc_lean: bool = Field(True, validation_alias="INTENTD_OC_LEAN")

    # Files
    tmp_dir: Path = Field(REPO_ROOT / ".tmp", validation_alias="INTENTD_TMP")
    recipes_file: Path = Field(REPO_ROOT / "config" / "recipes.toml", validation_alias="INTENTD_RECIPES")
    # The runs' workspaces (default <INTENTD_TMP>/workspaces): the one directory the daemon may write.
    workspaces_dir_env: Path | None = Field(None, validation_alias="INTENTD_WORKSPACES")
    # Where inputs.repo may point (os.pathsep- or comma-separated directories); empty: no repo input.
    repo_roots_raw: str = Field("", validation_alias="INTENTD_REPO_ROOTS")
    # Workspace retention (worker/retention.py): the workspace and private git dir of an ENDED run
    # (succeeded, canceled, rejected, expired) are removed this long after it ended; a failed run
    # keeps them while it can be retried. Seconds, or a number with s/m/h/d ("90s", "24h", "7d");
    # "off" keeps every workspace forever; 0 removes them at the next sweep. The patch, artifacts
    # and audit stay in the database either way.
    workspace_retention: str = Field(
        "7d", pattern=r"^(off|\d+(\.\d+)?[smhd]?)$", validation_alias="INTENTD_WORKSPACE_RETENTION"
    )
    retention_sweep_seconds: float = Field(300.0, gt=0, validation_alias="INTENTD_RETENTION_SWEEP_SECONDS")

    # Event streams (docs/events.md): a `: ping` comment this often on an idle stream, and a stream's
    # longest life (0: unlimited); a client resumes with Last-Event-ID, as EventSource does by itself.
    stream_ping_seconds: float = Field(15.0, gt=0, validation_alias="INTENTD_STREAM_PING_SECONDS")
    stream_max_seconds: float = Field(3600.0, ge=0, validation_alias="INTENTD_STREAM_MAX_SECONDS")
    # Webhooks (docs/events.md): a JSON list of {name, url, secretEnv, events?}, or "@/path/file.json".
    # The secret is read from the environment variable secretEnv names, never written in a file.
    webhooks_raw: str = Field("", validation_alias="INTENTD_WEBHOOKS")
    # Hosts a webhook URL may name besides loopback ones (comma-separated host names; no port).
    webhook_hosts_raw: str = Field("", validation_alias="INTENTD_WEBHOOK_HOSTS")
    webhook_timeout_seconds: float = Field(5.0, gt=0, validation_alias="INTENTD_WEBHOOK_TIMEOUT")
    webhook_max_attempts: int = Field(8, ge=1, validation_alias="INTENTD_WEBHOOK_MAX_ATTEMPTS")
    # The first retry's wait; each next one doubles it.
    webhook_backoff_seconds: float = Field(1.0, ge=0, validation_alias="INTENTD_WEBHOOK_BACKOFF")

    # The operator CLI (`intentd submit|runs|watch|approve …`, docs/cli.md): the shim it speaks to
    # and the bearer token it sends (INTENTD_AUTH=tokens). Kept out of repr: a token is a secret.
    cli_url: str = Field("http://127.0.0.1:3001", validation_alias="INTENTD_URL")
    cli_token: str | None = Field(None, validation_alias="INTENTD_TOKEN", repr=False)

    @property
    def database_url(self) -> str:
        """libpq/psycopg URL of the database holding schema `app` (and, by default, DBOS's)."""
        if self.database_url_env:
            return self.database_url_env
        # The embedded server's password stays in its 0600 file: libpq reads it (passfile), so it is
        # never in a URL, an environment variable or a command line.
        passfile = quote(str(self.pg_password_file))
        return f"postgresql://postgres@{self.pghost}:{self.pgport}/{self.app_database}?passfile={passfile}"

    @property
    def pg_password_file(self) -> Path:
        """The embedded PostgreSQL's password, a libpq password file (0600) made by `mise run db:up`."""
        return self.tmp_dir / "pg-password"

    @property
    def system_database_url(self) -> str:
        return self.system_database_url_env or self.database_url

    @property
    def sqlalchemy_url(self) -> str:
        return to_sqlalchemy_url(self.database_url)

    @property
    def sqlalchemy_system_url(self) -> str:
        return to_sqlalchemy_url(self.system_database_url)

    @property
    def ci(self) -> bool:
        return self.ci_env.strip().lower() not in ("", "0", "false", "no", "off")

    @property
    def oc_mode_given(self) -> bool:
        """OC_MODE was set (environment or argument) rather than defaulted: `mise run demo` picks
        live when the opencode binary is installed only when it was not."""
        return "oc_mode" in self.model_fields_set

    @property
    def oc_base_url(self) -> str:
        return self.oc_base_url_env or f"http://127.0.0.1:{self.oc_server_port}"

    @property
    def workspaces_dir(self) -> Path:
        return self.workspaces_dir_env or self.tmp_dir / "workspaces"

    @property
    def oc_password_file(self) -> Path:
        return self.oc_password_file_env or self.tmp_dir / "run" / f"oc-daemon-{self.oc_server_port}.password"

    @property
    def oc_pass_env(self) -> dict[str, str]:
        """The variables INTENTD_OC_PASS_ENV names, with their values here (unset ones left out)."""
        names = [n.strip() for n in self.oc_pass_env_raw.split(",") if n.strip()]
        return {n: os.environ[n] for n in names if n in os.environ}

    @property
    def git_dirs(self) -> Path:
        """The runs' git directories: the worker's alone, outside the workspaces root the daemon owns."""
        return self.tmp_dir / "git-dirs"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """INTENTD_ALLOWED_HOSTS, lower-cased; an entry without a port matches any port."""
        return tuple(h.strip().lower() for h in self.allowed_hosts_raw.split(",") if h.strip())

    @property
    def workspace_retention_seconds(self) -> float | None:
        """INTENTD_WORKSPACE_RETENTION in seconds; None for "off" (keep forever)."""
        text = self.workspace_retention
        if text == "off":
            return None
        unit = text[-1] if text[-1] in _DURATION_UNITS else "s"
        return float(text.rstrip("smhd")) * _DURATION_UNITS[unit]

    @property
    def repo_roots(self) -> tuple[Path, ...]:
        parts = self.repo_roots_raw.replace(",", os.pathsep).split(os.pathsep)
        return tuple(Path(p.strip()) for p in parts if p.strip())


def to_sqlalchemy_url(url: str) -> str:
    """Name the psycopg 3 driver explicitly; libpq-style URLs are accepted as given."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def webhook_secret(env_name: str) -> str | None:
    """A webhook's signing secret, from the environment variable its configuration names."""
    return os.environ.get(env_name)
