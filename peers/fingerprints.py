"""DTLS fingerprints of an SDP, and the short authentication string (SAS).

Sans-I/O (stdlib only). A WebRTC connection is end-to-end authenticated
exactly when each side knows the other's DTLS certificate fingerprint:
the DTLS handshake then proves the peer holds that certificate's key
(aiortc refuses a certificate that matches none of the SDP's
``a=fingerprint:`` lines). The signaling server relays those lines, so it
can swap them to sit in the middle; both code mode's MACs
(:mod:`peers.pake`) and ``--verify``'s SAS bind them end to end.
"""

from __future__ import annotations

import hashlib
import re

from rtc_signal.peers.codewords import WORDS

_FINGERPRINT = re.compile(r"^a=fingerprint:\s*(\S+)\s+([0-9A-Fa-f:]+)\s*$", re.MULTILINE)
#: at most this many fingerprint lines are read (an SDP has one per hash
#: function and media section; a flood of them is refused, not hashed)
MAX_FINGERPRINTS = 64

#: words in a short authentication string; 11 bits each (2048 words)
SAS_WORDS = 5
SAS_BITS = SAS_WORDS * (len(WORDS).bit_length() - 1)
_SAS_DOMAIN = b"rtc-signal sas v1\n"


class FingerprintError(ValueError):
    """An SDP without a usable fingerprint: nothing to authenticate."""


def fingerprints(sdp: str) -> tuple[str, ...]:
    """Every ``a=fingerprint:`` line of ``sdp`` (session and media level),
    normalized (``algorithm HEX:HEX...``: algorithm lowercase, hex uppercase),
    deduplicated and sorted, so that the same certificates give the same
    tuple whatever the SDP's layout. FingerprintError if there is none."""
    found = set()
    for match in _FINGERPRINT.finditer(sdp.replace("\r\n", "\n")):
        algorithm, digest = match.group(1).lower(), match.group(2).upper()
        found.add(f"{algorithm} {digest}")
        if len(found) > MAX_FINGERPRINTS:
            raise FingerprintError(f"more than {MAX_FINGERPRINTS} fingerprints in the SDP")
    if not found:
        raise FingerprintError("the SDP has no a=fingerprint line")
    return tuple(sorted(found))


def canonical(sdp: str) -> bytes:
    """The bytes that MACs and the SAS cover for one side: its fingerprints,
    one per line."""
    return "".join(f"{line}\n" for line in fingerprints(sdp)).encode("ascii")


def short_auth_string(offer_sdp: str, answer_sdp: str) -> str:
    """Words that two people read to each other to check a named call: both
    sides compute them from (offerer's fingerprints, answerer's fingerprints),
    in that order. A man in the middle holds two DTLS sessions with
    different certificates on each side, so its two SAS differ unless it finds
    a certificate whose SAS matches the other side's: SAS_BITS (55) bits of
    SHA-256 to hit, after both honest fingerprints are known (the answer's
    comes last) and before the caller's connect timeout."""
    digest = hashlib.sha256(
        _SAS_DOMAIN + canonical(offer_sdp) + b"--\n" + canonical(answer_sdp)
    ).digest()
    value = int.from_bytes(digest, "big")
    words = []
    for _ in range(SAS_WORDS):
        value, index = divmod(value, len(WORDS))
        words.append(WORDS[index])
    return " ".join(words)
