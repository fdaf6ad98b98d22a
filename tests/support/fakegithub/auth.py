"""GitHub App authentication as GitHub does it: RS256 app JWTs and installation tokens."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# GitHub refuses app JWTs whose ``exp`` is more than 10 minutes ahead. A little slack
# absorbs the second-granularity rounding of ``exp`` by JWT libraries.
MAX_JWT_LIFETIME_S = 600
_CLOCK_SLACK_S = 5

BAD_CREDENTIALS = "Bad credentials"
REQUIRES_AUTH = "Requires authentication"
JWT_UNDECODABLE = "A JSON web token could not be decoded"


def generate_app_key() -> tuple[str, str]:
    """A fresh RSA-2048 key pair as PEM strings ``(private, public)``, like an App key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY", as GitHub
        serialization.NoEncryption(),
    ).decode()
    return private_pem, public_pem_of(private_pem)


def public_pem_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass(frozen=True)
class JwtProblem:
    """Why an app JWT was refused. ``misuse`` marks bugs in the client (not expiry)."""

    message: str
    misuse: bool


def check_app_jwt(
    token: str, public_pem: str, app_id: int, client_id: str, now: float | None = None
) -> JwtProblem | None:
    """Validate an app JWT the way GitHub does; ``None`` means accepted."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return JwtProblem(JWT_UNDECODABLE, misuse=False)
    if header.get("alg") != "RS256":
        return JwtProblem(f"{JWT_UNDECODABLE} (alg must be RS256, got {header.get('alg')})", True)
    try:
        claims = jwt.decode(
            token,
            public_pem,
            algorithms=["RS256"],
            # GitHub's iss may be the numeric app id or the client id: checked below.
            options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        return JwtProblem(f"{JWT_UNDECODABLE} (signature does not match the app key)", True)
    except jwt.PyJWTError as exc:
        return JwtProblem(f"{JWT_UNDECODABLE} ({exc})", True)
    return _check_claims(claims, app_id, client_id, now)


def _check_claims(
    claims: dict[str, object], app_id: int, client_id: str, now: float
) -> JwtProblem | None:
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        return JwtProblem("'exp' and 'iat' claims must be numeric dates", True)
    if str(claims["iss"]) not in (str(app_id), client_id):
        return JwtProblem(
            f"'Issuer' claim ('iss') must be the app id or client id, got {claims['iss']!r}", True
        )
    if exp <= now:
        # Not misuse: a long-lived client may legitimately hold an expired JWT.
        return JwtProblem(
            "'Expiration time' claim ('exp') must be a numeric value representing the "
            "future time at which the assertion expires",
            misuse=False,
        )
    if exp - now > MAX_JWT_LIFETIME_S + _CLOCK_SLACK_S:
        return JwtProblem("'Expiration time' claim ('exp') is too far in the future", True)
    if iat > now + _CLOCK_SLACK_S:
        return JwtProblem(
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued",
            True,
        )
    return None


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """``"token abc"`` / ``"Bearer abc"`` -> ``("token"|"bearer", "abc")``."""
    if not header or " " not in header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("token", "bearer") or not credential.strip():
        return None
    return scheme, credential.strip()


def new_installation_token(app_id: int, stateless: bool) -> str:
    """A fresh token: classic ``ghs_`` + 36 chars, or the 2026 stateless long format."""
    alphabet = string.ascii_letters + string.digits
    if stateless:
        return f"ghs_{app_id}_" + "".join(secrets.choice(alphabet) for _ in range(120))
    return "ghs_" + "".join(secrets.choice(alphabet) for _ in range(36))
