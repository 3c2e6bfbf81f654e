"""The HTML status page: one self-contained document rendered from the status document.

No scripts, no external assets: inline CSS only, and a ``<meta refresh>`` to
reload itself.  Every value from the document is escaped.  One row per job:
a badge (OK / WARN / FAIL and the other states, colour *and* text), last
run, duration, next run, summary, and a row of coloured marks for the job's
recent attempts (oldest left, newest right; hover for time and status).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from html import escape
from typing import Any

REFRESH_SECONDS = 30

_BADGE_CLASS = {
    "OK": "ok",
    "WARN": "warn",
    "FAIL": "fail",
    "RUNNING": "running",
    "NEVER_RUN": "idle",
    "DISABLED": "off",
}
_MARK_CLASS = {
    "OK": "ok",
    "WARN": "warn",
    "FAIL": "fail",
    "TIMEOUT": "fail",
    "INTERRUPTED": "warn",
    "RUNNING": "running",
}

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


def _when(value: str | None, now: datetime) -> str:
    """An ISO time as a short relative phrase, with the exact time in a tooltip."""
    if not value:
        return "&ndash;"
    moment = datetime.fromisoformat(value)
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    if span < 90:
        phrase = f"{span:.0f} s"
    elif span < 90 * 60:
        phrase = f"{span / 60:.0f} min"
    elif span < 36 * 3600:
        phrase = f"{span / 3600:.1f} h"
    else:
        phrase = f"{span / 86400:.1f} d"
    text = f"in {phrase}" if seconds > 0 else f"{phrase} ago"
    exact = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<span class="when" title="{escape(exact)}">{escape(text)}</span>'


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


def _marks(job: Mapping[str, Any]) -> str:
    marks = []
    for attempt in reversed(job.get("recent", [])):  # the document lists newest first
        status = attempt.get("status", "")
        css = _MARK_CLASS.get(status, "idle")
        if css == "fail" and not attempt.get("final", True):
            css += " retried"
            status += " (retried)"
        title = f"{attempt.get('started_at') or ''} {status}".strip()
        marks.append(f'<span class="mark {css}" title="{escape(title)}" data-status="{escape(status)}"></span>')
    return f'<div class="marks">{"".join(marks)}</div>' if marks else '<span class="sub">no runs yet</span>'


def _row(job: Mapping[str, Any], now: datetime) -> str:
    status = job.get("status", "")
    last = job.get("last_run") or {}
    errors = job.get("config_errors") or []
    if errors:
        summary = f'<span class="errors">{escape("; ".join(errors))}</span>'
    else:
        summary = escape(last.get("summary") or "")
    running = job.get("running")
    if running and running.get("progress_message"):
        summary += f'<div class="sub">running: {escape(running["progress_message"])}</div>'
    failures = int(job.get("consecutive_failures") or 0)
    if failures:
        summary += f'<div class="sub">{failures} failure{"s" if failures > 1 else ""} in a row</div>'
    cron = f'<div class="sub">{escape(job["cron"])}</div>' if job.get("cron") else ""
    dimmed = ' class="disabled"' if status == "DISABLED" else ""
    return (
        f'<tr data-job="{escape(job["name"])}"{dimmed}>'
        f"<td><strong>{escape(job['name'])}</strong>{cron}</td>"
        f'<td><span class="badge {_BADGE_CLASS.get(status, "idle")}">{escape(status.replace("_", " "))}</span></td>'
        f"<td>{_when(last.get('started_at'), now)}</td>"
        f'<td class="num">{_duration(last.get("duration_ms"))}</td>'
        f"<td>{_when(job.get('next_run'), now)}</td>"
        f'<td class="summary">{summary}</td>'
        f"<td>{_marks(job)}</td>"
        "</tr>"
    )


def render_page(document: Mapping[str, Any], now: datetime | None = None) -> str:
    """The status page for ``document`` (the ``pmjobsd status --json`` shape)."""
    now = now or datetime.now(timezone.utc)
    daemon = document.get("daemon", {})
    overall = document.get("status", "OK")
    # Enabled jobs first (in the document's order), switched-off ones after them.
    jobs = sorted(document.get("jobs", []), key=lambda job: job.get("status") == "DISABLED")
    rows = "\n".join(_row(job, now) for job in jobs)
    notes = []
    if daemon.get("abandoned_threads"):
        notes.append(f"{int(daemon['abandoned_threads'])} timed-out job thread(s) still running")
    notes += [f"settings: {issue}" for issue in document.get("settings", {}).get("issues", [])]
    notes_html = "".join(f'<p class="errors">{escape(note)}</p>' for note in notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pmjobsd: {escape(overall)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>pmjobsd <span class="badge {_BADGE_CLASS.get(overall, "idle")}" id="overall">{escape(overall)}</span></h1>
<p class="meta">version {escape(str(daemon.get("version", "")))} &middot; pid {escape(str(daemon.get("pid", "")))}
&middot; started {_when(daemon.get("started_at"), now)} &middot; updated {_when(document.get("generated_at"), now)}
&middot; refreshes every {REFRESH_SECONDS} s</p>
{notes_html}
<table>
<thead><tr><th>Job</th><th>Status</th><th>Last run</th><th>Duration</th><th>Next run</th><th>Summary</th><th>Recent runs</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
