"""Model signing and verification through the OpenSSF ``model-signing`` library (``signing`` extra).

A model file or folder is hashed file by file and the manifest is signed with an elliptic-curve
private key into a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``, a DSSE
envelope over an in-toto statement), so the signature interoperates with the ``model_signing``
CLI and any Sigstore-bundle verifier. Verification recomputes the hashes: a changed, added or
removed file raises :class:`bastion.core.errors.IntegrityError` naming it. Works offline (key
mode needs no transparency log).

Threat model: an attacker who can write to the model store swaps, adds or removes a file
between training and deployment; signing binds the exact set of files and their bytes to the
key holder. Reference: https://github.com/sigstore/model-transparency (model_signing 1.x API).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from bastion.core.errors import ConfigError, IntegrityError, require

log = logging.getLogger(__name__)

__all__ = [
    "FolderBundles",
    "SignatureStatus",
    "VerifyResult",
    "bound_signature",
    "check_signature_file",
    "default_signature_path",
    "sign_path",
    "signature_status",
    "verify_path",
]


class SignatureStatus(str, Enum):
    """What is known about a model's signature."""

    VERIFIED = "verified"
    INVALID = "invalid"
    UNVERIFIED = "unverified"  # a signature exists, no key was given
    UNSIGNED = "unsigned"


@dataclass(frozen=True)
class VerifyResult:
    """A successful verification.

    Attributes:
        path: the model file or folder.
        signature: the Sigstore bundle verified.
        digests: the signed SHA-256 of each file, by its path relative to ``path`` (``"."`` for a
            signed file), read from the very bundle bytes that verified.
    """

    path: Path
    signature: Path
    digests: dict[str, str] = field(default_factory=dict)


def default_signature_path(path: str | os.PathLike[str]) -> Path:
    """Where the signature goes by default: ``<path>.sig`` beside the file or folder.

    ``.`` and ``..`` are resolved first (their bundle goes beside the folder they name, never
    inside it).
    """
    p = Path(os.fspath(path))
    if p.name in ("", ".", ".."):
        p = p.resolve()
    return p.with_name(p.name.rstrip("/") + ".sig")


class SignatureMismatch(IntegrityError):
    """The files differ from the signed ones; ``files`` names each (relative to the signed path).

    ``digests``: the signed SHA-256 of each file (relative path -> hex), from the bundle whose
    signature verified (the library compares the files only after the signature holds).
    """

    def __init__(self, message: str, files: list[str], digests: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.files = files
        self.digests = digests or {}


#: The words reports and ML-BOMs use for each status (``assets[].signature``, ``bastion:signature.status``).
STATUS_WORDS = {"verified": "verified", "invalid": "failed", "unsigned": "unsigned", "unverified": "error"}


def check_public_key(key: str | os.PathLike[str]) -> None:
    """Check ``key`` is an existing PEM elliptic-curve public key (bad input, before any verification).

    Raises:
        ConfigError: missing, not PEM, a private key, or not an elliptic-curve key.
    """
    k = Path(os.fspath(key))
    problem = key_file_problem(k, private=False)
    if problem:
        raise ConfigError(problem)
    _ec_key(k, private=False)


def key_file_problem(key: Path, *, private: bool, where: str = "--key") -> str | None:
    """Why ``key`` is not a key file (missing, a folder, a special file), or ``None``.

    ``where`` names the option or field that gave it. Trial 30, L5: ``sign x --key models`` (a
    folder) said "models: no such key file".
    """
    what = "private" if private else "public"
    if key.is_dir():
        return f"{where} {key}: is a folder, not a key file; give the {what} key's PEM file"
    if key.exists() and not key.is_file():
        return f"{where} {key}: is not a regular file; give the {what} key's PEM file"
    if not key.is_file():
        return f"{where} {key}: no such key file"
    return None


def _check(path: Path, key: Path, *, private: bool) -> None:
    problems = []
    if not path.exists():
        problems.append(f"{path}: no such file or folder")
    problem = key_file_problem(key, private=private)
    if problem:
        problems.append(problem)
    if problems:
        raise ConfigError("cannot sign" if private else "cannot verify", problems)


def _ec_key(key: Path, *, private: bool, password: str | None = None) -> None:
    """Check ``key`` is a PEM elliptic-curve key of the right kind, before the library sees it.

    Raises:
        ConfigError: not PEM, the wrong kind (private vs public), or not an elliptic-curve key.
    """
    serialization = require("cryptography.hazmat.primitives.serialization", "signing")
    ec = require("cryptography.hazmat.primitives.asymmetric.ec", "signing")
    data = read_input(key, "--key")
    what = "private" if private else "public"
    try:
        if private:
            obj = serialization.load_pem_private_key(data, password=password.encode() if password else None)
        else:
            obj = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if private and "password" in first.lower():  # encrypted, and no (or a wrong) password
            why = "the password is wrong" if password else "no password given"
            raise ConfigError(
                f"{key}: an encrypted private key; {why} "
                "(bastion sign --password-env NAME reads it from that environment variable)"
            ) from None
        raise ConfigError(f"{key}: not a PEM {what} key ({first})") from None
    wanted = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
    if not isinstance(obj, wanted):
        kind = type(obj).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "") or "other"
        raise ConfigError(
            f"{key}: {_article(kind)} {kind} key; an elliptic-curve {what} key is required "
            "(e.g. openssl ecparam -name prime256v1 -genkey -noout -out key.pem)"
        )


