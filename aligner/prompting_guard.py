"""What user text may not bring into a prompt: the operator's marker, its heading, control tokens.

**The operator's marker.** The operator's section (the tenant's safety config) opens with a heading
that carries a marker no client can know: `operator_marker(secret, tenant, version)`, an HMAC of the
tenant and its config version under the server's secret ($ALIGNER_OPERATOR_SECRET). It is the same
for every request under one config version, so vLLM's prefix cache keeps the operator's section; it
changes with every new version and with the secret. A user text that holds it (in any spelling a
reader takes for it: see aligner/prompting_confusables.py) is refused, so no section the user writes
can carry it, and the heading of the user's part says that only the section with that marker is the
operator's. A response's `prompt` never shows it (`MARKER_SHOWN` stands in its place).

**The heading's sentences** are reserved too, compared as skeletons (look-alikes folded, spacing and
punctuation ignored): a second line, for a model that reads the words rather than the marker.

**Control tokens** (`<|im_start|>`, ...) are checked on token ids, as the tokenizer reads the text
after its normalizer: `check_control_ids` renders the conversation twice, with the user's texts and
with a neutral stand-in for each, and refuses a request whose user texts change the special tokens.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aligner.errors import ConfigError, InvalidRequest
from aligner.prompting_confusables import letters

log = logging.getLogger(__name__)

OPERATOR_SECRET_ENV = "ALIGNER_OPERATOR_SECRET"
MIN_SECRET_CHARS = 32
# What a response's returned prompt shows in the marker's place.
MARKER_SHOWN = "(secret marker)"
# The stand-in for a user text when the conversation is rendered without it: no tokenizer makes a
# control token of it, and no template refuses it.
NEUTRAL_TEXT = "x"


@functools.cache
def server_secret() -> bytes:
    """The server's secret for operator markers: $ALIGNER_OPERATOR_SECRET, or (unset) a random one for
    this process, so markers differ between replicas and restarts (still per config version)."""
    value = os.environ.get(OPERATOR_SECRET_ENV, "").strip()
    if not value:
        log.info("%s is not set: operator markers use a random secret of this process", OPERATOR_SECRET_ENV)
        return secrets.token_bytes(32)
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{OPERATOR_SECRET_ENV} has {len(value)} characters; it needs at least {MIN_SECRET_CHARS}")
    return value.encode()


def operator_marker(secret: bytes, tenant: str | None, version: int | None) -> str:
    """The marker of `tenant`'s config `version` (None outside a store): 16 characters of base32 (80 bits)
    of HMAC-SHA256 under `secret`. Nobody without the secret can compute it for another version."""
    message = f"aligner operator section\x00{tenant or ''}\x00{'' if version is None else version}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode()


def reserved_phrases(heading: str) -> tuple[str, ...]:
    """Each sentence of the operator's heading, as `letters` compares it."""
    return tuple(letters(s) for s in heading.replace(":", ".").split(".") if letters(s))


def check_user_text(field: str, text: str, *, marker: str | None, phrases: Sequence[str]) -> None:
    """Refuse `text` (the request's `field`) if a reader could take it for the operator's marker or heading."""
    folded = letters(text)
    if marker and letters(marker) in folded:
        raise InvalidRequest(field, "contains the marker of the operator's section; it is reserved")
    if any(phrase in folded for phrase in phrases):
        raise InvalidRequest(field, "imitates the operator's safety policy heading; that heading is reserved")


def check_composed(
    texts: Sequence[str], neutral: Sequence[str], *, marker: str | None, phrases: Sequence[str], field: str
) -> None:
    """The composed prompt's `texts` (the operator's own text left out) hold the marker and each reserved
    phrase as often as `neutral`, the same composition around neutral stand-ins for the user's texts:
    none was made by user texts side by side (each alone passed `check_user_text`); if one was, the
    request's `field` (its conversation) is named."""
    got, expected = letters("\n".join(texts)), letters("\n".join(neutral))
    for phrase in (*([letters(marker)] if marker else []), *phrases):
        if got.count(phrase) != expected.count(phrase):
            raise InvalidRequest(field, "imitates the operator's safety policy heading; that heading is reserved")


