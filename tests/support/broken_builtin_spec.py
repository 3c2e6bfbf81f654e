"""A built-in-shaped declaration whose implementation does not import (registry and settings tests)."""

from tests.support.lazy_builtin_spec import BROKEN as JOB

__all__ = ["JOB"]