def _article(word: str) -> str:
    """``a`` or ``an`` before ``word`` as it is said: an RSA, an Ed25519, an X25519, a DSA key."""
    if not word:
        return "a"
    first, rest = word[0], word[1:2]
    spelt = first.isupper() and not rest.islower()  # an acronym (RSA, X25519): said letter by letter
    return "an" if first in "AEIOUaeiou" or (spelt and first in "FHLMNRSX") else "a"


def read_input(path: Path, what: str) -> bytes:
    """The bytes of an input file (a key, a bundle); one that cannot be read is bad input (exit 2).

    Raises:
        ConfigError: naming ``what`` (the option or role) and the path, with the system's reason.
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


class NotABundle(IntegrityError):
    """The file where the signature bundle is expected is not one (garbage, truncated, another file).

    A verdict, as a bad signature is (exit 1): what should attest the model does not.
    """


def _bundle(sig: Path, raw: bytes | None = None) -> dict[str, object]:
    """The bundle ``sig`` (its bytes ``raw`` when read already) as JSON, checked to be one.

    Raises:
        NotABundle: not JSON, or not a Sigstore bundle. ConfigError: ``sig`` cannot be read.
    """
    import json

    try:
        doc = json.loads(read_input(sig, "signature bundle") if raw is None else raw)
    except (ValueError, UnicodeDecodeError):
        raise NotABundle(f"{sig}: not a signature bundle (not JSON)") from None
    if not isinstance(doc, dict) or "mediaType" not in doc:
        raise NotABundle(f"{sig}: not a Sigstore bundle (no mediaType)")
    return doc


def _statement(doc: dict[str, object]) -> tuple[str | None, dict[str, str]]:
    """``(subject name, {file: sha256})`` of a bundle's in-toto statement (``None``, ``{}`` if unreadable)."""
    import base64
    import binascii
    import json

    try:
        env = doc["dsseEnvelope"]
        assert isinstance(env, dict)
        stmt = json.loads(base64.b64decode(env["payload"]))
        subject = stmt["subject"][0]["name"]
        digests = {
            str(r["name"]): str(r["digest"])
            for r in stmt["predicate"]["resources"]
            if r.get("algorithm") == "sha256"
        }
    except (KeyError, IndexError, TypeError, ValueError, AssertionError, binascii.Error):
        return None, {}
    return (subject if isinstance(subject, str) else None), digests


def _hashing(path: Path, *signatures: Path) -> object:
    ms = require("model_signing", "signing")
    cfg = ms.hashing.Config()
    if path.is_dir():
        # a bundle written inside the signed folder is not part of the model; the library
        # matches ignored paths relative to the folder (an absolute one never matches)
        root = path.resolve()
        sigs = [s.parent.resolve() / s.name for s in signatures]
        cfg.set_ignored_paths(paths=[s.relative_to(root) for s in sigs if s.is_relative_to(root)])
    return cfg


