"""The report's files are its own: a second report replaces them, a person's report.md in the folder is refused.

`python -m tamp.report DIR` writes into DIR (or --out), a folder that may hold a person's own
report.md or report.csv. tamp.report keeps `.tamp_report.json` beside its files, listing each file it
wrote with the SHA-256 of its bytes; a file of a report name is replaced only when that list holds
it, byte for byte. Anything else at one of those names (a file tamp.report did not write, one edited
since, a symbolic link) stops the report before it writes anything, in one line naming the file.
Every file is written beside and renamed (tamp.core.io), so nothing is written through a link, and the
list records the new digests before the files are replaced: a report cut short still knows its files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from tamp.core.io import write_bytes_atomic, write_json_atomic
from tamp.reporting.load import ReportError

#: the list of files tamp.report wrote in a folder, with the SHA-256 of each
MANIFEST = ".tamp_report.json"
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_ADVICE = "give --out NEW_FOLDER, or move it away"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_plain(path: Path) -> bytes:
    """The bytes of the regular file at `path`, read without following a link (ELOOP / ReportError otherwise)."""
    fd = os.open(path, _NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReportError(f"{path} is not a plain file; tamp.report writes only files of its own: {_ADVICE}")
        return f.read()


class ReportOutputs:
    """The report files of one folder: which of them tamp.report wrote (`owned`), and writing them (`write`)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.manifest = self.out / MANIFEST

    def owned(self) -> dict[str, list[str]]:
        """{file name: SHA-256 digests tamp.report wrote it with}; empty when the folder has no list."""
        if os.path.islink(self.manifest):
            raise ReportError(f"{self.manifest} is a symbolic link (to {os.readlink(self.manifest)}); tamp.report "
                              f"never reads or writes through a link: {_ADVICE}")
        try:
            data = json.loads(_read_plain(self.manifest))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):  # unreadable or garbage: it vouches for nothing
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            return {}
        return {name: [d for d in digests if isinstance(d, str)] for name, digests in files.items()
                if isinstance(name, str) and isinstance(digests, list)}

    def _problem(self, name: str, owned: dict[str, list[str]]) -> tuple[str | None, str | None]:
        """(why `name` may not be replaced, None when it may; the digest of the file there now, if ours)."""
        path = self.out / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None, None
        if stat.S_ISLNK(info.st_mode):
            return f"{path} is a symbolic link (to {os.readlink(path)}); tamp.report never writes through a link", None
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is not a file tamp.report wrote (not a plain file)", None
        if name not in owned:
            return (f"{path} is not a file tamp.report wrote ({MANIFEST} beside it does not list it); tamp never "
                    "overwrites a file it did not write"), None
        digest = _digest(_read_plain(path))
        if digest not in owned[name]:
            return (f"{path} was changed since tamp.report wrote it; tamp never overwrites a file it did not "
                    "write"), None
        return None, digest

    def check(self, names: list[str]) -> dict[str, list[str]]:
        """ReportError (one line) unless every name is absent or tamp.report's own; {name: digest now} of those present."""
        owned = self.owned()
        present: dict[str, list[str]] = {}
        refused: list[str] = []
        for name in names:
            why, digest = self._problem(name, owned)
            if why is not None:
                refused.append(why)
            elif digest is not None:
                present[name] = [digest]
        if refused:
            more = f" (and {len(refused) - 1} more report file(s))" if len(refused) > 1 else ""
            raise ReportError(f"{refused[0]}{more}: {_ADVICE}")
        return present

    def write(self, files: dict[str, bytes]) -> list[Path]:
        """Write `files` ({name: bytes}) into the folder, each only if `check` finds it absent or ours."""
        if self.out.exists() and not self.out.is_dir():
            raise ReportError(f"{self.out} is a file, not a folder; valid: a folder for the report's files (--out)")
        self.out.mkdir(parents=True, exist_ok=True)
        present = self.check(list(files))
        digests = {name: _digest(data) for name, data in files.items()}
        kept = {name: d for name, d in self.owned().items() if name not in files}  # another report's files
        pending = {name: sorted({*present.get(name, []), digest}) for name, digest in digests.items()}
        write_json_atomic(self.manifest, {"written_by": "tamp.report", "files": {**kept, **pending}})
        paths = [write_bytes_atomic(self.out / name, data) for name, data in files.items()]
        write_json_atomic(self.manifest, {"written_by": "tamp.report",
                                          "files": {**kept, **{name: [d] for name, d in digests.items()}}})
        return paths
