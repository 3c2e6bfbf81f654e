"""Settings: the ``"jobs"`` key of the app's settings.json (README, "Settings").

Raw JSON is validated into frozen models (:mod:`pmjobsd.core.model`); every problem is
reported at once with its JSON path (``jobs.definitions.log_rotation.cron:
...``).  Problems inside one job definition disable that job only; problems
elsewhere make the whole ``jobs`` object fall back to the defaults (or, on
reload, to the last good settings — that choice is the daemon's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pmjobsd.app.paths import AppPaths
from pmjobsd.core import cron, registry
from pmjobsd.core.model import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pmjobsd.core.outcomes import Overlap
from pmjobsd.core.privacy import EMAIL
from pmjobsd.core.registry import JobFunction, JobMetric, JobSpec, PathRule, RegistryError
from pmjobsd.core.settings_file import FileState, read_settings_file

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration such as '90s', '15m', '6h'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"expected seconds or a duration such as '90s', '15m', '6h', got {value!r}")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION.pattern}]}),
]


# Inline in the schema (an enum would become a $ref), as `pmjobsd config schema` has always shown it.
_InlineOverlap = Annotated[
    Overlap, WithJsonSchema({"enum": [overlap.value for overlap in Overlap], "title": "Overlap", "type": "string"})
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backoff(_Frozen):
    """Delay before retry n: ``min(initial * factor**(n-1), max)``, plus jitter."""

    initial: Duration = 30.0
    factor: float = Field(2.0, ge=1.0, le=10.0)
    max: Duration = 3600.0

    def delay(self, retry_number: int) -> float:
        return min(self.initial * self.factor ** max(0, retry_number - 1), self.max)


class JobDefinition(_Frozen):
    """One job's scheduling rules (README, "Settings")."""

    cron: str = Field(description="5 fields, 6 with seconds first, or @hourly-style macro")
    enabled: bool = True
    timeout: Duration = Field(900.0, gt=0, description="seconds before the run is cancelled and recorded as TIMEOUT")
    retries: int = Field(0, ge=0, le=20, description="extra attempts after a FAIL or TIMEOUT")
    backoff: Backoff = Backoff()
    jitter: Duration = Field(0.0, description="random delay up to this many seconds before each scheduled run")
    overlap: _InlineOverlap = Field(
        Overlap.SKIP, description="when a slot comes while the job still runs: skip it, queue one run, or run alongside"
    )
    catch_up: bool = Field(True, description="run once after start when slots were missed (or it never ran)")
    callable: str | None = Field(None, description="'module:function' for jobs that are not built in")
    options: dict[str, Any] = Field(default_factory=dict, description="the job's own options, validated by the job")
    allow_outside_paths: bool = Field(
        False, description="let this job's options name files outside the app's folders, or folders of other users"
    )
    scope: Literal["vault", "device"] = Field(
        "device",
        description="with jobs.coordination: 'vault' runs once per slot in the group, 'device' on every machine",
    )
    on_holder_lost: Literal["retry", "skip"] = Field(
        "skip", description="a vault job whose holder died mid-run: run the slot again elsewhere, or skip it"
    )
    when_engine_down: Literal["skip", "run_local"] | None = Field(
        None, description="a vault job while Redis is unreachable; default: jobs.coordination.when_engine_down"
    )

    @field_validator("cron")
    @classmethod
    def _cron_readable(cls, value: str) -> str:
        try:
            cron.normalise(value)
        except cron.CronError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("callable")
    @classmethod
    def _callable_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"expected 'module:function', got {value!r}")
        return value


def _notification_url(url: str) -> str:
    """A target must at least parse as a URL with a scheme; the error never quotes it (it may hold a token)."""
    from urllib.parse import urlsplit

    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ValueError(f"not a readable URL ({exc})") from None
    if not scheme:
        raise ValueError("expected a notification URL such as 'json://host/path' or 'mailtos://...'")
    return url


NotificationUrl = Annotated[str, AfterValidator(_notification_url)]