def sign_path(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
    password: str | None = None,
) -> Path:
    """Sign a model file or folder with an elliptic-curve private key (PEM).

    Args:
        path: the model file or folder.
        key: the private key (PEM; ``openssl ecparam -name prime256v1 -genkey``).
        signature: where to write the bundle (default ``<path>.sig``).
        password: the key's password, if encrypted.

    Returns:
        The signature path.

    Raises:
        ConfigError: the path or key is missing or cannot be read, as a file or folder of the
            model; the bundle's path is taken (a folder, a link, a file that is not a bundle).
        MissingExtraError: ``model-signing`` is not installed (``pip install bastion-ml[signing]``).
        IntegrityError: the library refused to sign (a symbolic link in the model).
    """
    p, k = Path(os.fspath(path)), Path(os.fspath(key))
    sig = Path(os.fspath(signature)) if signature is not None else default_signature_path(p)
    # the messages name the option when it was given, else say the path is the default one
    where = (
        f"--signature {sig}"
        if signature is not None
        else f"the signature bundle {sig} (the default, beside {p})"
    )
    _check(p, k, private=True)
    if sig.resolve() == p.resolve():
        raise ConfigError(f"{where}: would overwrite the model; write it beside the model")
    if sig.is_dir():
        raise ConfigError(f"{where}: is a folder; give the bundle's file path (e.g. {p.name}.sig)")
    if sig.is_symlink():  # a link shipped beside a download would have the bundle written elsewhere
        raise ConfigError(f"{where}: is a symbolic link; remove it or give another path")
    if sig.exists():  # replacing an earlier bundle is fine; any other file is someone's data
        try:
            _bundle(sig)
        except NotABundle:
            raise ConfigError(
                f"{where}: would overwrite {sig.name}, which is not a signature bundle"
                + ("" if signature is not None else " (give --signature another path, or move the file)")
            ) from None
    if not sig.parent.is_dir():
        raise ConfigError(f"{where}: folder {sig.parent} does not exist")
    _ec_key(k, private=True, password=password)
    ms = require("model_signing", "signing")
    # written to a new file and renamed over ``sig``: never through a link, never half a bundle
    tmp = sig.with_name(f".{sig.name}.{os.getpid()}.tmp")
    try:
        secret = password.encode() if password else None  # the library takes bytes
        cfg = ms.signing.Config().use_elliptic_key_signer(private_key=k, password=secret)
        cfg.set_hashing_config(_hashing(p, sig, tmp))
        _check_listable(p)
        cfg.sign(p, tmp)
        os.replace(tmp, sig)
    except OSError as exc:  # a file or folder of the model that cannot be read, a bundle not written
        raise ConfigError(f"cannot sign {p}: {_os_problem(exc)}") from exc
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"cannot sign {p} with {k}: {_library_words(str(exc))}") from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
    log.info("signed %s -> %s", p, sig)
    return sig


def _hide_digests(text: str) -> str:
    r"""``text`` with each ``Digest(...)`` as ``<digest>``: no raw digest (``digest_value=b'...'``) shown.

    ``re.sub(r"Digest\([^)]*\)", "<digest>", text)``, searched only up to the last ``)``: no
    ``Digest(`` after it can close, and each one there read to the end of the text, quadratic on
    ``Digest(`` repeated (the library's message may quote what the model folder and bundle hold).
    """
    import re

    end = text.rfind(")") + 1
    return re.sub(r"Digest\([^)]*\)", "<digest>", text[:end]) + text[end:]


