"""``bastion.core.files``: small config-like files are read only when regular and small."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bastion.core.config import config_hash, load_config
from bastion.core.errors import ConfigError
from bastion.core.files import MAX_CONFIG_BYTES, check_config_file, read_config_bytes, read_config_text

CONFIG = "version: 1\nproject: {name: p}\n"


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "fifo.yaml"
    os.mkfifo(p)
    return p


def _read_in_thread(path: Path) -> BaseException | None:
    """Read ``path`` in a thread (a FIFO must not block); the error raised, or ``None``."""
    box: list[BaseException | None] = []

    def go() -> None:
        try:
            read_config_text(path)
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(5)
    assert box, "reading a FIFO blocked"
    return box[0]


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "bastion.yaml"
    p.write_text(CONFIG)
    assert read_config_text(p) == CONFIG
    assert read_config_bytes(p) == CONFIG.encode()
    assert check_config_file(p) == p
    assert load_config(p).project.name == "p"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    # red-team round 22 F4: `scan -c fifo.yaml`, `--rules fifo.yaml`, `guard serve -c fifo.yaml` hung
    exc = _read_in_thread(_fifo(tmp_path))
    assert isinstance(exc, ConfigError)
    assert "fifo.yaml: not a regular file (a FIFO)" in str(exc)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_refused_before_it_is_read() -> None:
    # red-team round 22 F4: -c /dev/zero grew memory until MemoryError ("internal error")
    with pytest.raises(ConfigError, match=r"/dev/zero: not a regular file \(a character device\)"):
        read_config_text("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        config_hash("/dev/zero")


def test_a_file_over_the_limit_is_too_large(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no disk used
    with pytest.raises(
        ConfigError, match=r"big.yaml: too large \(16,777,217 bytes\); a config file is at most 16 MiB"
    ):
        read_config_text(big)
    small = tmp_path / "small.yaml"
    small.write_text(CONFIG)
    with pytest.raises(ConfigError, match="too large"):
        read_config_text(small, max_bytes=len(CONFIG) - 1)
    assert read_config_text(small, max_bytes=len(CONFIG)) == CONFIG  # the limit itself is fine


def test_missing_folder_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: guard config not found \(hint\)"):
        check_config_file(tmp_path / "nope.yaml", what="guard config", missing_hint="hint")
    with pytest.raises(ConfigError, match="is a folder, not a config file; give the file inside"):
        read_config_text(tmp_path, folder_hint="give the file inside")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_config_text(bad)


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(CONFIG)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert read_config_text(tmp_path / "link.yaml") == CONFIG
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match="not found"):
        read_config_text(tmp_path / "dangling.yaml")
