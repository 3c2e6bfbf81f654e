"""Settings: defaults, every error at once with its JSON path, isolation of a bad job."""

import json
import os
import re

import pytest

from pmjobsd.core import registry
from pmjobsd.core.settings import load_settings, parse_duration, settings_schema


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("content", [None, "", "   \n"])
def test_missing_or_empty_file_means_defaults(tmp_path, content):
    path = tmp_path / "settings.json"
    if content is not None:
        write(path, content)
    loaded = load_settings(path)
    assert loaded.ok and not loaded.fatal
    assert loaded.settings.max_workers == 4
    assert set(loaded.jobs) == set(registry.BUILTIN_JOBS)


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"jobs": 5}', "expected an object"),
    ],
)
def test_unreadable_file_falls_back_to_defaults_and_says_why(tmp_path, content, words):
    loaded = load_settings(write(tmp_path / "settings.json", content))
    assert loaded.fatal and not loaded.ok
    assert words in str(loaded.issues[0])
    assert loaded.settings.max_workers == 4


def test_every_error_is_reported_with_its_json_path(tmp_path):
    loaded = load_settings(
        write(
            tmp_path / "s.json",
            {
                "jobs": {
                    "max_workers": 0,
                    "timezone": "Mars/Olympus",
                    "alerts": {"escalate_after": "twice"},
                    "colour": "red",
                }
            },
        )
    )
    paths = sorted(issue.path for issue in loaded.issues)
    assert paths == ["jobs.alerts.escalate_after", "jobs.colour", "jobs.max_workers", "jobs.timezone"]
    assert "unknown time zone 'Mars/Olympus'" in str(loaded.issues)
    assert loaded.fatal  # outside the definitions: nothing of it can be trusted


def test_a_bad_job_disables_that_job_only(tmp_path):
    loaded = load_settings(
        write(
            tmp_path / "s.json",
            {
                "jobs": {
                    "max_workers": 2,
                    "definitions": {
                        "good": {"cron": "@hourly", "callable": "tests.support.sample_jobs:ok"},
                        "bad_cron": {"cron": "61 * * * *", "callable": "tests.support.sample_jobs:ok"},
                        "bad_import": {"cron": "@hourly", "callable": "no_such_module:job"},
                        "bad_attr": {"cron": "@hourly", "callable": "tests.support.sample_jobs:nope"},
                        "unknown": {"cron": "@hourly"},
                        "bad_timeout": {
                            "cron": "@hourly",
                            "callable": "tests.support.sample_jobs:ok",
                            "timeout": "ten minutes",
                            "overlap": "sometimes",
                        },
                    },
                }
            },
        )
    )
    assert not loaded.fatal
    assert loaded.settings.max_workers == 2
    assert "good" in loaded.jobs
    errors = {name: [str(issue) for issue in issues] for name, issues in loaded.job_errors.items()}
    assert errors["bad_cron"] == [
        "jobs.definitions.bad_cron.cron: Bad minute in '61 * * * *'; expected 5 fields (minute hour day month "
        "weekday), 6 with seconds first, or a macro such as @hourly"
    ]
    assert "cannot import module 'no_such_module'" in errors["bad_import"][0]
    assert "has no attribute 'nope'" in errors["bad_attr"][0]
    assert "not built in and no 'callable'" in errors["unknown"][0]
    assert sorted(e.split(":")[0] for e in errors["bad_timeout"]) == [
        "jobs.definitions.bad_timeout.overlap",
        "jobs.definitions.bad_timeout.timeout",
    ]


def test_user_values_override_builtin_defaults_key_by_key(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.BUILTIN_JOBS, "sample", "tests.support.sample_builtin")
    loaded = load_settings(write(tmp_path / "s.json", {"jobs": {"definitions": {"sample": {"retries": 7}}}}))
    job = loaded.jobs["sample"]
    assert job.builtin and job.definition.retries == 7
    assert job.definition.cron == "@daily"  # from the job's own defaults
    assert job.definition.timeout == 900  # from the general defaults


def test_a_builtin_name_cannot_be_taken_by_a_callable(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.BUILTIN_JOBS, "sample", "tests.support.sample_builtin")
    loaded = load_settings(
        write(
            tmp_path / "s.json",
            {"jobs": {"definitions": {"sample": {"cron": "@hourly", "callable": "tests.support.sample_jobs:ok"}}}},
        )
    )
    assert "is a built-in job" in str(loaded.job_errors["sample"][0])


