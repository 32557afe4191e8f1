"""Reading the small config-like files a user names: ``bastion.yaml``, ``guard.yaml``, rule files.

Every such file is read through :func:`read_config_text` (or :func:`read_config_bytes`), which
reads only a regular file of at most :data:`MAX_CONFIG_BYTES`: ``-c /dev/zero`` would otherwise
grow memory until the process dies, and ``-c fifo`` block forever. Each refusal is one
:class:`~bastion.core.errors.ConfigError` naming the file and the reason (exit code 2).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from bastion.core.errors import ConfigError

#: The largest config-like file Bastion reads (16 MiB): far above any real ``bastion.yaml``,
#: ``guard.yaml`` or rule file, far below what would strain memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
#: Open flags: never wait for a FIFO's writer, never take a terminal as controlling tty.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
)


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def _refusal(p: Path, st: os.stat_result, what: str, max_bytes: int, folder_hint: str | None) -> str | None:
    """Why ``p`` (with status ``st``) cannot be read as a ``what``; ``None`` when it can."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return f"{p}: is a folder, not a {what}" + (f"; {folder_hint}" if folder_hint else "")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        return f"{p}: not a regular file ({kind}); a {what} must be a regular file"
    if st.st_size > max_bytes:
        return f"{p}: too large ({st.st_size:,} bytes); a {what} is at most {_size_text(max_bytes)}"
    return None


def check_config_file(
    path: str | os.PathLike[str],
    *,
    what: str = "config file",
    max_bytes: int = MAX_CONFIG_BYTES,
    folder_hint: str | None = None,
    missing_hint: str | None = None,
) -> Path:
    """Check, without opening it, that ``path`` is a regular file of at most ``max_bytes``.

    Args:
        path: the file.
        what: what the file is, for messages (``config file``, ``guard config``, ``rule file``).
        max_bytes: the size limit.
        folder_hint: added to the message for a folder (e.g. which file inside to give).
        missing_hint: added to the message for a missing file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: missing, a folder, not a regular file (FIFO, device, socket), too large, or
            not readable.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found" + (f" ({missing_hint})" if missing_hint else "")) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    reason = _refusal(p, st, what, max_bytes, folder_hint)
    if reason is not None:
        raise ConfigError(reason)
    return p


def read_config_bytes(
    path: str | os.PathLike[str],
    *,
    what: str = "config file",
    max_bytes: int = MAX_CONFIG_BYTES,
    folder_hint: str | None = None,
) -> bytes:
    """The bytes of the small config-like file at ``path``: a regular file of at most ``max_bytes``.

    The file is checked before it is opened (so a FIFO or a device is never opened), opened
    without blocking, checked again on the open descriptor (it may have been swapped in
    between), and read up to ``max_bytes`` (a file that grew past it is refused).

    Raises:
        ConfigError: see :func:`check_config_file`; also a read error.
    """
    p = check_config_file(path, what=what, max_bytes=max_bytes, folder_hint=folder_hint)
    try:
        fd = os.open(p, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        reason = _refusal(p, os.fstat(fd), what, max_bytes, folder_hint)
        if reason is not None:
            raise ConfigError(reason)
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise ConfigError(f"{p}: too large (grew while read); a {what} is at most {_size_text(max_bytes)}")
    return data


def read_config_text(
    path: str | os.PathLike[str],
    *,
    what: str = "config file",
    max_bytes: int = MAX_CONFIG_BYTES,
    folder_hint: str | None = None,
) -> str:
    """The UTF-8 text of the small config-like file at ``path`` (see :func:`read_config_bytes`).

    Raises:
        ConfigError: as :func:`read_config_bytes`; also text that is not UTF-8.
    """
    data = read_config_bytes(path, what=what, max_bytes=max_bytes, folder_hint=folder_hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{Path(path)}: cannot read {what}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


__all__ = [
    "MAX_CONFIG_BYTES",
    "check_config_file",
    "read_config_bytes",
    "read_config_text",
    "replace_file",
    "same_file",
    "stage_file",
]


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (``os.path.samefile``); ``False`` when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def stage_file(dest: Path, data: bytes | Iterable[bytes], *, mode: int = 0o644, tag: str = "tmp") -> Path:
    """``data`` written to a new file (``mode``) beside ``dest``, named ``.<name>.<pid>.<tag>``; its path.

    The first half of :func:`replace_file`, for a caller that puts the file in place later
    (``os.replace``). The folder is created when missing; a symlink at the temporary name is
    never followed. On any error or interrupt (Ctrl-C included) the temporary file is removed.

    Raises:
        OSError: the folder or the file cannot be written (nothing is left behind); also what
            reading the chunks raises.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{tag}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes | bytearray):
                fh.write(data)
            else:
                for chunk in data:
                    fh.write(chunk)
    except BaseException:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        raise
    return tmp


def replace_file(dest: Path, data: bytes | Iterable[bytes], *, mode: int = 0o644) -> None:
    """Write ``data`` to ``dest`` atomically: a new file (``mode``) in its folder, renamed over it.

    ``data``: the bytes, or chunks of them (a large file is streamed). A reader never sees half
    a file; a symlink at ``dest`` is replaced, never followed; an existing file's mode is not
    inherited. The folder is created when missing. On any error or interrupt (Ctrl-C included)
    the temporary file is removed.

    Raises:
        OSError: the folder or the file cannot be written (nothing is left behind); also what
            reading the chunks raises.
    """
    tmp = stage_file(dest, data, mode=mode)
    try:
        os.replace(tmp, dest)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
