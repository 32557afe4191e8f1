"""The child process of ``scan.hdf5``: reads an HDF5 file's root string attributes and prints JSON.

The HDF5 C library parses the file's metadata, and a crafted file can make it loop for ever
(found by fuzzing: a 5 KB mutated ``.h5`` never returned) or crash; native code cannot be
interrupted from Python. So the parse runs here, in a process of its own under an address-space
limit, and the scanner kills it at its time limit (:func:`bastion.scan.hdf5_scanner.read_root_attrs`).

Usage: ``python -I -c "$(cat _hdf5_child.py)" PATH KEY...`` (the scanner runs this file's text).
Prints one JSON object on stdout: ``{"attrs": {KEY: text | {"not_text": type name}}, "error":
message | null}`` (keys absent from the file are left out). Exit 0 whenever that object was printed.
"""

from __future__ import annotations

import json
import sys

#: Address space of the child (bytes): h5py and numpy need ~0.5 GiB of mappings; a parse that
#: wants more is stopped by MemoryError (reported as an error, not a crash of the machine).
ADDRESS_SPACE = 3 << 30
#: Longest attribute text returned.
MAX_ATTR = 64 << 20


def main(argv: list[str]) -> int:
    """Read ``argv[1]``'s root attributes named by ``argv[2:]``; print the JSON object."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    except (ImportError, ValueError, OSError):  # not POSIX, or a lower hard limit already
        pass
    import h5py

    path, keys = argv[1], argv[2:]
    attrs: dict[str, object] = {}
    error: str | None = None
    try:
        with h5py.File(path, "r") as f:
            for key in keys:
                if key not in f.attrs:
                    continue
                value = f.attrs[key]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if isinstance(value, str) and len(value) <= MAX_ATTR:
                    attrs[key] = value
                else:
                    attrs[key] = {"not_text": type(value).__name__}
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, MemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps({"attrs": attrs, "error": error}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
