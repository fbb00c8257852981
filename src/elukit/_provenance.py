"""What every report and ledger records about how it was made: the command, elukit's version, the
hash of its source code, the date, the CPU and the threads. Reading it needs nothing beyond the
standard library."""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import platform
import shlex
import sys
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line, quoted so that it can be pasted back into a shell (the CLI
    passes its own canonical `elukit VERB ...` instead)."""
    argv = sys.argv if argv is None else argv
    if argv and os.path.basename(argv[0]) == "elukit":
        return shlex.join(["elukit", *argv[1:]])
    return shlex.join([os.path.basename(sys.executable) or "python", *argv])


def code_sha256(root: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 over the source of the elukit package at `root` (default: the one imported): every
    .py and .c file, in the order of their sorted relative paths, each as its path, a NUL, its
    length, a NUL and its bytes. Unlike the version, it changes with any edit of the code that
    measured a result (a protocol's hash covers what is declared, not the code)."""
    if root is None:
        return _installed_code_sha256()
    digest = hashlib.sha256()
    base = os.fspath(root)
    paths = sorted(os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
                   for folder, _, names in os.walk(base) for name in names if name.endswith((".py", ".c")))
    for relative in paths:
        with open(os.path.join(base, relative), "rb") as handle:
            content = handle.read()
        digest.update(relative.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _installed_code_sha256() -> str:
    return code_sha256(os.path.dirname(os.path.abspath(__file__)))


def provenance(threads: int | None = None, command: str | None = None) -> dict[str, Any]:
    """{command, elukit_version, code_sha256, date (UTC, ISO 8601), cpu, cpu_count, threads, python, platform}."""
    from elukit import __version__

    return {
        "command": command if command is not None else command_line(),
        "elukit_version": __version__,
        "code_sha256": code_sha256(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def provenance_line(record: dict[str, Any]) -> str:
    """One sentence for a report's header."""
    threads = f", {record['threads']} torch thread{'s' if record['threads'] != 1 else ''}" if record.get("threads") else ""
    code = f" (code sha256 {record['code_sha256'][:16]})" if record.get("code_sha256") else ""
    return (f"Made by `{record['command']}` with elukit {record['elukit_version']}{code} on {record['date']}, "
            f"{record['cpu']} ({record['cpu_count']} CPUs{threads}), Python {record['python']}, {record['platform']}.")
