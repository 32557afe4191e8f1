"""An EC P-256 key pair written as PEM files, for the signing tests (one helper, not one per file)."""

from __future__ import annotations

from pathlib import Path


def write_ec_keypair(private: Path | None, public: Path | None, *, password: bytes | None = None) -> None:
    """Generate a P-256 key and write its private key (PKCS#8) and/or public key (SPKI) as PEM.

    ``password`` encrypts the private key (``BestAvailableEncryption``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    if private is not None:
        enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        private.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        )
    if public is not None:
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