def verify_path(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
) -> VerifyResult:
    """Verify a model file or folder against its Sigstore bundle and a public key (PEM).

    The contract (``bastion verify``'s exit codes): what shows that the files or their bundle
    are not what was signed is an :class:`IntegrityError` (a verdict, exit 1); what stops the
    check from being made — an input that is missing or cannot be read — is a
    :class:`ConfigError` (exit 2, the result is incomplete).

    Raises:
        ConfigError: the path or key is missing, the key is not an EC public key in PEM, or a
            file or folder of the model, the bundle or the key cannot be read.
        MissingExtraError: ``model-signing`` is not installed.
        IntegrityError: no signature, a bundle that is not a Sigstore bundle (garbage, truncated)
            or that signs a folder where a file is verified (or the reverse), a bad signature, or
            a changed, added or removed file (the message names each file).
    """
    import tempfile

    p, k = Path(os.fspath(path)), Path(os.fspath(key))
    sig = Path(os.fspath(signature)) if signature is not None else default_signature_path(p)
    _check(p, k, private=False)
    if not sig.is_file():
        raise IntegrityError(f"{p}: no signature at {sig}")
    _ec_key(k, private=False)
    # the bundle is read once: the library verifies these bytes, and the signed name and
    # digests are taken from them (a bundle swapped after verification changes nothing)
    raw = read_input(sig, "signature bundle")
    subject, digests = _statement(_bundle(sig, raw))
    _check_kind(p, sig, subject, digests)
    ms = require("model_signing", "signing")
    try:
        cfg = ms.verifying.Config().use_elliptic_key_verifier(public_key=k)
        cfg.set_hashing_config(_hashing(p, sig))
        _check_listable(p)
        with tempfile.TemporaryDirectory(prefix="bastion-verify-") as tmp:
            copy = Path(tmp) / "bundle.sig"
            copy.write_bytes(raw)
            cfg.verify(p, copy)
    except OSError as exc:  # a file or folder of the model that cannot be read: no verdict
        raise ConfigError(f"{p}: cannot verify against {sig}: {_os_problem(exc)}") from exc
    except KeyError as exc:  # the library's reading of a bundle that lacks a part
        raise NotABundle(
            f"{p}: verification against {sig} failed: {sig} is not a complete Sigstore bundle "
            f"(no {exc.args[0]!r})"
            if exc.args
            else f"{p}: verification against {sig} failed: not a Sigstore bundle"
        ) from exc
    except Exception as exc:  # the library raises ValueError and others for bad bundles
        import re

        text = str(exc)
        diffs = [
            (_file_name(p, m), "changed (its hash differs from the signed one)")
            for m in re.findall(r"Hash mismatch for \\?'([^'\\]*)\\?'", text)
        ]
        diffs += [
            (_file_name(p, m), "added (not in the signature)")
            for grp in re.findall(r"Extra files found in model '[^']*': ([^\"'\]]*)", text)
            for m in grp.split(",")
        ]
        diffs += [
            (_file_name(p, m), "removed (signed, now missing)")
            for grp in re.findall(r"Missing files in model '[^']*': ([^\"'\]]*)", text)
            for m in grp.split(",")
        ]
        if diffs:
            detail = "the files differ from the signed ones: " + "; ".join(f"{n} {what}" for n, what in diffs)
            raise SignatureMismatch(
                f"{p}: verification against {sig} failed: {detail}", [n for n, _ in diffs], digests
            ) from exc
        # never show raw digests (Digest(..., digest_value=b'...'))
        detail = _library_words(_hide_digests(text).strip())
        if not detail:  # e.g. a bit flipped in the bundle's signature: the library says nothing
            detail = f"{type(exc).__name__}: the signature does not match this key, or the bundle was altered"
        raise IntegrityError(f"{p}: verification against {sig} failed: {detail}") from exc
    # the library compares digests only, not the name signed: another model of the same key,
    # renamed with its bundle, would pass
    name = (p.resolve() if p.name in ("", ".", "..") else p).name
    if subject is not None and subject not in (name, ".", ""):
        raise IntegrityError(
            f"{p}: verification against {sig} failed: the bundle signs {subject!r}, not {name!r}"
        )
    return VerifyResult(path=p, signature=sig, digests=digests)


def _check_kind(path: Path, sig: Path, subject: str | None, digests: dict[str, str]) -> None:
    """Refuse a bundle of a folder used for a file, or of a file used for a folder (one message).

    A file's bundle signs one resource, named ``.``; a folder's, its files by relative path. The
    library would compare the two file lists and call every file added and removed.

    Raises:
        IntegrityError: the bundle signs the other kind of thing.
    """
    if not digests:  # unreadable statement, or a signed empty folder: the library decides
        return
    name = (path.resolve() if path.name in ("", ".", "..") else path).name
    signs_file = list(digests) == ["."]
    what = repr(subject) if subject else "its subject"
    failed = f"{path}: verification against {sig} failed"
    if path.is_dir() and signs_file:
        raise IntegrityError(f"{failed}: the bundle signs a file ({what}), not the folder {name!r}")
    if not path.is_dir() and not signs_file:
        raise IntegrityError(f"{failed}: the bundle signs a folder ({what}), not the file {name!r}")


