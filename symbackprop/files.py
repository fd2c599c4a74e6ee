"""Writing files so that a reader never sees half of one, and nothing the user wrote is lost.

A file is written to a temporary file beside it and renamed over it, so it is complete or absent. The
temporary file is created private (0600) by ``mkstemp``; before the rename it gets the mode the user
expects: an existing file's own mode, or for a new file the usual ``0666`` less the umask (0644 under
the common umask 022), as ``open()`` would have created it. A missing folder is reported by its name,
not by the temporary file's.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable

from .graph import UserError


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _check_folder(path: Path, what: str) -> Path:
    folder = _folder(path)
    if not folder.exists():
        raise UserError(f"{what}{path}: cannot write it: the folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{what}{path}: cannot write it: {folder} is not a folder")
    if path.is_dir():
        raise UserError(f"{what}{path}: is a folder, not a file")
    return folder


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    folder = _check_folder(path, "")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"{path}: cannot write in {folder} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def check_writable(path: str | Path, option: str = "") -> None:
    """Raise a one-line UserError now if ``path`` could not be written later (missing or read-only
    folder, a folder in its place); ``option`` (``--plot``) starts the message. Nothing is left behind."""
    path = Path(path)
    what = f"{option} " if option else ""
    folder = _check_folder(path, what)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".symbackprop-check.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"{what}{path}: cannot write in {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
