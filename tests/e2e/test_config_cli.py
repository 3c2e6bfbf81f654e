"""`pmjobsd config validate|show` on real files, through the real command line."""

from __future__ import annotations

import json

from tests.support.daemon import AppHome


def _write(home: AppHome, text: str) -> None:
    home.settings_path.write_text(text)


def test_validate_reports_every_problem_at_once(home):
    jobs = {
        "max_workers": 0,
        "definitions": {"mine": {"cron": "61 * * * *", "callable": "tests.support.sample_jobs:ok"}},
    }
    _write(home, json.dumps({"jobs": jobs}))
    result = home.cli("config", "validate")
    assert result.returncode == 1
    assert "jobs.max_workers:" in result.stderr
    assert "jobs.definitions.mine.cron: Bad minute in '61 * * * *'" in result.stderr


def test_validate_rejects_a_builtin_jobs_invalid_options(home):
    jobs = {"definitions": {"log_rotation": {"options": {"max_size": "huge"}}}}
    _write(home, json.dumps({"jobs": jobs}))
    result = home.cli("config", "validate")
    assert result.returncode == 1
    assert "jobs.definitions.log_rotation.options.max_size:" in result.stderr


def test_the_invalid_json_message_names_the_path_once(home):
    _write(home, "{not json")
    result = home.cli("config", "validate")
    assert result.returncode == 1
    assert result.stderr.count(str(home.settings_path)) == 1, result.stderr
    assert "not valid JSON" in result.stderr
    doctor = home.cli("doctor", "--json")
    settings = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "settings")
    assert settings["message"].count(str(home.settings_path)) == 1, settings


def test_show_redacts_credentials_only(home):
    secret_hook = "json://127.0.0.1:8/hook-T0KEN"
    jobs = {
        "alerts": {"targets": [secret_hook], "webhook_secret": "S3CRET"},
        "definitions": {
            "breach_cache_refresh": {"options": {"api_base": "https://api.pwnedpasswords.com"}},
            "mine": {"cron": "@daily", "callable": "tests.support.sample_jobs:ok", "options": {"to": "a@example.org"}},
        },
    }
    _write(home, json.dumps({"jobs": jobs}))
    result = home.cli("config", "show")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "T0KEN" not in result.stdout and "S3CRET" not in result.stdout
    assert shown["alerts"]["targets"] == ["<redacted>"] and shown["alerts"]["webhook_secret"] == "<redacted>"
    options = shown["definitions"]["breach_cache_refresh"]["options"]
    assert options["api_base"] == "https://api.pwnedpasswords.com"
    assert options["breach_api_base"] == "https://haveibeenpwned.com"
    assert shown["definitions"]["mine"]["cron"] == "@daily"
    assert shown["definitions"]["mine"]["options"]["to"] == "<redacted>"
