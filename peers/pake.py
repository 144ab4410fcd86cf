"""End-to-end authentication of a code call: SPAKE2, then MACs over the DTLS
fingerprints. Sans-I/O: :class:`CodeAuth` takes and returns signaling
bodies; :mod:`peers.session` carries them.

The exchange (docs/PROTOCOL.md, "Codes and end-to-end authentication"):

1. offerer -> answerer, Candidate (4): ``rtc-signal-pake:v1:<base64 SPAKE2 A message>``
   (a Candidate before the Offer starts the call at the server);
2. answerer -> offerer, Candidate (4): ``rtc-signal-pake:v1:<base64 SPAKE2 B message>``;
3. offerer -> answerer, Offer (3): ``{"type":"offer","sdp":…,"auth":<base64 MAC>}``,
   the MAC over the offerer's fingerprints; the answerer checks it before
   it answers;
4. answerer -> offerer, Answer (2): the same with the answerer's fingerprints;
   the offerer checks it before applying the answer.

Either side that finds a MAC wrong sends ``rtc-signal-pake:v1:abort`` (a
Candidate) and gives up. SPAKE2 runs in A/B roles (offerer A, answerer B)
with identities that name both roles and both signaling IDs; its password is
the whole code (:attr:`peers.codes.Code.password`). MAC keys come from the
SPAKE2 key by HKDF-SHA256 with one label per direction, so a MAC can be
neither reflected nor replayed the other way.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError

from rtc_signal.peers.codes import Code
from rtc_signal.peers.errors import PeerError
from rtc_signal.peers.fingerprints import FingerprintError, canonical
from rtc_signal.proto import SessionDescription

PAKE_PREFIX = b"rtc-signal-pake:v1:"
ABORT_BODY = PAKE_PREFIX + b"abort"
MISMATCH_MESSAGE = "wrong code, or someone is in the middle"
#: a SPAKE2 message (Ed25519 group) is 33 bytes; anything much longer is refused
MAX_MESSAGE = 256
_IDENTITY = "rtc-signal code v1 {role} {peer_id}"
Role = Literal["offer", "answer"]
_MAC_LABELS: dict[Role, bytes] = {
    "offer": b"rtc-signal code v1 offerer fingerprints",
    "answer": b"rtc-signal code v1 answerer fingerprints",
}


class CodeMismatch(PeerError):
    """The peers do not share the code (or a man in the middle changed what
    they exchanged); the code is used up."""

    exit_code = 12

    def __init__(self, detail: str = "") -> None:
        super().__init__(MISMATCH_MESSAGE + (f" ({detail})" if detail else ""))


class CodeNotFound(PeerError):
    """Nobody is registered under the code's number: it was mistyped, used
    (a code's owner leaves after its one attempt) or never issued."""

    def __init__(self, number: int) -> None:
        super().__init__(
            f"nobody is waiting with code number {number} (a wrong number, or the code "
            "was used up or its owner left)"
        )


class CodeProtocolError(PeerError):
    """A code-mode message out of order or malformed."""


class _State(enum.Enum):
    STARTED = "started"  # our SPAKE2 message made, the peer's awaited
    KEYED = "keyed"  # MAC keys derived
    FAILED = "failed"  # a MAC was wrong or the peer aborted: nothing more


def is_pake_body(body: bytes | None) -> bool:
    """Whether a Candidate body belongs to the code exchange (not ICE)."""
    return body is not None and body.startswith(PAKE_PREFIX)


class CodeAuth:
    """One side of one code exchange. Single use: SPAKE2 allows one attempt.

    ``offer_id`` and ``answer_id`` are the signaling IDs of the two sides
    (the answerer's is the code's ``code-<number>``); they are bound into
    SPAKE2's identities, so a server that relays between other IDs than the
    peers think breaks the key.
    """

    def __init__(self, code: Code, role: Role, offer_id: str, answer_id: str) -> None:
        self.code = code
        self.role: Role = role
        self.peer_role: Role = "answer" if role == "offer" else "offer"
        id_a = _IDENTITY.format(role="offer", peer_id=offer_id).encode()
        id_b = _IDENTITY.format(role="answer", peer_id=answer_id).encode()
        side = SPAKE2_A if role == "offer" else SPAKE2_B
        self._spake = side(code.password, idA=id_a, idB=id_b)
        self._message = self._spake.start()
        self._keys: dict[Role, bytes] = {}
        self._state = _State.STARTED

    @property
    def keyed(self) -> bool:
        return self._state is _State.KEYED

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    def message(self) -> bytes:
        """Our SPAKE2 message, as the body of a Candidate."""
        return PAKE_PREFIX + base64.b64encode(self._message)

    def receive(self, body: bytes) -> None:
        """The peer's code-exchange Candidate: its SPAKE2 message (derives the
        keys) or an abort (CodeMismatch)."""
        if body == ABORT_BODY:
            self._state = _State.FAILED
            raise CodeMismatch("the other side refused our proof of the code")
        if self._state is not _State.STARTED:
            raise CodeProtocolError(f"unexpected code-exchange message ({self._state.value})")
        encoded = body.removeprefix(PAKE_PREFIX)
        if len(encoded) > MAX_MESSAGE:
            raise CodeProtocolError("code-exchange message too long")
        try:
            message = base64.b64decode(encoded, validate=True)
            key = self._spake.finish(message)
        except (binascii.Error, SPAKEError, ValueError) as exc:
            # a malformed or reflected message is a failed attempt too
            self._state = _State.FAILED
            raise CodeMismatch(f"bad code-exchange message: {exc}") from None
        for role, label in _MAC_LABELS.items():
            self._keys[role] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=label
            ).derive(key)
        self._state = _State.KEYED

    def seal(self, description: SessionDescription) -> bytes:
        """The Offer/Answer body for our description, with the MAC over our
        fingerprints."""
        mac = self._mac(self.role, description)
        return json.dumps(
            {
                "type": description.type,
                "sdp": description.sdp,
                "auth": base64.b64encode(mac).decode(),
            }
        ).encode()

    def open(self, body: bytes | None, description: SessionDescription) -> None:
        """Check the MAC of the peer's Offer/Answer body (``description`` is
        that body decoded); CodeMismatch if it is missing or wrong."""
        expected = self._mac(self.peer_role, description)
        try:
            document = json.loads(body or b"")
            auth = document.get("auth") if isinstance(document, dict) else None
            mac = base64.b64decode(auth, validate=True) if isinstance(auth, str) else b""
        except (ValueError, binascii.Error):
            mac = b""
        if not hmac.compare_digest(mac, expected):
            self._state = _State.FAILED
            raise CodeMismatch(f"the {self.peer_role}'s fingerprint MAC does not match")

    def _mac(self, role: Role, description: SessionDescription) -> bytes:
        if self._state is not _State.KEYED:
            raise CodeProtocolError(f"no key to authenticate with ({self._state.value})")
        try:
            covered = canonical(description.sdp)
        except FingerprintError as exc:
            raise CodeMismatch(str(exc)) from None
        message = description.type.encode() + b"\n" + covered
        return hmac.new(self._keys[role], message, hashlib.sha256).digest()

    def fail(self) -> bytes:
        """Give up (e.g. our check failed elsewhere); the abort body to send."""
        self._state = _State.FAILED
        return ABORT_BODY