class Alerts(_Frozen):
    desktop: bool = True
    targets: list[NotificationUrl] = Field(default_factory=list, description="apprise URLs notified when a job fails")
    escalate_after: int = Field(2, ge=1, description="consecutive failures before escalation_targets are told too")
    escalation_targets: list[NotificationUrl] = Field(default_factory=list)
    allow_remote: bool = Field(False, description="allow alerts to leave the machine (webhooks, e-mail, chat)")
    repeat_after: Duration | None = Field(None, description="re-announce a job that keeps failing after this long")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for signing generic JSON webhooks")


class Metrics(_Frozen):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=1, le=65535)
    allow_remote: bool = Field(False, description="allow a non-loopback metrics address")
    textfile: str | None = Field(None, description="node_exporter textfile (.prom) written after each run")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to read /v1/jobs")
    health_grace: Duration = Field(
        10.0,
        ge=0,
        description="/healthz fails when the scheduler loop's heartbeat is older than 2 x wake_interval + this",
    )


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class Coordination(_Frozen):
    """Several machines, one vault: vault-scoped jobs run once per slot in ``group`` (docs/coordination.md)."""

    backend: Literal["redis"] = "redis"
    url: str = Field(description="redis://, rediss:// (TLS) or unix:// address of the Redis server")
    group: str = Field(pattern=_NAME, description="the daemons that share one vault")
    member: str | None = Field(None, pattern=_NAME, description="this daemon's name in the group; default: host name")
    lease: Duration = Field(30.0, ge=1, le=3600, description="how long a claim lives without renewal")
    allow_remote: bool = Field(False, description="allow a Redis server that is not on this machine")
    when_engine_down: Literal["skip", "run_local"] = Field(
        "skip", description="vault jobs while Redis is unreachable: skip (WARN and alert) or run on this machine"
    )

    @field_validator("url")
    @classmethod
    def _engine_url(cls, value: str) -> str:
        from pmjobsd.coord.engine import check_url

        return check_url(value)

    @model_validator(mode="after")
    def _remote_engine(self) -> Coordination:
        from pmjobsd.coord.engine import is_loopback

        if not self.allow_remote and not is_loopback(self.url):
            raise ValueError("url is not on this machine; set jobs.coordination.allow_remote to true to allow it")
        return self

    def member_name(self) -> str:
        """``member``, or this machine's host name (its first label)."""
        import socket

        return self.member or socket.gethostname().split(".")[0] or "localhost"


class Retention(_Frozen):
    log_days: int = Field(30, ge=1)
    compress_after_days: int = Field(7, ge=0)
    history_days: int = Field(30, ge=1)


class PathOverrides(_Frozen):
    data_dir: str | None = None
    cache_dir: str | None = None
    log_dir: str | None = None


class JobsSettings(_Frozen):
    """The validated ``"jobs"`` object, without its definitions (see LoadedSettings.jobs)."""

    timezone: str | None = Field(None, description="IANA zone for cron expressions; default: the system zone")
    max_workers: int = Field(4, ge=1, le=64)
    wake_interval: Duration = Field(
        60.0, gt=0, le=3600, description="longest sleep; bounds how late a suspend or clock jump is noticed"
    )
    shutdown_grace: Duration = Field(20.0, ge=0, description="how long running jobs get to finish on stop")
    max_abandoned_threads: int = Field(8, ge=1, description="timed-out threads tolerated before a clean restart")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    alerts: Alerts = Alerts()
    metrics: Metrics = Metrics()
    retention: Retention = Retention()
    paths: PathOverrides = PathOverrides()
    coordination: Coordination | None = Field(None, description="run vault jobs once per slot across machines")
    allow_outside_paths: bool = Field(
        False, description="let jobs.paths and every job's options name places outside the app's folders"
    )
    definitions: dict[str, dict[str, Any]] = Field(default_factory=dict, description="job name -> JobDefinition")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r}; expected an IANA name such as 'Europe/Berlin'"
                ) from None
        return value

    def zone(self):
        """The zone cron expressions are evaluated in."""
        if self.timezone:
            return ZoneInfo(self.timezone)
        import tzlocal

        return tzlocal.get_localzone()


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ResolvedJob:
    """A job ready to schedule: its definition, function and validated options."""

    name: str
    definition: JobDefinition
    func: JobFunction
    options: Any
    builtin: bool
    schedule: cron.CronSchedule
    description: str = ""
    run_at_first_start: bool = True  # catch up even when it never ran (see JobSpec)
    metrics: tuple[JobMetric, ...] = ()  # the named metrics its JobSpec declares


