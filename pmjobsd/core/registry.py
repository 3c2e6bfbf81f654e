"""The job registry: built-in jobs by name, user jobs by ``module:function``.

A built-in job is two modules side by side in :mod:`pmjobsd.jobs`: its declaration
``<name>_spec.py`` (``JOB = JobSpec(...)``: defaults, options model, metrics; it imports
nothing but :mod:`pmjobsd.api`) and its implementation ``<name>.py``, which ``JobSpec.func``
names as ``"module:function"``.  The declarations are listed in ``BUILTIN_JOBS`` and imported
when the settings are read; an implementation is imported at the job's first run (or by
:meth:`LazyJobFunction.load`), so reading the settings costs none of the jobs' helpers, and a
broken job module breaks only that job: a broken declaration disables it, a broken
implementation makes its runs FAIL saying why.
"""

from __future__ import annotations

import enum
import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pmjobsd.core.context import JobContext, JobResult

if TYPE_CHECKING:  # msgspec is loaded by what validates settings, not by every command
    import msgspec

JobFunction = Callable[[JobContext], "JobResult | None"]

# name -> the declaration module that defines ``JOB``.  Add a line here when a job lands.
BUILTIN_JOBS: dict[str, str] = {
    "browser_bridge_health": "pmjobsd.jobs.browser_bridge_health_spec",
    "log_rotation": "pmjobsd.jobs.logs.log_rotation_spec",
    "log_purge": "pmjobsd.jobs.logs.log_purge_spec",
    "expiring_password_digest": "pmjobsd.jobs.expiring_password_digest_spec",
    "backup_integrity_check": "pmjobsd.jobs.backup.backup_integrity_check_spec",
    "breach_cache_refresh": "pmjobsd.jobs.breach.breach_cache_refresh_spec",
}
SPEC_SUFFIX = "_spec"  # a declaration module's name: its implementation's, plus this


class RegistryError(Exception):
    """A job that cannot be resolved (unknown name, bad callable, import error)."""


# What a job's metrics may be called: identifiers for the keys it reports, pmjobsd_ names for what is exported.
RESULT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_METRIC_NAME = re.compile(r"^pmjobsd_[a-z0-9_]+$")


class MetricKind(str, enum.Enum):
    """How a job's reported number becomes a Prometheus series."""

    GAUGE = "gauge"  # the value of the newest run that reported it (kept across restarts from the history)
    COUNTER = "counter"  # the sum of the values every run reported since the daemon started


@dataclass(frozen=True)
class JobMetric:
    """A named metric a job exports: ``JobResult.metrics[key] * scale`` as ``name``, labelled ``job_name``.

    ``scale`` converts the job's unit to the metric's base unit (days reported,
    seconds exported).  A counter's ``name`` has no ``_total``: the exposition adds it.
    """

    key: str
    name: str
    help: str
    kind: MetricKind = MetricKind.GAUGE
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MetricKind(self.kind))  # the word itself ("counter") will do
        if not RESULT_KEY.match(self.key):
            raise ValueError(f"metric key {self.key!r} is not an identifier")
        if not _METRIC_NAME.match(self.name) or (self.kind is MetricKind.COUNTER and self.name.endswith("_total")):
            raise ValueError(f"metric name {self.name!r} must be pmjobsd_<lower_case> (a counter without _total)")


class PathRule(str, enum.Enum):
    """What each entry of a path-bearing option must be (checked when the settings are read)."""

    INSIDE_APP = "inside_app"  # resolves inside the app's folders (data, config, cache, log)
    OWNED = "owned"  # owned by the user running pmjobsd (or root) when it exists


@dataclass(frozen=True)
class JobSpec:
    """A built-in job: its function, its default definition and its options model.

    ``func`` is the function itself or ``"package.module:function"``, imported at the job's
    first run (:func:`job_function`), so that declaring a job costs none of its helpers.
    ``defaults`` holds definition keys (``cron``, ``timeout``, ``retries``,
    ``backoff``, ``jitter``, ``overlap``, ``catch_up``...) that the user's
    settings override key by key.  ``metrics`` declares the numbers of
    ``JobResult.metrics`` exported under names of their own.
    """

    name: str
    func: JobFunction | str
    description: str
    defaults: Mapping[str, Any]
    options_model: type[msgspec.Struct] | None = None  # frozen, forbid_unknown_fields
    enabled_by_default: bool = True
    # With catch_up, a job that never ran runs once at start; a rotation of logs a few seconds
    # old is no use, so such jobs wait for their first slot.
    run_at_first_start: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)
    metrics: tuple[JobMetric, ...] = ()
    # Options that name files or folders, and what each entry must be unless the user opts in
    # with ``allow_outside_paths`` (a settings file must not reach what the app does not own).
    path_options: Mapping[str, PathRule] = field(default_factory=dict)


def builtin_names() -> list[str]:
    return list(BUILTIN_JOBS)


def load_builtin(name: str) -> JobSpec:
    """Import and return the built-in job ``name``; raise RegistryError."""
    module_name = BUILTIN_JOBS.get(name)
    if module_name is None:
        raise RegistryError(f"unknown job {name!r}; built-in jobs: {', '.join(BUILTIN_JOBS) or 'none'}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken job module must not take the daemon down
        raise RegistryError(f"cannot import built-in job {name!r} ({module_name}): {exc}") from exc
    spec = getattr(module, "JOB", None)
    if not isinstance(spec, JobSpec) or spec.name != name:
        raise RegistryError(f"{module_name} does not define JOB = JobSpec(name={name!r}, ...)")
    return spec


class LazyJobFunction:
    """A job's function named ``"module:function"``, imported at its first call.

    A built-in job's implementation (imported at the job's first run), and a user job's callable
    in the read-only commands (status, config, doctor, bundle: they never call it, so no module's
    import-time code runs for them; only ``run`` and ``run-now`` import user jobs).  Until it
    imports, every call tries again and raises :class:`RegistryError` naming the job, its module
    and the import's own error (the run's FAIL); once imported it is kept.
    """

    def __init__(self, job: str, reference: str, *, builtin: bool = True):
        self.job = job
        self.reference = reference
        self.__name__ = self.__qualname__ = reference
        self._what = f"built-in job {job!r}" if builtin else f"job {job!r}"
        self._function: JobFunction | None = None
        self._lock = threading.Lock()

    def load(self) -> JobFunction:
        """Import the function now (once); raise RegistryError."""
        function = self._function
        if function is None:
            with self._lock:  # two first runs at once import it once
                function = self._function
                if function is None:
                    try:
                        function = load_callable(self.reference)
                    except RegistryError as exc:
                        raise RegistryError(f"{self._what}: {exc}") from exc
                    self._function = function
        return function

    def __call__(self, ctx: JobContext) -> JobResult | None:
        return self.load()(ctx)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.reference}>"


def job_function(spec: JobSpec) -> JobFunction:
    """The function of ``spec``: itself, or a :class:`LazyJobFunction` of its ``"module:function"``."""
    if isinstance(spec.func, str):
        return LazyJobFunction(spec.name, spec.func)
    return spec.func


def load_callable(reference: str) -> JobFunction:
    """Resolve ``"package.module:function"`` to a callable; raise RegistryError."""
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise RegistryError(f"expected 'module:function', got {reference!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise RegistryError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise RegistryError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise RegistryError(f"{reference!r} is not callable")
    function: JobFunction = target  # what it returns is checked by the runner at each run
    return function
