"""Output files written the way a user's own files are: atomically, and with the user's umask.

`tempfile.mkstemp` creates files with mode 0600 whatever the umask, so a report or figure written
through it and renamed into place stays private to its owner (issue 11: report.html, figures and
`elukit plot` output were 0600 under umask 022). Here the temporary file is created with
``os.open(..., 0o666)``, which the kernel masks with the umask exactly as it does for ``open()``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_output(path) as temporary:`` write to `temporary`; on success it is renamed
    over `path`, on error it is removed. The parent folder must exist (it is never created here).

    The file gets mode 0666 & ~umask, like any file the user creates.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(descriptor)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically, with the user's umask."""
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable_directory(path: str | os.PathLike[str], option: str) -> None:
    """Raise ValueError naming `option` unless folder `path` exists or can be created, and can
    hold a new file. Leaves the file system as it found it: folders created to find out are removed.

    The probe creates and removes a file: asking ``os.access`` is not enough (as root it says yes
    for /proc, where nothing can be created).
    """
    target = Path(path)
    created: list[Path] = []
    try:
        missing = []
        probe_parent = target
        while not probe_parent.exists():
            missing.append(probe_parent)
            if probe_parent.parent == probe_parent:
                break
            probe_parent = probe_parent.parent
        if probe_parent.exists() and not probe_parent.is_dir():
            raise ValueError(f"{option} {str(target)!r}: {str(probe_parent)!r} is a file, not a folder")
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        probe = target / f".elukit-write-test-{secrets.token_hex(4)}"
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{option} {str(target)!r} is not a writable folder: {error.strerror}") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_output_file(path: str | os.PathLike[str], option: str) -> None:
    """Raise ValueError naming `option` unless `path`'s folder exists and can hold a new file.
    The folder is not created: a typo in a path should be an error, not a new folder."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: folder {str(parent)!r} does not exist")
    check_writable_directory(parent, option)


LOCK_NAME = ".elukit.lock"


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike[str], option: str, command: str) -> Iterator[None]:
    """Hold `folder` for one elukit process: a second process asking for it gets a ValueError
    naming the holder (pid, command, start time) instead of mixing its study into the same files.

    The lock is an advisory `fcntl.flock` on FOLDER/.elukit.lock, released by the kernel when the
    process ends however it ends, so a crash never leaves a stale lock. (Without fcntl, on
    Windows, no lock is taken.)
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import json
    import time

    target = Path(folder)
    check_writable_directory(target, option)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
            except ValueError:
                holder = {}
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
            raise ValueError(f"{option} {str(target)!r} is in use by another elukit process (pid {holder.get('pid', '?')}, "
                             f"`{holder.get('command', '?')}`, started {started}); wait for it to finish or give another "
                             f"{option}") from None
        record = json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, record, 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)
            if created and [p.name for p in target.iterdir()] == [LOCK_NAME]:
                # nothing was written (bad input found after the lock): leave no folder behind
                os.unlink(target / LOCK_NAME)
                with contextlib.suppress(OSError):
                    target.rmdir()
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
