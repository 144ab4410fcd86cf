"""One-time codes: ``<number>-<word>-<word>``, e.g. ``7-crossover-clock``.

Sans-I/O (stdlib only). The two parts have different jobs:

- the **number** finds the peer: the code's owner registers on the
  signaling server as ``code-<number>`` (:attr:`Code.peer_id`). It is not
  secret (the server sees it), so it is not counted as password.
- the **words** are the password: :data:`WORDS_PER_CODE` words from the
  2048-word list of :mod:`peers.codewords`, 11 bits each, so
  :data:`PASSWORD_BITS` = 22 bits. They never leave the peers: SPAKE2
  (:mod:`peers.pake`) proves that both sides know them without sending them.
  The whole code (number included) is SPAKE2's password, so a code whose
  words are right but whose number was changed does not authenticate.

22 bits is enough because a code allows one online guess: the owner burns
it after one failed exchange, and SPAKE2 gives an attacker (the signaling
server included) nothing to test guesses against offline. One guess
succeeds with probability 2**-22 (1 in 4,194,304).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from rtc_signal.peers.codewords import WORDS

WORDS_PER_CODE = 2
#: bits of password in a code (the words; the number is not secret)
PASSWORD_BITS = WORDS_PER_CODE * (len(WORDS).bit_length() - 1)
#: prefix of the signaling ID a code's owner registers under
CODE_ID_PREFIX = "code-"
#: numbers of fresh codes are drawn from 1..FIRST_NUMBERS (short to type);
#: the range grows when the drawn ones are taken (see :func:`new_code`)
FIRST_NUMBERS = 999
#: the largest number a code may carry (bounds what a typed code can ask for)
MAX_NUMBER = 10**9

_BY_PREFIX = {word[:4]: word for word in WORDS}  # BIP-0039: 4 letters identify a word
_SEPARATORS = re.compile(r"[\s\-]+")


class CodeError(ValueError):
    """A typed code that cannot be read; the message says why."""


@dataclass(frozen=True)
class Code:
    number: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join((str(self.number), *self.words))

    @property
    def peer_id(self) -> str:
        """The signaling ID the code's owner registers under."""
        return f"{CODE_ID_PREFIX}{self.number}"

    @property
    def password(self) -> bytes:
        """SPAKE2's password: the whole canonical code (number bound too)."""
        return str(self).encode("ascii")


def new_code(attempt: int = 0) -> Code:
    """A fresh random code. ``attempt`` counts IDs already found taken: each
    one multiplies the number range by ten, so a busy server still yields a
    free ID after a few tries while codes usually stay short."""
    numbers = min(FIRST_NUMBERS * 10**attempt, MAX_NUMBER)
    number = 1 + secrets.randbelow(numbers)
    words = tuple(secrets.choice(WORDS) for _ in range(WORDS_PER_CODE))
    return Code(number, words)


def parse_code(text: str) -> Code:
    """Read a typed code: case and extra spaces or dashes do not matter, and
    each word may be given by its first four letters (or with a typo after
    them); CodeError says what is wrong."""
    parts = [part for part in _SEPARATORS.split(text.strip().lower()) if part]
    if len(parts) != 1 + WORDS_PER_CODE:
        raise CodeError(
            f"a code is a number and {WORDS_PER_CODE} words, like 7-word-word "
            f"(got {len(parts)} part{'s' if len(parts) != 1 else ''})"
        )
    number_text, *word_texts = parts
    if not number_text.isascii() or not number_text.isdigit():
        raise CodeError(f"a code starts with a number, not {number_text[:20]!r}")
    number = int(number_text)
    if not 1 <= number <= MAX_NUMBER:
        raise CodeError(f"the code's number must be 1 to {MAX_NUMBER}")
    return Code(number, tuple(_word(text) for text in word_texts))


def _word(text: str) -> str:
    # a three-letter word is its own key; a shorter typed prefix is not enough
    word = _BY_PREFIX.get(text[:4])
    if word is None:
        raise CodeError(f"{text[:20]!r} is not a code word")
    return word