# --- control tokens ---


@functools.lru_cache(maxsize=16)
def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special and added tokens as text (`<|im_start|>`, `<tool_call>`, ...): each
    tokenizes to one token whatever surrounds it, so user text must not contain them."""
    special = set(tokenizer.all_special_tokens)
    special.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return tuple(sorted(s for s in special if s))


@functools.lru_cache(maxsize=16)
def control_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of `control_tokens`."""
    ids = set(getattr(tokenizer, "all_special_ids", ()))
    ids.update(getattr(tokenizer, "added_tokens_decoder", {}))
    return frozenset(ids)


def _normalizes(tokenizer: Any) -> bool:
    # Without a normalizer, added tokens match the raw text: replacing their spelling is exact.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and backend.normalizer is not None


def _control_spans(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    wanted = control_ids(tokenizer)
    return [tuple(span) for i, span in zip(encoded["input_ids"], encoded["offset_mapping"]) if i in wanted]


def neutralize_control_tokens(text: str, tokenizer: Any) -> str:
    """`text` with every control token it would tokenize to broken up, so it yields only ordinary tokens.
    For text the server renders but cannot refuse: model output (and the conversation around it) in the
    judge's and reward models' prompts.

    A spelled-out token gets a zero-width space after its first character. A tokenizer with a normalizer
    may drop that space, or make a control token of other characters (NFKC makes `＜|im_start|＞` one):
    then its own token ids find what is left, whose characters get a plain space, or at last are dropped."""
    for token in control_tokens(tokenizer):
        if token in text:
            text = text.replace(token, f"{token[:1]}\u200b{token[1:]}")
    if not _normalizes(tokenizer):
        return text
    for attempt in range(3):
        spans = _control_spans(text, tokenizer)
        if not spans:
            return text
        pieces, end = [], 0
        for start, stop in spans:
            piece = text[start:stop]
            pieces += [text[end:start], "" if attempt == 2 else " ".join(piece)]
            end = max(end, stop)
        text = "".join(pieces) + text[end:]
    return text


def check_control_ids(
    render: Callable[[dict[str, str]], list[int]],
    texts: Sequence[tuple[str, str]],
    tokenizer: Any,
    *,
    whose: str,
    whole: str,
) -> list[int]:
    """The token ids `render({})` makes of the conversation, refused if the user's `texts` (field, text)
    bring control tokens into them: `render(stand_ins)` renders it with `stand_ins` (field -> text) in
    place of those texts. The ids' special tokens must be those of the conversation with every text
    replaced by `NEUTRAL_TEXT`, or the first field that makes the difference alone is named (`whole`,
    the conversation's field, if only several together make it). `whose`: the tokenizer's owner."""
    wanted = control_ids(tokenizer)
    ids = render({})
    counted = Counter(i for i in ids if i in wanted)
    neutral = {field: NEUTRAL_TEXT for field, _ in texts}
    expected = Counter(i for i in render(neutral) if i in wanted)
    if counted == expected:
        return ids

    def control_counts(real: Sequence[tuple[str, str]]) -> Counter:
        return Counter(i for i in render({**neutral, **dict(real)}) if i in wanted)

    def first_alone(group: Sequence[tuple[str, str]]) -> tuple[str, Counter] | None:
        # Halving: a few renders for a conversation of many texts, not one per text (each render is the
        # whole conversation, so one per text would cost the request's size times its number of texts).
        got = control_counts(group)
        if got == expected:
            return None
        if len(group) == 1:
            return group[0][0], got
        half = len(group) // 2
        return first_alone(group[:half]) or first_alone(group[half:])

    found = first_alone(list(texts))
    if found is not None:
        raise _control_error(found[0], found[1], expected, tokenizer, whose)
    raise _control_error(whole, counted, expected, tokenizer, whose)


def _control_error(field: str, got: Counter, expected: Counter, tokenizer: Any, whose: str) -> InvalidRequest:
    extra = list((got - expected) or (expected - got))
    token = tokenizer.convert_ids_to_tokens(extra[0])
    return InvalidRequest(
        field,
        f"contains {whose} control token {token!r} (as its tokenizer reads the text); "
        "control tokens are not allowed in text",
    )
