"""Checks of the Python that runs pmjobsd: its version, pmjobsd's requirements, the app's GUI toolkit."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pmjobsd.core.privacy import scrub_text
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, fail, ok, shell_quote, warn

if TYPE_CHECKING:  # annotations only: the checks import packaging where they use it
    from packaging.requirements import Requirement

# Qt's platform plugin for each OS; the app's GUI cannot open a window without it.
QT_PLATFORM_PLUGINS = {"linux": "libqxcb.so", "darwin": "libqcocoa.dylib"}


def _own_requirements() -> tuple[str | None, list[str]]:
    """(requires-python, requirement strings) of pmjobsd: the source tree's pyproject, else installed metadata."""
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):  # tomllib is 3.11+
        import tomllib

        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            if project.get("name") == "pmjobsd":
                extras = project.get("optional-dependencies", {})
                optional = [
                    f'{req}; extra == "{name}"' if ";" not in req else f'{req} and extra == "{name}"'
                    for name, reqs in extras.items()
                    for req in reqs
                ]
                return project.get("requires-python"), list(project.get("dependencies", [])) + optional
        except (ValueError, OSError):
            pass
    try:
        dist = metadata.distribution("pmjobsd")
    except metadata.PackageNotFoundError:
        return None, []
    meta = dist.metadata
    return (meta["Requires-Python"] if "Requires-Python" in meta else None), list(dist.requires or [])


def check_python(env: DoctorEnv) -> Check:
    from packaging.specifiers import SpecifierSet

    required, _ = _own_requirements()
    version = platform.python_version()
    if required and version not in SpecifierSet(required):
        return fail(
            "python",
            f"Python {version} at {sys.executable}; pmjobsd needs {required}",
            f"install Python {required} and reinstall pmjobsd with it",
        )
    return ok("python", f"Python {version} ({sys.executable})" + (f", needs {required}" if required else ""))


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed distribution: once per process


def _modules_of(dist_name: str) -> list[str]:
    """Top-level modules a distribution provides (``python-json-logger`` -> ``pythonjsonlogger``)."""
    from packaging.utils import canonicalize_name

    wanted = canonicalize_name(dist_name)
    modules = [
        module
        for module, dists in _packages_distributions().items()
        if any(canonicalize_name(d) == wanted for d in dists) and not module.startswith("_")
    ]
    return sorted(modules) or [dist_name.replace("-", "_")]


def requirement_problem(requirement: Requirement) -> str | None:
    """None when ``requirement`` is installed at a supported version and importable, else why not."""
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return f"{requirement.name} is not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"{requirement.name} {installed} is installed, {requirement.specifier} is needed"
    for module in _modules_of(requirement.name)[:1]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install raises anything from ImportError to OSError
            return (
                f"{requirement.name} {installed} does not import ({type(exc).__name__}: {scrub_text(str(exc))[:120]})"
            )
    return None


def _split_requirements() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    from packaging.requirements import Requirement

    _, strings = _own_requirements()
    required: list[Requirement] = []
    optional: dict[str, list[Requirement]] = {}
    for text in strings:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            required.append(requirement)
            continue
        for extra in ("systemd",):  # the runtime extras; "test" is for developers
            if requirement.marker.evaluate({"extra": extra}):
                optional.setdefault(extra, []).append(requirement)
    return required, optional


def _problems(requirements: list) -> list[tuple]:
    """(requirement, why it is not usable) for each of ``requirements`` that is not."""
    return [(req, problem) for req in requirements if (problem := requirement_problem(req))]


def check_dependencies(env: DoctorEnv) -> list[Check]:
    required, optional = _split_requirements()
    checks = []
    problems = _problems(required)
    if not required:
        checks.append(
            warn(
                "dependencies",
                "cannot find pmjobsd's requirements (not installed as a package)",
                "install pmjobsd with pip: pip install .",
            )
        )
    elif problems:
        checks.append(
            fail(
                "dependencies",
                "; ".join(problem for _, problem in problems),
                "pip install " + " ".join(shell_quote(str(req).split(";")[0]) for req, _ in problems),
            )
        )
    else:
        checks.append(ok("dependencies", f"{len(required)} required packages importable at supported versions"))
    for extra, requirements in optional.items():
        problems = _problems(requirements)
        if problems:
            checks.append(
                ok(
                    f"optional.{extra}",
                    "optional, not usable: "
                    + "; ".join(p for _, p in problems)
                    + " (journald gets plain lines; sd_notify uses the built-in NOTIFY_SOCKET fallback)",
                )
            )
        else:
            checks.append(
                ok(
                    f"optional.{extra}",
                    "optional, installed: "
                    + ", ".join(f"{req.name} {metadata.version(req.name)}" for req in requirements),
                )
            )
    return checks


def qt_platform_plugin_dir() -> Path | None:
    """PyQt5's ``plugins/platforms`` folder: the wheel's bundled Qt, else what QLibraryInfo says."""
    spec = importlib.util.find_spec("PyQt5")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for qt in ("Qt5", "Qt"):
            candidate = Path(base) / qt / "plugins" / "platforms"
            if candidate.is_dir():
                return candidate
    try:
        from PyQt5.QtCore import QLibraryInfo

        folder = Path(QLibraryInfo.location(QLibraryInfo.PluginsPath)) / "platforms"
        return folder if folder.is_dir() else None
    except Exception:
        return None


def check_app_gui(env: DoctorEnv) -> Check:
    """The app's GUI (optional for pmjobsd): PyQt5 at the app's version and its platform plugin."""
    from packaging.requirements import Requirement

    try:
        app = metadata.distribution("secure-password-manager")
    except metadata.PackageNotFoundError:
        return ok("optional.gui", "optional: the app (secure-password-manager) is not installed in this Python")
    wanted = next((Requirement(r) for r in app.requires or [] if Requirement(r).name.lower() == "pyqt5"), None)
    if wanted is None:
        return ok("optional.gui", f"optional: secure-password-manager {app.version} does not use PyQt5")
    problem = requirement_problem(wanted)
    if problem:
        return warn(
            "optional.gui",
            f"optional, the app's GUI (password-manager-gui) cannot start: {problem}",
            f"pip install {shell_quote(str(wanted))}  (not needed by pmjobsd)",
        )
    plugin_name = QT_PLATFORM_PLUGINS["darwin" if env.platform == "darwin" else "linux"]
    folder = qt_platform_plugin_dir()
    if folder is None or not (folder / plugin_name).exists():
        return warn(
            "optional.gui",
            f"optional, PyQt5 {metadata.version('PyQt5')} lacks its Qt platform plugin {plugin_name}",
            "pip install --force-reinstall PyQt5-Qt5  (not needed by pmjobsd)",
        )
    return ok("optional.gui", f"optional, PyQt5 {metadata.version('PyQt5')} with {plugin_name} ({folder})")
