"""The package layout: what may live at the root, and what jobs may import from pmjobsd.

A job builds on the public job API (``pmjobsd.api``), the app's files
(``pmjobsd.app``) and the helpers of its own sub-package, never on the engine,
so that the engine can change under it.  A built-in job is a declaration
``<name>_spec.py``, which imports nothing of pmjobsd but ``pmjobsd.api`` (it is
imported whenever the settings are read), and its implementation ``<name>.py``
beside it.  Imports are read with ``ast`` (at any depth: function-level imports
count), nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pmjobsd.core.registry import BUILTIN_JOBS, SPEC_SUFFIX, load_builtin
from tests.support import REPO

PACKAGE = REPO / "pmjobsd"
JOBS = PACKAGE / "jobs"
ROOT_FILES = {"__init__.py", "__main__.py", "cli.py", "api.py", "py.typed"}

# What any module under pmjobsd/jobs/ may import from pmjobsd (a name and everything below it).
JOB_IMPORTS = ("pmjobsd.api", "pmjobsd.app", "pmjobsd.__version__")  # the root holds only the version
SPEC_IMPORTS = ("pmjobsd.api",)  # a job's declaration: read at every start, so none of the job's helpers
SPECS = set(BUILTIN_JOBS.values())
IMPLEMENTATIONS = {spec.removesuffix(SPEC_SUFFIX) for spec in SPECS}
HELPER_IMPORTS = ("pmjobsd.system.files",)  # private modes and atomic writes, for helpers of a sub-package
EXTRA_IMPORTS = {
    # The retention rules are shared with `pmjobsd logs purge`: they purge the run history and
    # read the retention settings.
    "pmjobsd.jobs.logs.retention": ("pmjobsd.core.history", "pmjobsd.core.settings"),
}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path, root: Path = REPO) -> str:
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_names(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``path``; ``from a import b`` gives ``a.b``.

    Relative imports are resolved against the module's package.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = package_of(path, root).split(".")
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def within(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def allowed_imports(path: Path, root: Path = REPO) -> tuple[str, ...]:
    """The pmjobsd names ``path`` (a module under pmjobsd/jobs/) may import."""
    name = module_name(path, root)
    if name in SPECS:
        return SPEC_IMPORTS
    package = package_of(path, root)
    own = (package,) if package != "pmjobsd.jobs" else ()  # a job without helpers has no sub-package
    if name in IMPLEMENTATIONS:
        own += (name + SPEC_SUFFIX,)  # its own declaration (the options model)
    helper = name not in IMPLEMENTATIONS and bool(own)
    return JOB_IMPORTS + own + (HELPER_IMPORTS if helper else ()) + EXTRA_IMPORTS.get(name, ())


def forbidden_imports(path: Path, root: Path = REPO) -> list[str]:
    allowed = allowed_imports(path, root)
    return [
        f"{path.relative_to(root)}:{line} imports {name}"
        for line, name in imported_names(path, root)
        if within(name, ("pmjobsd",)) and not within(name, allowed)
    ]


def job_files() -> list[Path]:
    return sorted(JOBS.rglob("*.py"))


def test_the_package_root_holds_only_the_entry_points_and_the_job_api():
    files = {entry.name for entry in PACKAGE.iterdir() if entry.is_file()}
    assert files == ROOT_FILES, f"move {sorted(files - ROOT_FILES)} into a sub-package"
    assert (PACKAGE / "py.typed").is_file()


def test_every_builtin_job_is_a_declaration_beside_its_implementation():
    for name, module in BUILTIN_JOBS.items():
        assert module.startswith("pmjobsd.jobs.") and module.endswith(SPEC_SUFFIX), name
        implementation = module.removesuffix(SPEC_SUFFIX)
        for each in (module, implementation):
            assert (REPO / (each.replace(".", "/") + ".py")).is_file(), each
        # The declaration names its function by reference, in the implementation beside it.
        func = load_builtin(name).func
        assert isinstance(func, str) and func.partition(":")[0] == implementation, (name, func)
    # A job's helpers live in its sub-package, not beside the jobs.
    top_level = {module_name(path) for path in JOBS.glob("*.py") if path.name != "__init__.py"}
    assert top_level <= SPECS | IMPLEMENTATIONS


@pytest.mark.parametrize("path", job_files(), ids=lambda path: str(path.relative_to(JOBS)))
def test_jobs_import_only_the_job_api_the_app_and_their_own_helpers(path):
    assert forbidden_imports(path) == []


def test_nothing_in_the_package_imports_the_tests():
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in imported_names(path)
        if within(name, ("tests",))
    ]
    assert offenders == []


def test_the_import_reader_sees_what_the_rules_forbid(tmp_path):
    """The rules above can fail: nested, relative and ``from package import module`` forms count."""
    helper = tmp_path / "pmjobsd/jobs/breach/helper.py"
    helper.parent.mkdir(parents=True)
    helper.write_text(
        "from pmjobsd.system import files\n"
        "from . import cache\n"
        "def later():\n"
        "    from ...core import runner\n"
        "    import pmjobsd.observe.joblog\n"
        "    from pmjobsd.jobs.logs import retention\n"
    )
    assert forbidden_imports(helper, tmp_path) == [
        "pmjobsd/jobs/breach/helper.py:4 imports pmjobsd.core.runner",
        "pmjobsd/jobs/breach/helper.py:5 imports pmjobsd.observe.joblog",
        "pmjobsd/jobs/breach/helper.py:6 imports pmjobsd.jobs.logs.retention",
    ]


def test_a_declaration_may_not_import_its_implementation_or_helpers(tmp_path):
    """What a job's ``_spec`` module imports is loaded at every start: only the job API."""
    spec = tmp_path / "pmjobsd/jobs/breach/breach_cache_refresh_spec.py"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        "from pmjobsd.api import JobSpec\n"
        "from pmjobsd.jobs.breach import cache\n"
        "from .breach_cache_refresh import run\n"
        "from pmjobsd.app.vault import read_vault\n"
    )
    assert forbidden_imports(spec, tmp_path) == [
        "pmjobsd/jobs/breach/breach_cache_refresh_spec.py:2 imports pmjobsd.jobs.breach.cache",
        "pmjobsd/jobs/breach/breach_cache_refresh_spec.py:3 imports pmjobsd.jobs.breach.breach_cache_refresh.run",
        "pmjobsd/jobs/breach/breach_cache_refresh_spec.py:4 imports pmjobsd.app.vault.read_vault",
    ]
