"""Settings: the ``"jobs"`` key of the app's settings.json (README, "Settings").

Raw JSON is validated into frozen msgspec Structs (:mod:`pmjobsd.core.validation`); every problem is
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

import msgspec
from msgspec import Meta

from pmjobsd.app.paths import AppPaths
from pmjobsd.core import cron, registry
from pmjobsd.core.outcomes import Overlap
from pmjobsd.core.privacy import EMAIL
from pmjobsd.core.registry import JobFunction, JobMetric, JobSpec, PathRule, RegistryError
from pmjobsd.core.settings_file import FileState, read_settings_file
from pmjobsd.core.validation import ValidationError, after, before, validate

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


# "x-or-string": the schema also takes a string of that pattern (settings_schema rewrites it into an anyOf).
Duration = Annotated[float, before(parse_duration), Meta(extra_json_schema={"x-or-string": _DURATION.pattern})]

_BYTES = re.compile(r"^\s*(\d*\.?\d+)\s*([A-Za-z]*)\s*$")
_BYTE_UNITS = {"": 1, "b": 1, "bit": 1 / 8}
for _power, _prefix in enumerate("kmgtpe", 1):
    _BYTE_UNITS.update({_prefix: 1000**_power, f"{_prefix}b": 1000**_power, f"{_prefix}ib": 1024**_power})
    _BYTE_UNITS.update({f"{_prefix}bit": 1000**_power / 8, f"{_prefix}ibit": 1024**_power / 8})


def parse_bytes(value: Any) -> Any:
    """Bytes from a whole number or a string such as ``"10MB"`` (1000s) or ``"1KiB"`` (1024s)."""
    if not isinstance(value, str):
        return value  # a number: msgspec checks it is a whole one
    match = _BYTES.match(value)
    unit = match and _BYTE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(f"expected a number of bytes such as 1000, '10MB' or '1MiB', got {value!r}")
    return int(float(match.group(1)) * unit)


ByteSize = Annotated[int, before(parse_bytes), Meta(extra_json_schema={"x-or-string": _BYTES.pattern})]


def _cron_readable(value: str) -> str:
    try:
        cron.normalise(value)
    except cron.CronError as exc:
        raise ValueError(str(exc)) from None
    return value


def _callable_shape(value: str) -> str:
    if not re.fullmatch(r"[\w.]+:[\w.]+", value):
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


def _engine_url(url: str) -> str:
    from pmjobsd.coord.engine import check_url

    return check_url(url)


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; expected an IANA name such as 'Europe/Berlin'") from None
    return value


NotificationUrl = Annotated[str, after(_notification_url)]


# Every settings Struct is frozen (settings are shared between threads) and forbids unknown
# fields (a typo must be reported, not ignored).
class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Delay before retry n: ``min(initial * factor**(n-1), max)``, plus jitter."""

    initial: Duration = 30.0
    factor: Annotated[float, Meta(ge=1.0, le=10.0)] = 2.0
    max: Duration = 3600.0

    def delay(self, retry_number: int) -> float:
        return min(self.initial * self.factor ** max(0, retry_number - 1), self.max)


class JobDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One job's scheduling rules (README, "Settings")."""

    cron: Annotated[
        str, after(_cron_readable), Meta(description="5 fields, 6 with seconds first, or @hourly-style macro")
    ]
    enabled: bool = True
    timeout: Annotated[
        Duration, Meta(gt=0, description="seconds before the run is cancelled and recorded as TIMEOUT")
    ] = 900.0
    retries: Annotated[int, Meta(ge=0, le=20, description="extra attempts after a FAIL or TIMEOUT")] = 0
    backoff: Backoff = Backoff()
    jitter: Annotated[Duration, Meta(description="random delay up to this many seconds before each scheduled run")] = (
        0.0
    )
    overlap: Annotated[
        Overlap,
        Meta(description="when a slot comes while the job still runs: skip it, queue one run, or run alongside"),
    ] = Overlap.SKIP
    catch_up: Annotated[bool, Meta(description="run once after start when slots were missed (or it never ran)")] = True
    callable: Annotated[
        Annotated[str, after(_callable_shape)] | None,
        Meta(description="'module:function' for jobs that are not built in"),
    ] = None
    options: Annotated[dict[str, Any], Meta(description="the job's own options, validated by the job")] = {}
    allow_outside_paths: Annotated[
        bool, Meta(description="let this job's options name files outside the app's folders, or folders of other users")
    ] = False
    scope: Annotated[
        Literal["vault", "device"],
        Meta(description="with jobs.coordination: 'vault' runs once per slot in the group, 'device' on every machine"),
    ] = "device"
    on_holder_lost: Annotated[
        Literal["retry", "skip"],
        Meta(description="a vault job whose holder died mid-run: run the slot again elsewhere, or skip it"),
    ] = "skip"
    when_engine_down: Annotated[
        Literal["skip", "run_local"] | None,
        Meta(description="a vault job while Redis is unreachable; default: jobs.coordination.when_engine_down"),
    ] = None


class Alerts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    desktop: bool = True
    targets: Annotated[list[NotificationUrl], Meta(description="apprise URLs notified when a job fails")] = []
    escalate_after: Annotated[
        int, Meta(ge=1, description="consecutive failures before escalation_targets are told too")
    ] = 2
    escalation_targets: list[NotificationUrl] = []
    allow_remote: Annotated[bool, Meta(description="allow alerts to leave the machine (webhooks, e-mail, chat)")] = (
        False
    )
    repeat_after: Annotated[
        Duration | None, Meta(description="re-announce a job that keeps failing after this long")
    ] = None
    webhook_secret: Annotated[str | None, Meta(description="HMAC-SHA256 key for signing generic JSON webhooks")] = None


