"""The HTML status page: one self-contained document rendered from the status.

No scripts, no external assets: inline CSS only, and a ``<meta refresh>`` to
reload itself.  Every value from the status is escaped.  One row per job:
a badge (OK / WARN / FAIL and the other states, colour *and* text), last
run, duration, next run, summary, and a row of coloured marks for the job's
recent attempts (oldest left, newest right; hover for time and status).
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from pmjobsd.core.outcomes import JobState, Severity, Status
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.observe.status import JobStatus, RecentAttempt, StatusSnapshot

REFRESH_SECONDS = 30
# The colours of the states that are no verdict (a verdict is coloured by its severity).
_NO_VERDICT_CLASS = {JobState.RUNNING: "running", JobState.NEVER_RUN: "idle", JobState.DISABLED: "off"}


def _severity_class(severity: Severity) -> str:
    return severity.name.lower()  # ok, warn, fail


def _badge_class(state: JobState) -> str:
    return _severity_class(state.verdict) if state.verdict is not None else _NO_VERDICT_CLASS[state]


def _mark_class(status: Status) -> str:
    return _severity_class(status.severity) if status.finished else "running"


STYLE = """
:root { color-scheme: light dark; --ok:#1a7f37; --warn:#b35900; --fail:#cf222e; --run:#0969da; --idle:#6e7781; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
.meta { color: #6e7781; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { white-space: nowrap; font-weight: 600; font-size: .85rem; text-transform: uppercase; letter-spacing: .03em; color: #57606a; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; white-space: nowrap; min-width: 4.2em; text-align: center; padding: .1rem .5rem; border-radius: 1rem;
         color: #fff; font-weight: 700; font-size: .8rem; }
.badge.ok { background: var(--ok); } .badge.warn { background: var(--warn); } .badge.fail { background: var(--fail); }
.badge.running { background: var(--run); } .badge.idle, .badge.off { background: var(--idle); }
.marks { display: flex; gap: 3px; }
.mark { width: 10px; height: 18px; border-radius: 2px; background: var(--idle); }
.mark.ok { background: var(--ok); } .mark.warn { background: var(--warn); } .mark.fail { background: var(--fail); }
.mark.running { background: var(--run); } .mark.retried { opacity: .45; }
.summary { max-width: 38rem; }
.errors { color: var(--fail); }
.when { white-space: nowrap; }
.sub { color: #6e7781; font-size: .85em; }
tr.disabled { opacity: .55; }
"""


# The phrase's regimes: below the limit (seconds of span), the unit and its rounding step.
_REGIMES = ((90.0, 1.0), (90 * 60.0, 60.0), (36 * 3600.0, 360.0), (float("inf"), 8640.0))
_MARGIN = 1e-6  # seconds kept clear of a rounding boundary (float error in the arithmetic)


class _Moment:
    """A time on the page whose phrase ("5 s ago") depends on when the page is served.

    The phrase is kept with the span of serving times over which it cannot change (clear
    of every rounding boundary), so a page served again soon computes only the ones that do.
    """

    __slots__ = ("at_seconds", "opening", "opening_bytes", "_kept")

    def __init__(self, moment: datetime):
        self.at_seconds = moment.timestamp()
        utc = moment.astimezone(timezone.utc)
        # What strftime("%Y-%m-%d %H:%M:%S UTC") writes, without its cost (tens of us a call).
        exact = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} {utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} UTC"
        self.opening = f'<span class="when" title="{escape(exact)}">'
        self.opening_bytes = self.opening.encode()
        self._kept: tuple[float, float, bytes] = (1.0, 0.0, b"")  # (from, to, span html): empty

    def at(self, now: float) -> str:
        """The span at ``now`` (epoch seconds); its text is digits and words: nothing to escape."""
        return self.at_bytes(now).decode()

    def at_bytes(self, now: float) -> bytes:
        kept = self._kept
        if kept[0] < now < kept[1]:
            return kept[2]
        html, margin = self._html(now)
        if margin > 2 * _MARGIN:
            self._kept = (now - margin + _MARGIN, now + margin - _MARGIN, html)
        return html

    def _html(self, now: float) -> tuple[bytes, float]:
        """The span at ``now`` and how far ``now`` may move either way without changing it."""
        seconds = self.at_seconds - now
        span = -seconds if seconds < 0 else seconds
        index = next(index for index, (limit, _) in enumerate(_REGIMES) if span < limit)
        limit, step = _REGIMES[index]
        lower = _REGIMES[index - 1][0] if index else 0.0
        # %-formatting of bytes rounds as str.format does (half to even): the same text either way.
        if step == 1.0:
            phrase = b"%.0f s" % span
        elif step == 60.0:
            phrase = b"%.0f min" % (span / 60)
        elif step == 360.0:
            phrase = b"%.1f h" % (span / 3600)
        else:
            phrase = b"%.1f d" % (span / 86400)
        below = span - (span // step) * step  # the boundaries are at (k + 0.5) * step
        to_boundary = abs(below - step / 2)
        margin = min(to_boundary, span - lower, limit - span, span)  # a boundary, the regime's edges, the sign
        text = b"in " + phrase if seconds > 0 else phrase + b" ago"
        return self.opening_bytes + text + b"</span>", margin


def _moment(moment: datetime | float | None) -> _Moment | str:
    if moment is None:
        return "&ndash;"
    return _Moment(moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, timezone.utc))


def _when(moment: datetime | float | None, now: datetime) -> str:
    """A moment (a datetime, or epoch seconds) as a short relative phrase, with the exact time in a tooltip."""
    part = _moment(moment)
    return part if isinstance(part, str) else part.at(now.timestamp())


def _duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "&ndash;"
    seconds = milliseconds / 1000
    if seconds < 1:
        return f"{milliseconds} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _marks(recent: tuple[RecentAttempt, ...]) -> str:
    marks = []
    for attempt in reversed(recent):  # newest first in the status
        css, status = _mark_class(attempt.status), attempt.status.value
        if attempt.status.failed and not attempt.final:
            css += " retried"
            status += " (retried)"
        title = f"{utc_iso(attempt.started_at)} {status}"
        marks.append(f'<span class="mark {css}" title="{escape(title)}" data-status="{escape(status)}"></span>')
    return f'<div class="marks">{"".join(marks)}</div>' if marks else '<span class="sub">no runs yet</span>'


def _row(job: JobStatus) -> list[str | _Moment]:
    """A job's row: text, and the moments whose phrases are filled in when the page is served."""
    last = job.last_run
    if job.config_errors:
        summary = f'<span class="errors">{escape("; ".join(job.config_errors))}</span>'
    else:
        summary = escape(last.summary if last else "")
    if job.running is not None and job.running.progress_message:
        summary += f'<div class="sub">running: {escape(job.running.progress_message)}</div>'
    failures = job.consecutive_failures
    if failures:
        summary += f'<div class="sub">{failures} failure{"s" if failures > 1 else ""} in a row</div>'
    cron = f'<div class="sub">{escape(job.cron)}</div>' if job.cron else ""
    dimmed = ' class="disabled"' if job.status is JobState.DISABLED else ""
    badge = escape(job.status.value.replace("_", " "))
    return [
        f'<tr data-job="{escape(job.name)}"{dimmed}>'
        f"<td><strong>{escape(job.name)}</strong>{cron}</td>"
        f'<td><span class="badge {_badge_class(job.status)}">{badge}</span></td>'
        "<td>",
        _moment(last.started_at if last else None),
        f'</td><td class="num">{_duration(last.duration_ms if last else None)}</td><td>',
        _moment(job.next_run),
        f'</td><td class="summary">{summary}</td><td>{_marks(job.recent)}</td></tr>',
    ]


_UPDATED = object()  # in a template: when this status was made, at each render


class PageTemplate:
    """The page for one status, but for its relative times (filled in by :meth:`at`).

    It serves every later status with the same :meth:`key`: the same job entries (a live
    daemon hands out the same tuple until something in it changed), settings and daemon
    fields the page shows.
    """

    def __init__(self, status: StatusSnapshot):
        self.jobs = status.jobs  # kept alive: the key names it by id()
        self.key = self.key_of(status)
        daemon = status.daemon
        overall = status.severity
        # Enabled jobs first (in the status's order), switched-off ones after them.
        ordered = sorted(status.jobs, key=lambda job: job.status is JobState.DISABLED)
        notes = []
        if daemon.abandoned_threads:
            notes.append(f"{daemon.abandoned_threads} timed-out job thread(s) still running")
        notes += [f"settings: {issue}" for issue in status.settings.issues]
        notes_html = "".join(f'<p class="errors">{escape(note)}</p>' for note in notes)
        parts: list[str | _Moment | object] = [
            f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pmjobsd: {escape(overall.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>pmjobsd <span class="badge {_severity_class(overall)}" id="overall">{escape(overall.name)}</span></h1>
<p class="meta">version {escape(daemon.version)} &middot; pid {escape(str(daemon.pid))}
&middot; started """,
            _moment(daemon.started_at),
            " &middot; updated ",
            _UPDATED,
            f"""
&middot; refreshes every {REFRESH_SECONDS} s</p>
{notes_html}
<table>
<thead><tr><th>Job</th><th>Status</th><th>Last run</th><th>Duration</th><th>Next run</th><th>Summary</th><th>Recent runs</th></tr></thead>
<tbody>
""",
        ]
        for index, job in enumerate(ordered):
            if index:
                parts.append("\n")
            parts += _row(job)
        parts.append("""
</tbody>
</table>
</body>
</html>
""")
        self._encoded: list[bytes | _Moment | object] | None = None
        self.parts: list[str | _Moment | object] = []
        for part in parts:  # neighbouring text joined once, here
            if isinstance(part, str) and self.parts and isinstance(self.parts[-1], str):
                self.parts[-1] += part
            else:
                self.parts.append(part)

    @staticmethod
    def key_of(status: StatusSnapshot) -> tuple[Any, ...]:
        daemon = status.daemon
        return (id(status.jobs), status.settings, daemon.version, daemon.pid, daemon.started_at,
                daemon.abandoned_threads, status.severity)  # fmt: skip

    def encoded(self, status: StatusSnapshot, now: datetime) -> bytes:
        """:meth:`at` in UTF-8: the text between the times encoded once, with the template."""
        if self._encoded is None:
            self._encoded = [part.encode() if part.__class__ is str else part for part in self.parts]
        moment = now.timestamp()
        updated = _when(status.generated_at, now).encode()
        return b"".join(
            [
                part if part.__class__ is bytes else updated if part is _UPDATED else part.at_bytes(moment)  # type: ignore[union-attr]
                for part in self._encoded
            ]
        )

    def at(self, status: StatusSnapshot, now: datetime) -> str:
        moment = now.timestamp()
        updated = _when(status.generated_at, now)
        return "".join(
            [
                part if part.__class__ is str else updated if part is _UPDATED else part.at(moment)  # type: ignore[union-attr]
                for part in self.parts
            ]
        )


def render_page(status: StatusSnapshot, now: datetime | None = None, template: PageTemplate | None = None) -> str:
    """The status page for ``status`` (what ``pmjobsd status --json`` shows).

    ``template``: a :class:`PageTemplate` of an earlier status, used when its key is this
    one's (the page is then the same as a new template's, without rendering the rows again).
    """
    now = now or datetime.now(timezone.utc)
    if template is None or template.key != PageTemplate.key_of(status):
        template = PageTemplate(status)
    return template.at(status, now)
