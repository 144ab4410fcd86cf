"""Unit tests of proto.tokens: token minting and checking, without a network."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtc_signal.proto import tokens

SECRET = b"test-secret-0123456789"
NOW = 1_800_000_000


def test_minted_token_verifies_to_its_id_until_expiry() -> None:
    """A token grants its ID before its expiry and is refused from the expiry on."""
    token = tokens.mint(SECRET, "alice", NOW + 60)
    assert tokens.verify(SECRET, token, NOW) == ("alice", None)
    assert tokens.verify(SECRET, token, NOW + 59.9) == ("alice", None)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(SECRET, token, NOW + 60)


def test_token_is_unpadded_base64url_of_id_expiry_and_raw_hmac() -> None:
    """The documented format: base64url(id:expiry:HMAC-SHA256(domain + id:expiry))."""
    token = tokens.mint(SECRET, "alice", NOW)
    assert "=" not in token and "+" not in token and "/" not in token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    claims = f"alice:{NOW}".encode()
    mac = hmac.new(SECRET, b"rtc-signal-token-v1\0" + claims, hashlib.sha256).digest()
    assert raw == claims + b":" + mac


def test_token_from_another_secret_is_refused_as_forged() -> None:
    token = tokens.mint(b"another-secret-0123456789", "alice", NOW + 60)
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(SECRET, token, NOW)


def test_changing_the_id_or_expiry_breaks_the_signature() -> None:
    """Editing the readable claims (the ID, a later expiry) without the secret fails."""
    raw = base64.urlsafe_b64decode(tokens.mint(SECRET, "alice", NOW + 60) + "==")
    mac = raw[-32:]
    for claims in (f"mallory:{NOW + 60}", f"alice:{NOW + 10**6}"):
        forged = base64.urlsafe_b64encode(claims.encode() + b":" + mac).decode().rstrip("=")
        with pytest.raises(tokens.TokenError, match="signature"):
            tokens.verify(SECRET, forged, NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!not-base64!!!",
        "YWxpY2U",  # base64url of "alice": far too short
        base64.urlsafe_b64encode(b"alice:" + b"x" * 40).decode(),  # no ':' before the MAC
        base64.urlsafe_b64encode(b"alice:soon:" + b"m" * 32).decode(),  # expiry not a number
        base64.urlsafe_b64encode(b":123:" + b"m" * 32).decode(),  # empty ID
        base64.urlsafe_b64encode(b"\xff\xfe:123:" + b"m" * 32).decode(),  # ID not UTF-8
        "A" * (tokens.MAX_TOKEN_LENGTH + 1),
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(token: str) -> None:
    with pytest.raises(tokens.TokenError) as info:
        tokens.verify(SECRET, token, NOW)
    assert str(info.value)


@given(st.text(min_size=1, max_size=64), st.integers(min_value=1, max_value=10**11))
def test_any_id_round_trips_including_colons_and_unicode(peer_id: str, expiry: int) -> None:
    """Every non-empty ID (with ':' or any Unicode) survives mint -> verify and peek_id."""
    try:
        token = tokens.mint(SECRET, peer_id, expiry)
    except UnicodeEncodeError:  # lone surrogates are not valid IDs on the wire either
        return
    assert tokens.peek_id(token) == peer_id
    assert tokens.verify(SECRET, token, expiry - 1) == (peer_id, None)


def test_empty_id_cannot_be_minted() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        tokens.mint(SECRET, "", NOW)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        tokens.check_secret("x" * 15)
    assert tokens.check_secret("x" * 16) == b"x" * 16


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-1h", "0", "1 hour"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        tokens.parse_duration(text)


@pytest.mark.parametrize(
    ("path", "authorization", "expected"),
    [
        ("/register", None, None),
        ("/register?token=abc", None, "abc"),
        ("/offer?x=1&token=abc&y=2", None, "abc"),
        ("/register?token=", None, ""),  # present but empty: refused later, not ignored
        ("/register", "Bearer abc", "abc"),
        ("/register", "bearer   abc ", "abc"),
        ("/register?token=query", "Bearer header", "header"),  # the header wins
        ("/register?token=query", "Basic dXNlcjpwdw==", "query"),  # not a bearer token
        ("/register?tokens=abc", None, None),
    ],
)
def test_token_from_request(path: str, authorization: str | None, expected: str | None) -> None:
    """The token comes from ``Authorization: Bearer`` or else the ``token`` query parameter."""
    assert tokens.token_from_request(path, authorization) == expected
