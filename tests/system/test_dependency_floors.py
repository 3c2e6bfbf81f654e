"""The dependency floors in pyproject.toml stay above the fixed version of every known advisory.

The table is checked by hand against the PyPA advisory database (docs in README, "Auditing the
dependencies"); this test keeps pyproject.toml from drifting below it and the installed set
from being older than the floors.
"""

from __future__ import annotations

from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import REPO

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

# package: (first version with every known fix, the advisories that version closes)
FIXED = {
    "requests": ("2.33.0", "CVE-2024-35195, CVE-2024-47081 (.netrc leak), CVE-2026-25645"),
    "urllib3": ("2.7.0", "CVE-2025-66418, CVE-2025-66471, CVE-2026-21441, GHSA-mf9v-mfxr-j63j, GHSA-qccp-gfcp-xxvc"),
    "filelock": ("3.20.3", "CVE-2025-68146, CVE-2026-22701"),
    "python-json-logger": ("3.3.0", "CVE-2025-27607"),
    "cryptography": ("46.0.5", "CVE-2024-26130, CVE-2024-12797, CVE-2026-26007"),
    "aiosmtpd": ("1.4.6", "CVE-2024-27305, CVE-2024-34083"),
}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {req.name.lower(): req for req in map(Requirement, lines)}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_floor_is_at_or_above_the_fixed_version(name):
    requirement = _requirements().get(name)
    assert requirement is not None, f"pyproject.toml: {name} needs a floor (fixes {FIXED[name][1]})"
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    fixed = Version(FIXED[name][0])
    assert floors and max(floors) >= fixed, f"pyproject.toml: {requirement} allows versions before {fixed}"


@pytest.mark.parametrize("name", sorted(FIXED))
def test_installed_version_meets_the_floor(name):
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    assert _requirements()[name].specifier.contains(installed, prereleases=True), (name, installed)