@dataclass(frozen=True)
class LoadedSettings:
    """The outcome of reading a settings file: never raises, always usable."""

    source: Path
    settings: JobsSettings
    jobs: Mapping[str, ResolvedJob]
    job_errors: Mapping[str, tuple[ConfigIssue, ...]] = field(default_factory=dict)
    issues: tuple[ConfigIssue, ...] = ()
    fatal: bool = False  # True: the "jobs" object was unusable and defaults were used
    app_settings: Mapping[str, Any] = field(default_factory=dict)
    state: FileState = FileState.MISSING  # what reading the file found
    fingerprint: tuple[Any, ...] = ()  # content, owner and mode of what was read (settings_file.fingerprint)
    fixes: tuple[str, ...] = ()  # the commands that make an untrusted settings file trusted

    @property
    def ok(self) -> bool:
        return not self.issues


def _issues_from(exc: ValidationError, prefix: str) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors():
        path = ".".join([prefix, *(str(part) for part in error["loc"])]) if error["loc"] else prefix
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        issues.append(ConfigIssue(path, message))
    return issues


def _merge(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _entries(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(item) for item in value]


def _within(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _foreign_owner(path: str) -> int | None:
    """The owner of ``path`` when it exists and is neither us nor root."""
    try:
        uid = os.stat(os.path.expanduser(path)).st_uid
    except OSError:
        return None
    return None if uid in (os.getuid(), 0) else uid


def _path_issues(spec: JobSpec, options: Any, prefix: str, folders: AppPaths) -> list[ConfigIssue]:
    """Entries of ``spec.path_options`` that reach outside the app's folders or into another user's."""
    issues = []
    roots = [os.path.realpath(p) for p in (folders.data_dir, folders.config_dir, folders.cache_dir, folders.log_dir)]
    opt_in = f"set {prefix}.allow_outside_paths to true to allow it"
    for key, rule in spec.path_options.items():
        value = options.get(key) if isinstance(options, Mapping) else getattr(options, key, None)
        for index, entry in enumerate(_entries(value)):
            where = f"{prefix}.options.{key}.{index}"
            if rule is PathRule.INSIDE_APP:
                candidate = os.path.expanduser(entry)
                if not os.path.isabs(candidate):  # relative names are in the log folder
                    candidate = os.path.join(folders.log_dir, candidate)
                if not _within(candidate, roots):
                    issues.append(ConfigIssue(where, f"{entry!r} is outside the app's folders; {opt_in}"))
            elif (uid := _foreign_owner(entry)) is not None:
                issues.append(ConfigIssue(where, f"{entry!r} is owned by uid {uid}, not by you; {opt_in}"))
    return issues


def _resolve_job(
    name: str, raw: Any, settings: JobsSettings, folders: AppPaths, import_jobs: bool
) -> tuple[ResolvedJob | None, list[ConfigIssue]]:
    prefix = f"jobs.definitions.{name}"
    if not isinstance(raw, Mapping):
        return None, [ConfigIssue(prefix, f"expected an object, got {type(raw).__name__}")]
    spec: JobSpec | None = None
    if name in registry.BUILTIN_JOBS:
        if raw.get("callable"):
            return None, [
                ConfigIssue(f"{prefix}.callable", f"{name!r} is a built-in job; give a user job another name")
            ]
        try:
            spec = registry.load_builtin(name)
        except RegistryError as exc:
            return None, [ConfigIssue(prefix, str(exc))]
        raw = _merge({"enabled": spec.enabled_by_default, **spec.defaults}, raw)
    elif not raw.get("callable"):
        return None, [ConfigIssue(prefix, f"unknown job {name!r}: not built in and no 'callable' given")]
    try:
        definition = JobDefinition.model_validate(raw)
    except ValidationError as exc:
        return None, _issues_from(exc, prefix)
    issues: list[ConfigIssue] = []
    options: Any = dict(definition.options)
    if spec is not None and spec.options_model is not None:
        try:
            options = spec.options_model.model_validate(definition.options)
        except ValidationError as exc:
            issues += _issues_from(exc, f"{prefix}.options")
    if spec is not None and not issues and not (definition.allow_outside_paths or settings.allow_outside_paths):
        issues += _path_issues(spec, options, prefix, folders)
    # A job that is not built in has a callable (checked above): `or ""` only tells mypy so.
    reference = definition.callable or ""
    func: JobFunction | None = spec.func if spec else None
    if func is None and not import_jobs:
        func = registry.deferred_callable(reference)  # its syntax is checked; importing it is run/run-now's
    elif func is None:
        try:
            func = registry.load_callable(reference)
        except RegistryError as exc:
            issues.append(ConfigIssue(f"{prefix}.callable", str(exc)))
    if issues or func is None:
        return None, issues
    schedule = cron.CronSchedule(definition.cron, settings.zone())
    description = spec.description if spec else (getattr(func, "__doc__", None) or "").strip().split("\n")[0]
    first_start = spec.run_at_first_start if spec else True
    metrics = spec.metrics if spec else ()
    return (
        ResolvedJob(name, definition, func, options, spec is not None, schedule, description, first_start, metrics),
        [],
    )


def app_folders(
    base: AppPaths, settings: JobsSettings, cli_overrides: Mapping[str, str | None] | None = None
) -> AppPaths:
    """Folders from settings ``jobs.paths``, then the command line on top (it wins)."""
    from_settings = settings.paths.model_dump()
    overrides = cli_overrides or {}
    merged = {key: overrides.get(key) or from_settings.get(key) for key in ("data_dir", "cache_dir", "log_dir")}
    return base.with_overrides(**merged)


def _folder_issues(settings: JobsSettings) -> list[ConfigIssue]:
    if settings.allow_outside_paths:
        return []
    issues = []
    for key, value in settings.paths.model_dump().items():
        if value and (uid := _foreign_owner(value)) is not None:
            issues.append(
                ConfigIssue(
                    f"jobs.paths.{key}",
                    f"{value!r} is owned by uid {uid}, not by you; set jobs.allow_outside_paths to true to allow it",
                )
            )
    return issues


def load_settings(
    path: Path,
    *,
    base: AppPaths | None = None,
    cli_overrides: Mapping[str, str | None] | None = None,
    import_jobs: bool = True,
) -> LoadedSettings:
    """Read and validate ``path``; report every problem, never raise.

    A missing or empty file, or one without ``"jobs"``, runs every built-in
    job with its defaults; a file others could change is not used at all.
    ``base`` (default: the XDG folders) and ``cli_overrides`` give the app's
    folders that path options must stay in.  With ``import_jobs`` false, a user
    job's module is not imported (its ``callable`` is checked by syntax only).
    """
    read = read_settings_file(path)
    app_settings = read.data
    issues = [ConfigIssue(str(path), problem) for problem in read.problems]
    raw_jobs = app_settings.get("jobs", {})
    fatal = bool(issues)
    if not isinstance(raw_jobs, Mapping):
        issues.append(ConfigIssue("jobs", f"expected an object, got {type(raw_jobs).__name__}"))
        raw_jobs, fatal = {}, True
    try:
        settings = JobsSettings.model_validate(raw_jobs)
    except ValidationError as exc:
        issues += _issues_from(exc, "jobs")
        settings, fatal = JobsSettings(), True
    if not fatal:
        folder_issues = _folder_issues(settings)
        issues += folder_issues
        fatal = bool(folder_issues)
    folders = app_folders(base or AppPaths.resolve(settings=path), settings, cli_overrides)
    if fatal:
        # One bad key outside the definitions: none of the user's jobs values can be trusted.
        settings = JobsSettings()
        folders = app_folders(base or AppPaths.resolve(settings=path), settings, cli_overrides)
        # Still report what is wrong in the definitions, so that one fix is not followed by another error.
        raw_definitions = raw_jobs.get("definitions")
        if isinstance(raw_definitions, Mapping):
            for name, raw in raw_definitions.items():
                issues += _resolve_job(str(name), raw, settings, folders, import_jobs=False)[1]
    names = list(registry.BUILTIN_JOBS) + [name for name in settings.definitions if name not in registry.BUILTIN_JOBS]
    jobs: dict[str, ResolvedJob] = {}
    job_errors: dict[str, tuple[ConfigIssue, ...]] = {}
    for name in names:
        job, job_issues = _resolve_job(name, settings.definitions.get(name, {}), settings, folders, import_jobs)
        if job is not None:
            jobs[name] = job
        else:
            job_errors[name] = tuple(job_issues)
            issues += job_issues
    return LoadedSettings(
        path, settings, jobs, job_errors, tuple(issues), fatal, app_settings, read.state, read.fingerprint, read.fixes
    )


def keep_definitions(new: LoadedSettings, old: LoadedSettings, names: list[str]) -> LoadedSettings:
    """``new`` with the raw definitions of ``names`` taken from ``old`` in its app_settings.

    Jobs also read their raw definition from app_settings (log_rotation's
    ``files``); a job that keeps its last good definition must keep that too.
    """
    if not names:
        return new
    data = dict(new.app_settings)
    jobs = dict(data.get("jobs") or {})
    definitions = dict(jobs.get("definitions") or {})
    old_definitions = ((old.app_settings.get("jobs") or {}).get("definitions")) or {}
    for name in names:
        if name in old_definitions:
            definitions[name] = old_definitions[name]
        else:
            definitions.pop(name, None)
    jobs["definitions"], data["jobs"] = definitions, jobs
    return replace(new, app_settings=data)


def settings_schema() -> dict[str, Any]:
    """JSON Schema of the ``"jobs"`` object (``pmjobsd config schema``)."""
    schema = JobsSettings.model_json_schema()
    schema["properties"]["definitions"]["additionalProperties"] = JobDefinition.model_json_schema()
    schema["title"] = 'pmjobsd settings: the "jobs" key of settings.json'
    options = {}
    for name in registry.BUILTIN_JOBS:
        try:
            spec = registry.load_builtin(name)
        except RegistryError:
            continue
        if spec.options_model is not None:
            options[name] = {"defaults": dict(spec.defaults), "options": spec.options_model.model_json_schema()}
    schema["x-builtin-jobs"] = options
    return schema


def issue_text(issue: ConfigIssue, source: Path | str) -> str:
    """``issue`` for a line that already names the file ``source`` (a file-level issue gives its message only)."""
    return issue.message if issue.path == str(source) else str(issue)


# Keys whose values are credentials; "api"/"url" are not among them: a public API base stays readable.
_CREDENTIAL_KEY = re.compile(
    r"(secret|token|pass|pwd|bearer|private|key|auth|credential|cookie|webhook|target|smtp|dsn)", re.I
)


def _public_url(value: str) -> bool:
    """A URL that can carry no credential: no user, no path beyond '/', no query, no fragment."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme and parts.hostname) and not (
        parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment
    )


def redact_credentials(value: Any, key: str = "") -> Any:
    """A copy with credentials ``"<redacted>"``: values under credential keys, URLs that may carry one, e-mails."""
    if isinstance(value, dict):
        return {k: redact_credentials(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_credentials(item, key) for item in value]
    if isinstance(value, str) and value:
        if _CREDENTIAL_KEY.search(key) or ("://" in value and not _public_url(value)) or EMAIL.search(value):
            return "<redacted>"
    return value


def describe(loaded: LoadedSettings) -> dict[str, Any]:
    """The effective settings as JSON-ready data (``pmjobsd config show``), secrets redacted."""
    data = loaded.settings.model_dump(mode="json", exclude={"definitions"})
    data["timezone"] = str(loaded.settings.zone())
    data["definitions"] = {}
    for name, job in loaded.jobs.items():
        definition = job.definition.model_dump(mode="json")
        if hasattr(job.options, "model_dump"):
            definition["options"] = job.options.model_dump(mode="json")
        definition["builtin"] = job.builtin
        data["definitions"][name] = definition
    redacted: dict[str, Any] = redact_credentials(data)  # a dict in, a dict out
    return redacted
