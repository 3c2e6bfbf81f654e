"""User jobs whose words come from outside ("tests.support.hostile_jobs:NAME"): terminal escapes and
credentials in a summary and in an exception, as a crafted backup member name or an HTTP client's error
would carry them."""

from __future__ import annotations

from pmjobsd.core.context import JobContext, JobResult

# ESC[2J clears the screen, CR returns to the line start to overwrite it, LF forges a new line,
# BEL rings, U+009B is the C1 control sequence introducer.
HOSTILE = "member evil\x1b[2J\rOK all fine\nforged line\x07\x9b31m"
CREDENTIALS = "apikey=APIKEY-CANARY-5 token: TOKEN-CANARY Authorization: Bearer BEARER-CANARY"
CANARIES = ("APIKEY-CANARY-5", "TOKEN-CANARY", "BEARER-CANARY")
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b")


def hostile_summary(ctx: JobContext) -> JobResult:
    """A WARN whose summary quotes a backup member name made of control characters."""
    return JobResult.warn(f"backup has an unexpected {HOSTILE}")


def hostile_error(ctx: JobContext) -> None:
    """Raises an error carrying control characters and credentials: a FAIL to alert on."""
    raise RuntimeError(f"upload of {HOSTILE} failed: {CREDENTIALS}")
