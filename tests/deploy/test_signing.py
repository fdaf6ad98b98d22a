"""Signatures made with ssh-keygen, checked with ssh-keygen and with our Verifier."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from layerbot.deploy.signing import (
    SSH_KEYGEN,
    Signer,
    SigningError,
    Verifier,
    allowed_signers_line,
    generate_keypair,
)

from .conftest import INSTANCE, Keys


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "software.tar.gz"
    path.write_bytes(b"tarball bytes " * 1000)
    return path


def test_signature_verifies_and_names_the_signer(keys: Keys, artifact: Path) -> None:
    signature = keys.signer.sign_file(artifact)
    assert signature.startswith(b"-----BEGIN SSH SIGNATURE-----")
    result = Verifier(keys.allowed_signers).verify_file(artifact, signature, INSTANCE)
    assert result.ok and result.principal == "cluster-a-bot"


def test_standard_ssh_keygen_verifies_our_signature(keys: Keys, artifact: Path) -> None:
    sig = artifact.with_name(artifact.name + ".sig")
    sig.write_bytes(keys.signer.sign_file(artifact))
    with artifact.open("rb") as stdin:
        proc = subprocess.run(
            [
                SSH_KEYGEN,
                "-Y",
                "verify",
                "-f",
                str(keys.allowed_signers),
                "-I",
                "cluster-a-bot",
                "-n",
                INSTANCE,
                "-s",
                str(sig),
            ],
            stdin=stdin,
            capture_output=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert b"Good" in proc.stdout


def test_tampered_content_fails(keys: Keys, artifact: Path) -> None:
    signature = keys.signer.sign_file(artifact)
    artifact.write_bytes(artifact.read_bytes() + b"!")
    result = Verifier(keys.allowed_signers).verify_file(artifact, signature, INSTANCE)
    assert not result.ok and result.principal is None
    assert "does not verify" in result.message


def test_bytes_round_trip_and_tamper(keys: Keys) -> None:
    data = b'{"payload": {}}\n'
    signature = keys.signer.sign_bytes(data)
    verifier = Verifier(keys.allowed_signers)
    assert verifier.verify_bytes(data, signature, INSTANCE).ok
    assert not verifier.verify_bytes(data + b" ", signature, INSTANCE).ok


def test_other_namespace_is_refused(keys: Keys, artifact: Path) -> None:
    """The key is pinned to its instance: a signature in another namespace is worthless."""
    other = Signer(keys.pair.private, "cluster-b")
    signature = other.sign_file(artifact)
    verifier = Verifier(keys.allowed_signers)
    assert not verifier.verify_file(artifact, signature, "cluster-b").ok
    assert not verifier.verify_file(artifact, signature, INSTANCE).ok


def test_unknown_key_is_refused(keys: Keys, stranger: Signer, artifact: Path) -> None:
    result = Verifier(keys.allowed_signers).verify_file(
        artifact, stranger.sign_file(artifact), INSTANCE
    )
    assert not result.ok
    assert "not in allowed signers" in result.message


def test_garbage_signature_and_missing_file(keys: Keys, artifact: Path, tmp_path: Path) -> None:
    assert not Verifier(keys.allowed_signers).verify_file(artifact, b"junk", INSTANCE).ok
    result = Verifier(tmp_path / "nope").verify_file(artifact, b"junk", INSTANCE)
    assert not result.ok and "missing" in result.message


def test_unprotected_key_gives_a_clear_error(tmp_path: Path, artifact: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    pair.private.chmod(0o644)
    with pytest.raises(SigningError, match=r"deploy\.signing_key_file.*too open"):
        Signer(pair.private, INSTANCE).sign_file(artifact)


def test_allowed_signers_line() -> None:
    line = allowed_signers_line("bot", "ssh-ed25519 AAAA", ["a", "b"])
    assert line == 'bot namespaces="a,b" ssh-ed25519 AAAA\n'
    assert allowed_signers_line("bot", "ssh-ed25519 AAAA") == "bot ssh-ed25519 AAAA\n"
    with pytest.raises(ValueError):
        allowed_signers_line("two words", "ssh-ed25519 AAAA")