def _check_listable(path: Path) -> None:
    """Raise the ``OSError`` of a folder under ``path`` that cannot be listed.

    The library's walk (``Path.glob``) passes over such a folder in silence: its files would be
    called removed (a verdict) where they could not be read (an error). Its default ignored
    folders (``.git``, ``.github``) at the top are not walked.
    """
    if not path.is_dir():
        return

    def raise_it(exc: OSError) -> None:
        raise exc

    for folder, subfolders, _ in os.walk(path, onerror=raise_it):
        if folder == os.fspath(path):
            subfolders[:] = [d for d in subfolders if d not in (".git", ".github")]


def _os_problem(exc: OSError) -> str:
    """``cannot read FILE: reason`` of an ``OSError``, as one line."""
    if exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    return str(exc.strerror or exc)


def _library_words(text: str) -> str:
    """The library's message in Bastion's words: it names options Bastion does not have."""
    import re

    library = (
        r"Cannot use '([^']*)' because it is a symlink\. This behavior can be changed with `allow_symlinks`\."
    )
    return re.sub(
        library,
        r"\1 is a symbolic link: a signature covers no symbolic links (sign the file it points to, "
        r"not the link, and keep no links in a signed folder)",
        text,
    )


def _file_name(path: Path, member: str) -> str:
    """A file the library's message names, as the user knows it: ``.`` (a signed file) is its name."""
    member = member.strip()
    return path.name if member in (".", "") else member


def check_signature_file(signature: str | os.PathLike[str]) -> Path:
    """Check a signature bundle the user named (``--signature``) exists, before it is relied on.

    A named bundle is the one that decides, for the path and every file in it: one that is not
    there must not let another bundle (``<file>.sig``, a folder's) decide in its place.

    Raises:
        ConfigError: nothing is there, or a folder.
    """
    sig = Path(os.fspath(signature))
    if sig.is_dir():
        raise ConfigError(f"--signature {sig}: is a folder, not a signature bundle")
    if not sig.is_file():
        raise ConfigError(
            f"--signature {sig}: no such signature bundle (leave --signature out to use the default PATH.sig)"
        )
    return sig


def refuse_failed_signature(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None,
    root: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    require_signed: bool = False,
) -> None:
    """Refuse to load a model file whose signature does not verify (``<path>.sig``, ``key``).

    The rule of ``bastion assess``, for every command that loads a model (``harden``, ``guard
    fit``, ``guard serve``): with a project key, a signature that fails (a bundle that is not
    one included), or one that cannot be checked (an unreadable bundle, key or file), stops it;
    so does no signature at all when ``require_signed`` (``signing.require`` in ``bastion.yaml``).
    Without ``<path>.sig``, the bundle of the nearest folder up to ``root`` (the project) signed as
    a whole decides (:class:`FolderBundles`). ``sha256``: the digest of the bytes the caller scanned and will
    load; the signed digest of the file must be that one (a file swapped between the reads of
    the scan, the verification and the load is refused).

    Raises:
        IntegrityError: the signature does not verify, cannot be checked, is missing (when
            required), or signs other bytes (the reason names what).
    """
    if key is None:
        return
    status, why, signed = bound_signature(path, key=key, root=root)
    if status is SignatureStatus.INVALID:
        raise IntegrityError(f"{path}: not loaded: its signature did not verify ({why})")
    if status is SignatureStatus.UNVERIFIED:
        raise IntegrityError(f"{path}: not loaded: its signature could not be checked ({why})")
    if status is SignatureStatus.UNSIGNED:
        if require_signed:
            raise IntegrityError(
                f"{path}: not loaded: unsigned, and signing.require is on "
                f"(sign it: bastion sign {path} --key KEY)"
            )
        return
    if sha256 is not None and signed != sha256:
        raise IntegrityError(
            f"{path}: not loaded: the signed bytes are not the bytes read for loading (the file changed "
            "while it was checked)"
        )


