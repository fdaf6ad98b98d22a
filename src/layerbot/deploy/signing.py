"""Detached signatures with OpenSSH keys: ``ssh-keygen -Y sign`` and ``ssh-keygen -Y verify``.

The signatures are the standard SSHSIG format, so anyone can check a staged artifact by hand:

    ssh-keygen -Y find-principals -s FILE.sig -f allowed_signers
    ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n NAMESPACE -s FILE.sig < FILE

The namespace is the bot instance's name (as in EESSI's bot), so a signature made by one
instance for its own artifacts cannot be passed off as another instance's. An
``allowed_signers`` line may pin a key to its namespaces (``namespaces="cluster-a"``).

We shell out to ssh-keygen instead of re-implementing SSHSIG: it is the reference
implementation that operators and the ingestion side already trust, and data is streamed
through its stdin so signing a 1 GB tarball needs no memory.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SSH_KEYGEN = os.environ.get("LAYERBOT_SSH_KEYGEN", "/usr/bin/ssh-keygen")
#: ssh-keygen hashes its input; a generous bound still catches a hung process.
TIMEOUT_SECONDS = 600.0


class SigningError(Exception):
    """A signature could not be made (bad key, missing ssh-keygen, ...)."""


@dataclass(frozen=True)
class Verification:
    """The result of checking one signature: ``principal`` is set only when it is valid."""

    ok: bool
    principal: str | None
    message: str


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    def public_key(self) -> str:
        """``<type> <base64>`` without the comment, as used in allowed_signers lines."""
        fields = self.public.read_text().split()
        return " ".join(fields[:2])


def _run(
    args: Sequence[str], stdin: IO[bytes] | None = None, data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [SSH_KEYGEN, *args],
            stdin=stdin,
            input=data,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise SigningError(f"{SSH_KEYGEN} not found: install OpenSSH's ssh-keygen") from None
    except subprocess.TimeoutExpired:
        raise SigningError(f"ssh-keygen {args[0]} {args[1]} timed out") from None


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = proc.stderr.decode(errors="replace").strip()
    # ssh-keygen wraps its permission complaint in a banner of @ signs; keep the facts.
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("@")]
    return "; ".join(lines) or f"exit code {proc.returncode}"


def generate_keypair(path: Path, comment: str = "layerbot") -> KeyPair:
    """A new ed25519 key without passphrase at ``path`` (and ``path.pub``), for tests and setup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    proc = _run(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    if proc.returncode != 0:
        raise SigningError(f"ssh-keygen could not create {path}: {_stderr(proc)}")
    return KeyPair(private=path, public=path.with_name(path.name + ".pub"))


def allowed_signers_line(
    principal: str, public_key: str, namespaces: Iterable[str] | None = None
) -> str:
    """One allowed_signers line; ``namespaces`` pins the key to those namespaces."""
    if not principal or any(c.isspace() for c in principal):
        raise ValueError(f"principal {principal!r} must be a non-empty word")
    options = ""
    if namespaces is not None:
        options = f' namespaces="{",".join(namespaces)}"'
    return f"{principal}{options} {public_key}\n"


class Signer:
    """Signs with one private key in one namespace (the instance name)."""

    def __init__(self, key_file: Path, namespace: str) -> None:
        if not namespace or any(c.isspace() for c in namespace):
            raise SigningError(f"namespace {namespace!r} must be a non-empty word")
        self.key_file = key_file
        self.namespace = namespace

    def sign_file(self, path: Path) -> bytes:
        """The armored signature of ``path``'s content (streamed through ssh-keygen)."""
        with path.open("rb") as fh:
            return self._sign(stdin=fh)

    def sign_bytes(self, data: bytes) -> bytes:
        return self._sign(data=data)

    def _sign(self, stdin: IO[bytes] | None = None, data: bytes | None = None) -> bytes:
        # Reading the message from stdin makes ssh-keygen write the signature to stdout,
        # so nothing is written beside the file and an old .sig is never in the way.
        proc = _run(["-Y", "sign", "-f", str(self.key_file), "-n", self.namespace], stdin, data)
        if proc.returncode != 0 or b"BEGIN SSH SIGNATURE" not in proc.stdout:
            raise SigningError(
                f"cannot sign with {self.key_file} (deploy.signing_key_file): {_stderr(proc)}"
            )
        return proc.stdout


class Verifier:
    """Checks signatures against an allowed_signers file."""

    def __init__(self, allowed_signers: Path) -> None:
        self.allowed_signers = allowed_signers

    def principals(self, signature: bytes) -> list[str]:
        """Principals of allowed_signers whose key made ``signature`` (empty: unknown key)."""
        with _temp_signature(signature) as sig_path:
            proc = _run(["-Y", "find-principals", "-s", sig_path, "-f", str(self.allowed_signers)])
        if proc.returncode != 0:
            return []
        return [ln.strip() for ln in proc.stdout.decode(errors="replace").splitlines() if ln]

    def verify_file(self, path: Path, signature: bytes, namespace: str) -> Verification:
        with path.open("rb") as fh:
            return self._verify(signature, namespace, stdin=fh)

    def verify_bytes(self, data: bytes, signature: bytes, namespace: str) -> Verification:
        return self._verify(signature, namespace, data=data)

    def _verify(
        self,
        signature: bytes,
        namespace: str,
        stdin: IO[bytes] | None = None,
        data: bytes | None = None,
    ) -> Verification:
        if not self.allowed_signers.is_file():
            return Verification(False, None, f"allowed signers file {self.allowed_signers} missing")
        if b"BEGIN SSH SIGNATURE" not in signature:
            return Verification(False, None, "not an SSH signature")
        principals = self.principals(signature)
        if not principals:
            return Verification(False, None, "signed by a key that is not in allowed signers")
        last = ""
        for principal in principals:
            if stdin is not None:
                stdin.seek(0)
            with _temp_signature(signature) as sig_path:
                args = ["-Y", "verify", "-f", str(self.allowed_signers), "-I", principal]
                proc = _run([*args, "-n", namespace, "-s", sig_path], stdin, data)
            if proc.returncode == 0:
                return Verification(True, principal, f"good signature by {principal}")
            last = _stderr(proc)
        return Verification(False, None, f"signature does not verify ({last})")


class _temp_signature:
    """The signature in a private temporary file, as ssh-keygen wants a path for it."""

    def __init__(self, signature: bytes) -> None:
        self.signature = signature
        self.path = ""

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="layerbot-sig-", suffix=".sig")
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.signature)
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.unlink(self.path)