@pytest.mark.parametrize(
    "value, seconds", [(90, 90), ("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400), ("250ms", 0.25), (1.5, 1.5)]
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", -1, True, "5 weeks"])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def _resolve(schema, node):
    """``node``, or what its ``$ref`` names in the document's ``$defs``."""
    ref = node.get("$ref", "")
    return schema["$defs"][ref.removeprefix("#/$defs/")] if ref else node


def test_schema_describes_definitions():
    schema = settings_schema()
    definition = _resolve(schema, schema["properties"]["definitions"]["additionalProperties"])
    assert {"cron", "timeout", "retries", "backoff", "jitter", "overlap", "catch_up", "callable", "options"} <= set(
        definition["properties"]
    )
    assert definition["required"] == ["cron"] and definition["additionalProperties"] is False
    assert _resolve(schema, definition["properties"]["overlap"])["enum"] == ["allow", "queue", "skip"]
    # A duration is seconds or a string such as "90s"; its bounds apply to the number.
    timeout = definition["properties"]["timeout"]
    assert timeout["default"] == 900.0 and "cancelled" in timeout["description"]
    assert timeout["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0}
    assert timeout["anyOf"][1]["type"] == "string" and re.match(timeout["anyOf"][1]["pattern"], "15m")
    rotation = schema["x-builtin-jobs"]["log_rotation"]
    options = _resolve(schema, rotation["options"])
    assert rotation["defaults"]["cron"] == "*/5 * * * *" and options["properties"]["every"]["default"] == "30 3 * * 0"
    assert re.match(options["properties"]["min_size"]["anyOf"][1]["pattern"], "10MB")


def test_app_keys_survive_and_are_visible(tmp_path):
    loaded = load_settings(write(tmp_path / "s.json", {"theme": "dark", "browser_bridge": {"port": 43110}}))
    assert loaded.app_settings["browser_bridge"]["port"] == 43110


def test_an_unreadable_alert_target_is_a_config_error_that_does_not_quote_it(tmp_path):
    loaded = load_settings(
        write(
            tmp_path / "s.json",
            {"jobs": {"alerts": {"targets": ["json://[abc/hook-T0KEN"], "escalation_targets": ["no-scheme-T0KEN"]}}},
        )
    )
    assert loaded.fatal
    paths = sorted(issue.path for issue in loaded.issues)
    assert paths == ["jobs.alerts.escalation_targets.0", "jobs.alerts.targets.0"]
    assert "T0KEN" not in " ".join(issue.message for issue in loaded.issues)


def test_a_folder_of_another_user_needs_the_opt_in(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    options = {"backup_dirs": [str(foreign)]}
    loaded = load_settings(
        write(tmp_path / "s.json", {"jobs": {"definitions": {"backup_integrity_check": {"options": options}}}})
    )
    [issue] = loaded.job_errors["backup_integrity_check"]
    assert issue.path == "jobs.definitions.backup_integrity_check.options.backup_dirs.0"
    assert "owned by uid 65534" in issue.message and "allow_outside_paths" in issue.message
    opted_in = {"options": options, "allow_outside_paths": True}
    loaded = load_settings(write(tmp_path / "s.json", {"jobs": {"definitions": {"backup_integrity_check": opted_in}}}))
    assert "backup_integrity_check" in loaded.jobs

    loaded = load_settings(write(tmp_path / "s.json", {"jobs": {"paths": {"data_dir": str(foreign)}}}))
    assert loaded.fatal and loaded.settings.paths.data_dir is None
    assert [issue.path for issue in loaded.issues] == ["jobs.paths.data_dir"]
    loaded = load_settings(
        write(tmp_path / "s.json", {"jobs": {"allow_outside_paths": True, "paths": {"data_dir": str(foreign)}}})
    )
    assert loaded.ok and loaded.settings.paths.data_dir == str(foreign)


def test_invalid_options_of_a_builtin_job_disable_it_with_their_paths(tmp_path):
    """A built-in job's options are validated on load, not first when it runs (or never)."""
    definitions = {
        "log_rotation": {"options": {"max_size": "huge", "colour": "red"}},
        "backup_integrity_check": {"options": {"member_limit_factor": "lots"}},
        "log_purge": {"enabled": True},
    }
    loaded = load_settings(write(tmp_path / "s.json", {"jobs": {"definitions": definitions}}))
    assert not loaded.fatal and not loaded.ok
    errors = {name: sorted(issue.path for issue in issues) for name, issues in loaded.job_errors.items()}
    assert errors == {
        "log_rotation": [
            "jobs.definitions.log_rotation.options.colour",
            "jobs.definitions.log_rotation.options.max_size",
        ],
        "backup_integrity_check": ["jobs.definitions.backup_integrity_check.options.member_limit_factor"],
    }
    assert "log_rotation" not in loaded.jobs and "backup_integrity_check" not in loaded.jobs
    assert "log_purge" in loaded.jobs  # the other jobs are untouched
    good = load_settings(
        write(tmp_path / "good.json", {"jobs": {"definitions": {"log_rotation": {"options": {"max_size": "10MB"}}}}})
    )
    assert good.ok and good.jobs["log_rotation"].options.max_size == 10_000_000  # valid options are parsed, typed