def bound_signature(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None,
    root: str | os.PathLike[str] | None = None,
) -> tuple[SignatureStatus, str | None, str | None]:
    """``(status, reason, signed SHA-256)`` of a model file: its own bundle, else its folder's.

    The signed digest (hex) is known when the status is ``verified``; compare it with the digest
    of the bytes actually loaded.
    """
    if root is not None and not default_signature_path(path).is_file():
        bundles = FolderBundles(root, key)
        status, why, _ = bundles.status_of(path)
        return status, why, bundles.signed_digest(path) if status is SignatureStatus.VERIFIED else None
    status, why, _, digests = _signature_check(path, key=key)
    # a file signed on its own is the bundle's one resource, named "."
    return status, why, digests.get(".") if status is SignatureStatus.VERIFIED else None


class FolderBundles:
    """Signature status of files inside ``root`` from the bundle of a folder signed as a whole.

    ``bastion sign models/`` writes ``models.sig`` beside the folder: for ``models/a/b.pkl`` the
    nearest folder between the file and ``root`` (``root`` included) that has such a bundle
    decides. The folder is the signed unit, as ``bastion verify models`` checks it: when its
    verification fails (a file changed, added or removed, a bad signature), every file of it is
    ``invalid`` with the verification's reason, which names each file that differs; a file whose
    bytes still have the signed digest says so in its reason, but is not ``verified``. Each
    folder is verified once per instance (one verification hashes the folder).

    Args:
        root: the folder the files are in (a project, or the folder a BOM describes).
        key: the public key (``None``: a found bundle is ``unverified``).
        signature: ``root``'s own bundle when it is not ``<root>.sig`` (``--signature``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        key: str | os.PathLike[str] | None,
        signature: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self._given = Path(os.fspath(root))  # reasons name the paths as the caller wrote them
        self.key = key
        self.signature = Path(os.fspath(signature)) if signature is not None else None
        # folder -> (status, reason, signed digests by relative path)
        self._checked: dict[Path, tuple[SignatureStatus, str | None, dict[str, str]]] = {}

    def bundle_of(self, folder: Path) -> Path:
        """The bundle that signs ``folder`` as a whole (it may not exist)."""
        if folder == self.root and self.signature is not None:
            return self.signature
        return default_signature_path(self._as_given(folder))

    def _as_given(self, folder: Path) -> Path:
        """``folder`` (absolute, inside ``root``) as the caller wrote ``root`` (``models/sub``)."""
        return self._given / folder.relative_to(self.root) if folder != self.root else self._given

    def _folder_of(self, path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
        """``(file, signed folder)``: the nearest folder with a bundle, from ``root`` down.

        The path is walked as written (made absolute, never resolved): a file of a signed folder
        replaced by a link to a file outside stays the folder's (whose verification then fails:
        the library refuses links), never "unsigned".
        """
        file = Path(os.path.abspath(os.fspath(path)))
        for folder in file.parents:
            if folder != self.root and self.root not in folder.parents:
                break
            if self.bundle_of(folder).is_file():
                return file, folder
            if folder == self.root:
                break
        return None

    def _check(self, folder: Path) -> tuple[SignatureStatus, str | None, dict[str, str]]:
        if folder not in self._checked:
            bundle = self.bundle_of(folder)
            status, why, _, digests = _signature_check(self._as_given(folder), key=self.key, signature=bundle)
            self._checked[folder] = (status, why, digests)
        return self._checked[folder]

    def folder_status(self, folder: str | os.PathLike[str]) -> tuple[SignatureStatus, str | None]:
        """``(status, reason)`` of ``folder`` signed as a whole (``UNSIGNED`` without its bundle)."""
        status, why, _ = self._check(Path(os.path.abspath(os.fspath(folder))))
        return status, why

    def failed(self) -> list[tuple[Path, str]]:
        """``(bundle, reason)`` of each folder checked so far whose verification failed."""
        return [
            (self.bundle_of(folder), why or "")
            for folder, (status, why, _) in self._checked.items()
            if status is SignatureStatus.INVALID
        ]

    def status_of(self, path: str | os.PathLike[str]) -> tuple[SignatureStatus, str | None, Path | None]:
        """``(status, reason, bundle)`` of ``path`` by its nearest signed folder.

        ``(UNSIGNED, None, None)`` when no folder between it and ``root`` is signed as a whole.
        """
        found = self._folder_of(path)
        if found is None:
            return SignatureStatus.UNSIGNED, None, None
        file, folder = found
        return self.status_in(folder, file)

    def status_in(
        self, folder: str | os.PathLike[str], path: str | os.PathLike[str]
    ) -> tuple[SignatureStatus, str | None, Path]:
        """``(status, reason, bundle)`` of ``path`` by the bundle of ``folder`` (which holds it).

        A folder whose verification fails fails for each of its files: the reason names the files
        that differ and, for a file whose bytes still have the signed digest, says that too.
        """
        folder = Path(os.path.abspath(os.fspath(folder)))
        file = Path(os.path.abspath(os.fspath(path)))
        status, why, digests = self._check(folder)
        if status is SignatureStatus.INVALID and digests and not file.is_symlink():
            rel = file.relative_to(folder).as_posix()
            signed = digests.get(rel)
            if signed is not None and _sha256_file(file) == signed:
                why = f"{why} ({rel} itself has its signed bytes; its folder, signed as a whole, fails)"
        return status, why, self.bundle_of(folder)

    def file_status(self, path: str | os.PathLike[str]) -> tuple[SignatureStatus, str | None, Path | None]:
        """``(status, reason, bundle)`` of a file: its own ``<file>.sig``, else its nearest signed folder.

        The layout ``bastion assess`` verifies; ``(UNSIGNED, None, None)`` when neither exists.
        """
        own = default_signature_path(path)
        if own.is_file():
            status, why = signature_status(path, key=self.key)
            return status, why, own
        return self.status_of(path)

    def signed_digest(self, path: str | os.PathLike[str]) -> str | None:
        """The signed SHA-256 of ``path`` in its folder's bundle (``None``: none, or not verified)."""
        found = self._folder_of(path)
        if found is None:
            return None
        file, folder = found
        return self._check(folder)[2].get(file.relative_to(folder).as_posix())


