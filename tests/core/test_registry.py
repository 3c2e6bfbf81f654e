"""The registry: a built-in job's declaration is read at start, its implementation at its first run."""

from __future__ import annotations

import json
import sys

import pytest

from pmjobsd.core import registry
from pmjobsd.core.registry import JobSpec, LazyJobFunction, RegistryError, job_function, load_builtin
from pmjobsd.core.settings import load_settings
from tests.support.helpers import make_context
from tests.support.sample_jobs import ok

LAZY = "tests.support.lazy_builtin"
BROKEN = "tests.support.broken_builtin"


@pytest.fixture
def fresh(monkeypatch):
    """Neither test implementation imported yet, and both declarations registered as built-in jobs."""
    for name in (LAZY, BROKEN):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(registry.BUILTIN_JOBS, "lazy", "tests.support.lazy_builtin_spec")
    monkeypatch.setitem(registry.BUILTIN_JOBS, "broken", "tests.support.broken_builtin_spec")


def test_a_function_given_by_reference_is_imported_at_its_first_call(fresh, tmp_path):
    function = job_function(load_builtin("lazy"))
    assert isinstance(function, LazyJobFunction) and LAZY not in sys.modules
    result = function(make_context(tmp_path, "lazy"))
    assert result.summary == "lazy ran" and LAZY in sys.modules
    assert function.load() is sys.modules[LAZY].run  # kept: later calls import nothing


def test_a_function_given_itself_is_used_as_it_is():
    assert job_function(JobSpec(name="x", func=ok, description="", defaults={})) is ok


def test_an_implementation_that_does_not_import_fails_each_call_naming_the_job_and_the_cause(fresh, tmp_path):
    function = job_function(load_builtin("broken"))
    for _ in range(2):  # not remembered as failed: a retry imports again
        with pytest.raises(RegistryError) as err:
            function(make_context(tmp_path, "broken"))
        assert str(err.value) == (
            "built-in job 'broken': cannot import module 'tests.support.broken_builtin': "
            "ImportError: libfoo.so.3: cannot open shared object file"
        )
    assert BROKEN not in sys.modules


def test_reading_settings_imports_no_implementation_unless_asked_to_check_them(fresh, tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"jobs": {}}))
    loaded = load_settings(settings)
    assert {"lazy", "broken"} <= set(loaded.jobs) and loaded.ok  # scheduled; the broken one fails when it runs
    assert LAZY not in sys.modules and BROKEN not in sys.modules
    checked = load_settings(settings, check_builtins=True)
    assert "lazy" in checked.jobs and "broken" not in checked.jobs
    assert [str(issue) for issue in checked.job_errors["broken"]] == [
        "jobs.definitions.broken: built-in job 'broken': cannot import module 'tests.support.broken_builtin': "
        "ImportError: libfoo.so.3: cannot open shared object file"
    ]
