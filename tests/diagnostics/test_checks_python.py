"""doctor's Python checks against real distributions: the installed ones, and dist-info folders put
on sys.path by the tests (found by importlib.metadata exactly as an installed package is; one earlier
on sys.path shadows the installed one of the same name, as a second site-packages would)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from pmjobsd.core.context import Status
from pmjobsd.diagnostics.doctor import checks_python
from pmjobsd.diagnostics.doctor.checks_python import (
    check_app_gui,
    check_dependencies,
    check_python,
    requirement_problem,
)
from tests.support import REPO
from tests.support.diagnostics_fixtures import make_env


@pytest.fixture()
def site(tmp_path: Path, monkeypatch):
    """A folder first on sys.path; ``site(name, version, ...)`` installs a distribution there."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    checks_python._packages_distributions.cache_clear()

    def install(name: str, version: str, requires: tuple[str, ...] = (), modules: dict[str, str] | None = None):
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {requirement}" for requirement in requires]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            package = folder.joinpath(*module.split("/"))
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text(source)
        if modules:
            tops = sorted({module.split("/")[0] for module in modules})
            (info / "top_level.txt").write_text("\n".join(tops) + "\n")
        checks_python._packages_distributions.cache_clear()
        return folder

    yield install
    for name in set(sys.modules) - before:  # the fake modules must not outlive the test
        del sys.modules[name]
    checks_python._packages_distributions.cache_clear()


@pytest.fixture()
def env(home):
    return make_env(home, platform="linux")


def project() -> dict:
    """pyproject's [project], what the checks read in a source tree (tomllib: Python 3.11+)."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# --- requirement_problem -----------------------------------------------------------------------
def test_an_installed_requirement_at_a_supported_version_is_no_problem():
    assert requirement_problem(Requirement("packaging>=23")) is None


def test_a_missing_distribution_is_named():
    assert requirement_problem(Requirement("pmjobsd-test-absent>=1")) == "pmjobsd-test-absent is not installed"


def test_a_too_old_version_names_both_versions(site):
    site("pmjobsd-test-old", "0.5", modules={"pmjobsd_test_old": ""})
    assert (
        requirement_problem(Requirement("pmjobsd-test-old>=1.0"))
        == "pmjobsd-test-old 0.5 is installed, >=1.0 is needed"
    )


def test_a_pre_release_above_the_floor_is_accepted(site):
    site("pmjobsd-test-pre", "2.0rc1", modules={"pmjobsd_test_pre": ""})
    assert requirement_problem(Requirement("pmjobsd-test-pre>=1.0")) is None


def test_a_distribution_whose_module_does_not_import_is_named_with_the_error(site):
    """The module is found by the distribution's own top-level names, not its project name."""
    site("pmjobsd-test-broken", "1.0", modules={"ptb_core": "raise RuntimeError('needs libfoo.so.3')"})
    problem = requirement_problem(Requirement("pmjobsd-test-broken>=1"))
    assert problem == "pmjobsd-test-broken 1.0 does not import (RuntimeError: needs libfoo.so.3)"


def test_the_import_error_is_scrubbed(site):
    site(
        "pmjobsd-test-leaky",
        "1.0",
        modules={"ptl_core": "raise ImportError('https://user:hunter2@mirror.example/simple/x')"},
    )
    problem = requirement_problem(Requirement("pmjobsd-test-leaky"))
    assert problem == "pmjobsd-test-leaky 1.0 does not import (ImportError: https://mirror.example/<redacted>)"


def test_a_long_import_error_is_cut_at_120_characters(site):
    site("pmjobsd-test-long", "1.0", modules={"ptlong_core": "raise ImportError('x' * 300)"})
    problem = requirement_problem(Requirement("pmjobsd-test-long"))
    assert problem == "pmjobsd-test-long 1.0 does not import (ImportError: " + "x" * 120 + ")"


# --- check_python and check_dependencies --------------------------------------------------------
def test_python_is_ok_and_names_the_interpreter_and_the_floor(env):
    check = check_python(env)
    required = project()["requires-python"]
    assert (check.name, check.status) == ("python", Status.OK)
    assert check.message == f"Python {platform.python_version()} ({sys.executable}), needs {required}"


