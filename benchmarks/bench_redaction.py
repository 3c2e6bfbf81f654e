"""Benchmark: redacting the app's log for the support bundle.

pmjobsd's VaultRedactor (one Aho-Corasick pass, pyahocorasick) against the
obvious alternative, one regular expression of every vault term
(``re.compile("|".join(map(re.escape, terms)), re.I)``), on the same
generated log and vault terms; the outputs are checked equal.
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pmjobsd.diagnostics.redaction import VaultRedactor


def _data(entries: int, lines: int) -> tuple[dict[str, str], str]:
    rng = random.Random(7)
    terms = {}
    for n in range(entries):
        terms[f"site{n}-{rng.randrange(10**6)}.example"] = f"<website:{n:016x}>"
        terms[f"user{n}_{rng.randrange(10**6)}"] = f"<username:{n:016x}>"
    names = list(terms)
    log = []
    for n in range(lines):
        if n % 4 == 0:
            log.append(f"Added new password for {rng.choice(names)} in category General")
        else:
            log.append(f"Auto-lock timer reset after {rng.randrange(1000)} seconds of activity")
    return terms, "\n".join(log) + "\n"


def _regex_baseline(terms: dict[str, str], text: str) -> str:
    by_folded = {term.lower(): tag for term, tag in terms.items()}
    pattern = re.compile(
        r"(?<![\w])(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")(?![\w])", re.I
    )
    return pattern.sub(lambda m: by_folded[m.group(0).lower()], text)


def run(quick: bool = False) -> list[dict]:
    rows = []
    for entries in (100, 1000) if quick else (100, 1000, 2500):
        terms, text = _data(entries, 5000 if quick else 20000)
        redactor = VaultRedactor(terms, lambda entry_id: str(entry_id))
        started = time.perf_counter()
        ours = redactor._replace_terms(text)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        theirs = _regex_baseline(terms, text)
        baseline_s = time.perf_counter() - started
        assert ours == theirs, "outputs differ"
        rows.append(
            {
                "benchmark": f"redact {len(text) // 1024} KiB app log, {entries} vault entries",
                "pmjobsd": round(ours_s * 1000, 1),
                "baseline": round(baseline_s * 1000, 1),
                "baseline_name": "one re alternation of all terms (re.I)",
                "unit": "ms",
                "ratio": round(ours_s / baseline_s, 3) if baseline_s else None,
                "notes": f"{2 * entries} terms; same output checked",
            }
        )
    return rows


if __name__ == "__main__":
    keys = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
    print(" | ".join(keys))
    for row in run(quick="--quick" in sys.argv):
        print(" | ".join(str(row[key]) for key in keys))