class Metrics(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 9464
    allow_remote: Annotated[bool, Meta(description="allow a non-loopback metrics address")] = False
    textfile: Annotated[str | None, Meta(description="node_exporter textfile (.prom) written after each run")] = None
    cors_origins: Annotated[list[str], Meta(description="origins allowed to read /v1/jobs")] = []
    health_grace: Annotated[
        Duration,
        Meta(
            ge=0,
            description="/healthz fails when the scheduler loop's heartbeat is older than 2 x wake_interval + this",
        ),
    ] = 10.0


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class Coordination(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Several machines, one vault: vault-scoped jobs run once per slot in ``group`` (docs/coordination.md)."""

    backend: Literal["redis"] = "redis"
    url: Annotated[
        str, after(_engine_url), Meta(description="redis://, rediss:// (TLS) or unix:// address of the Redis server")
    ]
    group: Annotated[str, Meta(pattern=_NAME, description="the daemons that share one vault")]
    member: Annotated[
        Annotated[str, Meta(pattern=_NAME)] | None,
        Meta(description="this daemon's name in the group; default: host name"),
    ] = None
    lease: Annotated[Duration, Meta(ge=1, le=3600, description="how long a claim lives without renewal")] = 30.0
    allow_remote: Annotated[bool, Meta(description="allow a Redis server that is not on this machine")] = False
    when_engine_down: Annotated[
        Literal["skip", "run_local"],
        Meta(description="vault jobs while Redis is unreachable: skip (WARN and alert) or run on this machine"),
    ] = "skip"

    def __post_init__(self) -> None:
        from pmjobsd.coord.engine import is_loopback

        if not self.allow_remote and not is_loopback(self.url):
            raise ValueError("url is not on this machine; set jobs.coordination.allow_remote to true to allow it")

    def member_name(self) -> str:
        """``member``, or this machine's host name (its first label)."""
        import socket

        return self.member or socket.gethostname().split(".")[0] or "localhost"


class Retention(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    log_days: Annotated[int, Meta(ge=1)] = 30
    compress_after_days: Annotated[int, Meta(ge=0)] = 7
    history_days: Annotated[int, Meta(ge=1)] = 30


class PathOverrides(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    data_dir: str | None = None
    cache_dir: str | None = None
    log_dir: str | None = None


class JobsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The validated ``"jobs"`` object, without its definitions (see LoadedSettings.jobs)."""

    timezone: Annotated[
        Annotated[str, after(_known_zone)] | None,
        Meta(description="IANA zone for cron expressions; default: the system zone"),
    ] = None
    max_workers: Annotated[int, Meta(ge=1, le=64)] = 4
    wake_interval: Annotated[
        Duration, Meta(gt=0, le=3600, description="longest sleep; bounds how late a suspend or clock jump is noticed")
    ] = 60.0
    shutdown_grace: Annotated[Duration, Meta(ge=0, description="how long running jobs get to finish on stop")] = 20.0
    max_abandoned_threads: Annotated[
        int, Meta(ge=1, description="timed-out threads tolerated before a clean restart")
    ] = 8
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    alerts: Alerts = Alerts()
    metrics: Metrics = Metrics()
    retention: Retention = Retention()
    paths: PathOverrides = PathOverrides()
    coordination: Annotated[Coordination | None, Meta(description="run vault jobs once per slot across machines")] = (
        None
    )
    allow_outside_paths: Annotated[
        bool, Meta(description="let jobs.paths and every job's options name places outside the app's folders")
    ] = False
    definitions: Annotated[dict[str, dict[str, Any]], Meta(description="job name -> JobDefinition")] = {}

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
    return [ConfigIssue(".".join([prefix, *map(str, loc)]), message) for loc, message in exc.problems]


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
    issues: list[ConfigIssue] = []
    if not spec.path_options:
        return issues
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
    name: str, raw: Any, settings: JobsSettings, folders: AppPaths, import_jobs: bool, check_builtins: bool = False
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
        definition = validate(JobDefinition, raw)
    except ValidationError as exc:
        return None, _issues_from(exc, prefix)
    issues: list[ConfigIssue] = []
    options: Any = dict(definition.options)
    if spec is not None and spec.options_model is not None:
        try:
            options = validate(spec.options_model, definition.options)
        except ValidationError as exc:
            issues += _issues_from(exc, f"{prefix}.options")
    if spec is not None and not issues and not (definition.allow_outside_paths or settings.allow_outside_paths):
        issues += _path_issues(spec, options, prefix, folders)
    # A job that is not built in has a callable (checked above): `or ""` only tells mypy so.
    reference = definition.callable or ""
    func: JobFunction | None = registry.job_function(spec) if spec else None
    if isinstance(func, registry.LazyJobFunction) and check_builtins:
        try:
            func.load()
        except RegistryError as exc:
            issues.append(ConfigIssue(prefix, str(exc)))
    if func is None and not import_jobs:
        func = registry.LazyJobFunction(name, reference, builtin=False)  # its syntax is checked; run/run-now import it
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
    from_settings = msgspec.structs.asdict(settings.paths)
    overrides = cli_overrides or {}
    merged = {key: overrides.get(key) or from_settings.get(key) for key in ("data_dir", "cache_dir", "log_dir")}
    folders = base.with_overrides(**merged)
    if settings.coordination is not None:  # the data folder may be shared: the state stays on this machine
        folders = folders.for_member(settings.coordination.member_name())
    return folders


def _folder_issues(settings: JobsSettings) -> list[ConfigIssue]:
    if settings.allow_outside_paths:
        return []
    issues = []
    for key, value in msgspec.structs.asdict(settings.paths).items():
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
    check_builtins: bool = False,
) -> LoadedSettings:
    """Read and validate ``path``; report every problem, never raise.

    A missing or empty file, or one without ``"jobs"``, runs every built-in
    job with its defaults; a file others could change is not used at all.
    ``base`` (default: the XDG folders) and ``cli_overrides`` give the app's
    folders that path options must stay in.  With ``import_jobs`` false, a user
    job's module is not imported (its ``callable`` is checked by syntax only).
    A built-in job's implementation is imported at its first run; ``check_builtins``
    imports each one now, so that one that does not import is that job's issue
    (``config validate``, ``doctor``).
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
        settings = validate(JobsSettings, raw_jobs)
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
        raw = settings.definitions.get(name, {})
        job, job_issues = _resolve_job(name, raw, settings, folders, import_jobs, check_builtins)
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
    """JSON Schema of the ``"jobs"`` object (``pmjobsd config schema``), generated from the Structs."""
    specs = {}
    for name in registry.BUILTIN_JOBS:
        try:
            spec = registry.load_builtin(name)
        except RegistryError:
            continue
        if spec.options_model is not None:
            specs[name] = spec
    models = [JobsSettings, JobDefinition, *(spec.options_model for spec in specs.values())]
    refs, defs = msgspec.json.schema_components(models, ref_template="#/$defs/{name}")
    defs = _or_string(defs)
    schema: dict[str, Any] = defs.pop("JobsSettings")
    schema["properties"]["definitions"]["additionalProperties"] = refs[1]
    schema["title"] = 'pmjobsd settings: the "jobs" key of settings.json'
    schema["x-builtin-jobs"] = {
        name: {"defaults": dict(spec.defaults), "options": ref}
        for (name, spec), ref in zip(specs.items(), refs[2:], strict=True)
    }
    schema["$defs"] = defs
    return schema


def _or_string(node: Any) -> Any:
    """``node`` with each ``"x-or-string": pattern`` schema turned into "that, or a string of that pattern"."""
    if isinstance(node, list):
        return [_or_string(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _or_string(value) for key, value in node.items()}
    if "x-or-string" in node:
        pattern = node.pop("x-or-string")
        outer = {key: node.pop(key) for key in ("title", "description", "default") if key in node}
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = 0  # durations and sizes are never negative (their parsers say so)
        node = {**outer, "anyOf": [node, {"type": "string", "pattern": pattern}]}
    return node


def issue_text(issue: ConfigIssue, source: Path | str) -> str:
    """``issue`` for a line that already names the file ``source`` (a file-level issue gives its message only)."""
    return issue.message if issue.path == str(source) else str(issue)


# Keys whose values are credentials; "api"/"url" are not among them: a public API base stays readable.
# Compiled at its first use (config show, the bundle; re keeps it), not at every start.
_CREDENTIAL_KEY = r"(?i)(secret|token|pass|pwd|bearer|private|key|auth|credential|cookie|webhook|target|smtp|dsn)"


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
        if re.search(_CREDENTIAL_KEY, key) or ("://" in value and not _public_url(value)) or EMAIL.search(value):
            return "<redacted>"
    return value


def describe(loaded: LoadedSettings) -> dict[str, Any]:
    """The effective settings as JSON-ready data (``pmjobsd config show``), secrets redacted."""
    data: dict[str, Any] = msgspec.to_builtins(loaded.settings)
    del data["definitions"]
    data["timezone"] = str(loaded.settings.zone())
    data["definitions"] = {}
    for name, job in loaded.jobs.items():
        definition = msgspec.to_builtins(job.definition)
        if isinstance(job.options, msgspec.Struct):
            definition["options"] = msgspec.to_builtins(job.options)
        definition["builtin"] = job.builtin
        data["definitions"][name] = definition
    redacted: dict[str, Any] = redact_credentials(data)  # a dict in, a dict out
    if loaded.settings.coordination is not None:  # which engine, without its password (redacted above whole)
        from pmjobsd.coord.engine import display_url

        redacted["coordination"]["url"] = display_url(loaded.settings.coordination.url)
    return redacted
