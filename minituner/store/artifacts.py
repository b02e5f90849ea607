"""Atomic file writes: a temporary file in the destination directory, fsync, rename.

A crash at any moment leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from minituner.store.ownership import (
    KINDS,
    MARKER_FILE,
    OwnershipError,
    artifact_kind,
    check_writable,
    marker,
    owned_files,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise any ``OSError`` of the block as one that names ``path`` (full disk, read-only dir...)."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"could not write {path}: {reason}") from error


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Produce ``path`` by calling ``write(tmp_path)`` and renaming the result into place.

    Args:
        path: Destination file; its directory is created if missing.
        write: Writes the complete content to the temporary path it is given.

    Raises:
        OSError: Naming ``path`` when the write or rename fails; the previous file is intact.
    """
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_directory(path.parent)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_directory_atomic(directory: Path, fill: Callable[[Path], None], kind: str, overwrite: bool = False) -> None:
    """Produce ``directory`` by calling ``fill(staging_dir)`` and renaming the result into place.

    The files are built in a staging directory beside ``directory``, marked as minituner's
    ``kind`` of artifact (see ``minituner.store.ownership``), given the usual file mode, fsynced,
    then swapped in (a previous version is moved aside first and removed last), so a crash or a
    failed write leaves the previous directory or the new one, never a half-written one.

    Args:
        directory: Destination; an existing one must be minituner's artifact of the same kind.
        fill: Writes the artifact's files into the staging directory it is given.
        kind: ``base``, ``model``, ``merged``, ``adapter`` or ``checkpoint``.
        overwrite: Also write into a directory that holds files minituner did not write; those
            are kept (the new files are renamed in one by one, each atomically).

    Raises:
        OwnershipError: Before ``fill`` runs, when ``directory`` is not replaceable (see
            ``check_writable``); or when, with ``overwrite``, a file of the artifact is in the way.
        OSError: Naming ``directory`` when a write or rename fails.
    """
    directory = Path(directory)
    with _naming(directory):
        previous = _previous_version(directory)
        if not directory.exists() and artifact_kind(previous) == kind:  # an earlier swap was cut between renames
            os.rename(previous, directory)
        check_writable(directory, kind, overwrite)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
            fill(staging)
            write_json_atomic(staging / MARKER_FILE, marker(kind, [p.name for p in staging.iterdir()]))
            for path in staging.iterdir():
                os.chmod(path, 0o666 & ~current_umask())  # safetensors writes 0600: one mode for every file
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            if directory.exists() and not _replaceable(directory, kind):
                _write_into(directory, staging, kind)  # overwrite: keep what minituner did not write
            elif directory.exists():
                if previous.exists():  # left by a swap cut before its cleanup
                    check_writable(previous, kind)
                    shutil.rmtree(previous)
                os.rename(directory, previous)
                os.rename(staging, directory)
                shutil.rmtree(previous)
            else:
                os.rename(staging, directory)
            _fsync_directory(directory.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _replaceable(directory: Path, kind: str) -> bool:
    """Whether ``directory`` is empty or wholly minituner's ``kind`` artifact (so it may be swapped out)."""
    found, ours = owned_files(directory)
    names = {p.name for p in directory.iterdir()}
    return not names or (found == kind and names <= ours)


def _write_into(directory: Path, staging: Path, kind: str) -> None:
    """Rename the staged files into ``directory`` one by one, leaving its other files as they are."""
    _, ours = owned_files(directory)
    staged = sorted(p.name for p in staging.iterdir())
    clashes = [name for name in staged if (directory / name).exists() and name not in ours]
    if clashes:
        raise OwnershipError(
            f"refusing to write {KINDS[kind]} into {directory}: {clashes} would be replaced and minituner did not "
            "write them; move them or choose another path"
        )
    for name in staged:
        if name != MARKER_FILE:
            os.replace(staging / name, directory / name)
    kept = {name for name in ours - {MARKER_FILE} if (directory / name).exists()}
    write_json_atomic(directory / MARKER_FILE, marker(kind, sorted(kept | set(staged) - {MARKER_FILE})))


def remove_artifact(directory: Path, kind: str) -> bool:
    """Delete ``directory`` when it is wholly minituner's ``kind`` artifact; otherwise leave it, with a warning.

    Returns:
        Whether it was deleted.
    """
    directory = Path(directory)
    if not directory.exists():
        return False
    if not _replaceable(directory, kind):
        log.warning("not deleting %s: it is not only minituner's %s (%s)", directory, kind, KINDS[kind])
        return False
    shutil.rmtree(directory)
    return True


def _previous_version(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.old")


def readable_directory(directory: Path) -> Path:
    """``directory``, or its previous complete version when a write was killed mid-swap.

    ``write_directory_atomic`` moves the old directory aside, then renames the new one in; a kill
    between the two renames leaves only the old one, under ``.<name>.old``. Readers use this so
    they still find it (the next write puts it back in place).
    """
    directory = Path(directory)
    previous = _previous_version(directory)
    return previous if not directory.exists() and previous.exists() else directory


def open_artifact(
    directory: Path, label: str, files: tuple[str, ...], metadata_file: str, error: type[Exception]
) -> tuple[Path, dict]:
    """Check that an artifact directory holds its files and read its JSON metadata object.

    Args:
        directory: The artifact (its previous complete version is used after a killed swap).
        label: What it is, for messages (``adapter``, ``checkpoint``, ``base checkpoint``).
        files: The names it must hold.
        metadata_file: The one of ``files`` that holds its JSON object.
        error: The exception to raise; every message names the directory or file and what is wrong.

    Returns:
        The directory read from and the parsed metadata.
    """
    directory = readable_directory(directory)
    if not directory.is_dir():
        raise error(f"{label} {directory} does not exist or is not a directory")
    for name in files:
        if not (directory / name).is_file():
            raise error(f"{label} {directory} has no {name}")
    path = directory / metadata_file
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as reason:
        raise error(f"{path} is not valid JSON: {reason}") from reason
    if not isinstance(content, dict):
        raise error(f"{path} must hold a JSON object, found {type(content).__name__}")
    return directory, content


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    Processes that take the same lock run the block one at a time; the lock goes with the
    process, so a killed holder never leaves it stuck.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_bytes(directory: Path) -> int:
    """Bytes of the one weights file (``*.safetensors``) in a base, model or adapter directory."""
    (weights,) = [p for p in directory.iterdir() if p.suffix == ".safetensors"]
    return weights.stat().st_size