def signature_status(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
) -> tuple[SignatureStatus, str | None]:
    """The signature status of a model, for inventories and the ML-BOM (never raises on bad input).

    Returns:
        ``(status, reason)``; reason explains ``invalid`` (and missing extras).
    """
    status, why, _ = signature_check(path, key=key, signature=signature)
    return status, why


def signature_check(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
) -> tuple[SignatureStatus, str | None, list[str] | None]:
    """:func:`signature_status` and, for a folder whose files differ, which (never raises on bad input).

    Returns:
        ``(status, reason, files)``: ``files`` names the files that differ from the signed ones
        (relative to ``path``) when ``invalid`` says so, else ``None`` (nothing known per file).
    """
    status, why, files, _ = _signature_check(path, key=key, signature=signature)
    return status, why, files


def _signature_check(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
) -> tuple[SignatureStatus, str | None, list[str] | None, dict[str, str]]:
    """:func:`signature_check` and the signed digests (relative path -> SHA-256 hex).

    The digests come from a bundle whose signature held: the one that verified, or one whose
    files differ (the library compares the files only once the signature holds); else ``{}``.
    """
    p = Path(os.fspath(path))
    sig = Path(os.fspath(signature)) if signature is not None else default_signature_path(p)
    if not sig.is_file():
        return SignatureStatus.UNSIGNED, None, None, {}
    if key is None:
        return SignatureStatus.UNVERIFIED, "no public key given", None, {}
    try:
        result = verify_path(p, key=key, signature=sig)
    except SignatureMismatch as exc:
        return SignatureStatus.INVALID, str(exc), list(exc.files), exc.digests
    except IntegrityError as exc:
        return SignatureStatus.INVALID, str(exc), None, {}
    except ConfigError as exc:  # a bad key, an unreadable file or bundle: bad input, not a tampered model
        return SignatureStatus.UNVERIFIED, str(exc), None, {}
    except Exception as exc:  # missing extra
        return SignatureStatus.UNVERIFIED, str(exc), None, {}
    return SignatureStatus.VERIFIED, None, None, result.digests


def _sha256_file(path: Path) -> str | None:
    import hashlib

    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
