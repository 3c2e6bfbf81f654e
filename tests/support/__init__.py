"""Helpers shared by the tests: fixtures of the app's files, fake servers, sample jobs, a daemon process."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