def test_dependencies_of_this_install_are_all_usable(env):
    marker_env = default_environment()
    applying = [
        r for r in map(Requirement, project()["dependencies"]) if r.marker is None or r.marker.evaluate(marker_env)
    ]
    checks = {check.name: check for check in check_dependencies(env)}
    assert set(checks) == {"dependencies", "optional.systemd"}  # the test and lint extras are not checked
    assert (checks["dependencies"].status, checks["dependencies"].message) == (
        Status.OK,
        f"{len(applying)} required packages importable at supported versions",
    )


def test_a_shadowed_too_old_dependency_fails_with_the_pip_command(site, env):
    site("cronsim", "0.1")
    (dependencies,) = [c for c in check_dependencies(env) if c.name == "dependencies"]
    floor = next(r for r in project()["dependencies"] if r.startswith("cronsim"))
    assert dependencies.status is Status.FAIL
    assert dependencies.message == f"cronsim 0.1 is installed, {Requirement(floor).specifier} is needed"
    assert dependencies.hint == f"pip install '{floor}'"


def test_the_optional_systemd_extra_installed_is_named_with_its_version(env):
    pytest.importorskip("systemd", reason="the systemd extra is not installed (.ci/run installs it)")
    (check,) = [c for c in check_dependencies(env) if c.name == "optional.systemd"]
    assert (check.status, check.message) == (
        Status.OK,
        f"optional, installed: systemd-python {version('systemd-python')}",
    )


def test_the_optional_systemd_extra_unusable_is_ok_and_says_what_is_lost(site, env):
    site("systemd-python", "200")
    (check,) = [c for c in check_dependencies(env) if c.name == "optional.systemd"]
    assert check.status is Status.OK and check.message == (
        "optional, not usable: systemd-python 200 is installed, >=235 is needed"
        " (journald gets plain lines; sd_notify uses the built-in NOTIFY_SOCKET fallback)"
    )


# --- check_app_gui ---------------------------------------------------------------------------------
def test_gui_without_the_app_in_this_python_is_ok(site, env, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    check = check_app_gui(env)
    assert (check.status, check.message) == (
        Status.OK,
        "optional: the app (secure-password-manager) is not installed in this Python",
    )


def test_gui_of_an_app_without_pyqt5_is_ok(site, env):
    site("secure-password-manager", "9.0", requires=("requests>=2",))
    check = check_app_gui(env)
    assert (check.status, check.message) == (Status.OK, "optional: secure-password-manager 9.0 does not use PyQt5")


def test_gui_with_a_too_old_pyqt5_warns_with_the_pip_command(site, env):
    site("secure-password-manager", "9.0", requires=("PyQt5>=5.15.9",))
    site("PyQt5", "5.9", modules={"PyQt5": ""})
    check = check_app_gui(env)
    assert check.status is Status.WARN
    assert (
        check.message
        == "optional, the app's GUI (password-manager-gui) cannot start: PyQt5 5.9 is installed, >=5.15.9 is needed"
    )
    assert check.hint == "pip install 'PyQt5>=5.15.9'  (not needed by pmjobsd)"


@pytest.mark.parametrize(("os_name", "plugin"), [("linux", "libqxcb.so"), ("darwin", "libqcocoa.dylib")])
def test_gui_with_pyqt5_but_no_platform_plugin_warns(site, home, os_name, plugin):
    site("secure-password-manager", "9.0", requires=("PyQt5>=5.15.9",))
    site("PyQt5", "5.15.10", modules={"PyQt5": "", "PyQt5/Qt5/plugins/platforms": ""})
    check = check_app_gui(make_env(home, platform=os_name))
    assert check.status is Status.WARN
    assert check.message == f"optional, PyQt5 5.15.10 lacks its Qt platform plugin {plugin}"
    assert check.hint == "pip install --force-reinstall PyQt5-Qt5  (not needed by pmjobsd)"


def test_gui_with_pyqt5_and_its_platform_plugin_is_ok(site, env):
    site("secure-password-manager", "9.0", requires=("PyQt5>=5.15.9",))
    folder = site("PyQt5", "5.15.10", modules={"PyQt5": "", "PyQt5/Qt5/plugins/platforms": ""})
    platforms = folder / "PyQt5" / "Qt5" / "plugins" / "platforms"
    (platforms / "libqxcb.so").write_bytes(b"")
    check = check_app_gui(env)
    assert (check.status, check.message) == (Status.OK, f"optional, PyQt5 5.15.10 with libqxcb.so ({platforms})")
