"""``SHA256SUMS`` files in the ``sha256sum -c`` format, and streamed SHA-256 of large files.

Format (GNU coreutils): one line per file, ``<64 hex><space><space or *><name>``;
``sha256sum -c SHA256SUMS`` run in the same folder re-checks every line.  Lines
pmjobsd does not understand (comments, escaped names, other tools' entries)
are kept verbatim and reported; the file is rewritten atomically with its mode
kept (0600 when new).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pmjobsd.system.files import existing_mode, write_atomic

CHECKSUM_FILE_NAME = "SHA256SUMS"
CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for full hashing speed, small enough for memory
_LINE = re.compile(r"^([0-9a-fA-F]{64}) ([ *])(.+)$")


def sha256_file(path: Path, *, chunk_size: int = CHUNK_SIZE, check_cancelled: Callable[[], None] | None = None) -> str:
    """Hex SHA-256 of ``path``, read in ``chunk_size`` pieces (never the whole file in memory)."""
    import hashlib  # loaded when the job runs, not when the daemon reads its options

    digest = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    chunks = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            chunks += 1
            if check_cancelled is not None and chunks % 64 == 0:
                check_cancelled()
    return digest.hexdigest()


@dataclass
class ChecksumFile:
    """The ``SHA256SUMS`` of one folder: ``entries`` (name -> hex digest) and verbatim lines kept.

    ``problems`` lists lines that were not understood (``SHA256SUMS line 3: ...``).
    """

    path: Path
    entries: dict[str, str] = field(default_factory=dict)
    kept_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changed: bool = False

    @classmethod
    def load(cls, folder: Path) -> ChecksumFile:
        """Read ``folder/SHA256SUMS`` (an absent file is an empty one)."""
        sums = cls(folder / CHECKSUM_FILE_NAME)
        try:
            text = sums.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return sums
        for number, line in enumerate(text.splitlines(), 1):
            match = _LINE.match(line)
            if match and not line.startswith("\\") and "/" not in match.group(3):
                sums.entries[match.group(3)] = match.group(1).lower()
            elif line.strip():
                sums.kept_lines.append(line)
                if not line.startswith("#"):
                    sums.problems.append(
                        f"{sums.path} line {number}: expected '<64 hex digits>  <file name>', kept as is"
                    )
        return sums

    def record(self, name: str, digest: str) -> None:
        """Add or replace the digest of ``name``."""
        if self.entries.get(name) != digest:
            self.entries[name] = digest
            self.changed = True

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self.changed = True

    def render(self) -> str:
        lines = list(self.kept_lines)
        lines += [f"{digest}  {name}" for name, digest in sorted(self.entries.items())]
        return "".join(line + "\n" for line in lines)

    def save(self, before_replace: Callable[[], None] | None = None) -> None:
        """Write atomically: temp file in the same folder, fsync, rename, folder fsync; mode kept.

        ``before_replace`` (the run's fencing check) may raise to leave the file as it was.
        """
        data = self.render().encode("utf-8", "surrogateescape")
        write_atomic(self.path, data, existing_mode(self.path), before_replace)
        self.changed = False
