"""Fixtures for calling job functions directly: a temporary home and a captured jobs.log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pmjobsd.observe.joblog import setup_logging
from tests.support.helpers import app_paths


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A temporary HOME (job tests build the app's folders under it with tests.support.helpers.app_paths)."""
    return tmp_path / "home"


@pytest.fixture
def jobs_log(home: Path):
    """pmjobsd's JSON log written to the home's jobs.log, DEBUG and up, for privacy assertions."""
    path = app_paths(home).jobs_log_path
    setup_logging(path, console=False, level=logging.DEBUG)
    yield path
    setup_logging(None, console=False)
