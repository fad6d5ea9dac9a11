"""Checks no response can pass together, refused when a request is parsed (400 naming the later check).

Only certain conflicts are refused, never a pair some response passes: a repeat, two counts of one
quantity whose ranges do not meet, two answer languages, English-only case rules beside another language,
all lower case beside capital words or a capitalised fixed answer, all capitals beside fewer than one
capital word, a required phrase that holds a forbidden word or a comma where either is excluded, a
required text that holds a counted keyword or letter more often than the count allows, two endings (or
two openings) neither of which ends (begins) the other, two first words of one paragraph.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aligner.errors import InvalidRequest, shown

# The checks here are spec.py's `Check`s, read by their fields; spec.py imports this module, so the type
# is not imported back.
Check = Any

# Counted quantities: (id, the parameter naming what is counted or None, the count, the relation; None:
# the count is exact). Two checks on one quantity whose ranges do not meet can never both pass.
QUANTITIES: dict[str, tuple[str | None, str, str | None]] = {
    "keywords:frequency": ("keyword", "frequency", "relation"),
    "keywords:letter_frequency": ("letter", "let_frequency", "let_relation"),
    "length_constraints:number_sentences": (None, "num_sentences", "relation"),
    "length_constraints:number_words": (None, "num_words", "relation"),
    "length_constraints:number_paragraphs": (None, "num_paragraphs", None),
    "detectable_format:number_bullet_lists": (None, "num_bullets", None),
    "change_case:capital_word_frequency": (None, "capital_frequency", "capital_relation"),
}
CAPITALS, LOWER = "change_case:english_capital", "change_case:english_lowercase"
LANGUAGE, CONSTRAINED = "language:response_language", "detectable_format:constrained_response"
REPEAT = "combination:repeat_prompt"
# Text a response must contain, by check: what `no_comma` and the forbidden words rule out.
REQUIRED_TEXT: dict[str, Callable[[Any], list[str]]] = {
    "keywords:existence": lambda c: list(c.keywords or []),
    "startend:end_checker": lambda c: [c.end_phrase or ""],
    REPEAT: lambda c: [c.prompt_to_repeat or ""],
    "detectable_content:postscript": lambda c: [c.postscript_marker or ""],
}


def refuse_conflicts(checks: list[Check]) -> None:
    for j, later in enumerate(checks):
        for i, earlier in enumerate(checks[:j]):
            if later.id == earlier.id and later.params() == earlier.params():
                raise InvalidRequest(f"checks[{j}]", f"repeats checks[{i}]")
            why = conflict(earlier, later) or conflict(later, earlier)
            if why is not None:
                raise InvalidRequest(f"checks[{j}]", f"contradicts checks[{i}]: {why}")


def conflict(a: Check, b: Check) -> str | None:
    """Why no response passes both `a` and `b` (one order of the pair), or None."""
    ranges = _range(a), _range(b)
    if ranges[0] and ranges[1] and ranges[0][0] == ranges[1][0]:
        (_, low_a, end_a), (_, low_b, end_b) = ranges[0], ranges[1]
        if max(low_a, low_b) >= min(end_a, end_b):
            return "no count passes both"
    if a.id == b.id == LANGUAGE and a.language != b.language:
        return "a response has one language"
    if a.id == b.id == "length_constraints:nth_paragraph_first_word" and a.num_paragraphs != b.num_paragraphs:
        return "they ask for different numbers of paragraphs"
    if {a.id, b.id} == {CAPITALS, LOWER}:
        return "no response is all capitals and all lower case"
    if a.id in (CAPITALS, LOWER) and b.id == LANGUAGE and b.language != "en":
        return f"{a.id} asks for English, {b.id} for {b.language!r}"
    capitals_wanted = b.capital_relation == "at least" and (b.capital_frequency or 0) > 0
    if a.id == LOWER and b.id == "change_case:capital_word_frequency" and capitals_wanted:
        return "an all lower-case response has no capital words"
    if a.id in (CAPITALS, LOWER) and b.id == CONSTRAINED:
        return 'the fixed answers ("My answer is yes.") mix capitals and lower case'
    if a.id == CAPITALS and b.id == "change_case:capital_word_frequency":
        if b.capital_relation == "less than" and (b.capital_frequency or 0) <= 1:
            return "an all-capitals response has at least one capital word"
    if a.id == b.id == "length_constraints:nth_paragraph_first_word" and a.nth_paragraph == b.nth_paragraph:
        if (a.first_word or "").strip().lower() != (b.first_word or "").strip().lower():
            return "a paragraph has one first word"
    for check_id, edge, fits in (
        ("startend:end_checker", "end_phrase", str.endswith),
        (REPEAT, "prompt_to_repeat", str.startswith),
    ):
        if a.id == b.id == check_id:
            first, second = (getattr(c, edge).strip().lower() for c in (a, b))
            if not _has_sigma(first + second) and not (fits(first, second) or fits(second, first)):
                return f"a response cannot {'end' if edge == 'end_phrase' else 'begin'} with both"
    counted = _counted_below(b)
    if counted is not None:
        text_counted, below = counted
        for text, times in _held(a):
            least = times * text.strip().lower().count(text_counted)
            if least >= below:
                if below == 1:
                    return f"{shown(text_counted)} must not appear, and the required {shown(text.strip())} holds it"
                return (
                    f"the required {shown(text.strip())} ({times}x) holds {shown(text_counted)} {least} times; "
                    f"fewer than {below} are allowed"
                )
    for text in REQUIRED_TEXT.get(a.id, lambda c: [])(a):
        if b.id == "punctuation:no_comma" and "," in text:
            return f"the required {shown(text.strip())} has a comma"
        for word in b.forbidden_words or [] if b.id == "keywords:forbidden_words" else []:
            if _holds_whole_word(text.strip(), word.strip()):
                return f"the required {shown(text.strip())} holds the forbidden word {shown(word.strip())}"
    return None


def _held(check: Check) -> list[tuple[str, int]]:
    """(text, times) a response that passes `check` holds, case aside, at least `times` times apart."""
    if check.id == "keywords:existence":
        return [(k, 1) for k in check.keywords or []]
    if check.id == "keywords:frequency" and check.relation == "at least":
        return [(check.keyword or "", check.frequency or 0)]
    if check.id in ("startend:end_checker", REPEAT):
        return [(text, 1) for text in REQUIRED_TEXT[check.id](check)]
    return []


def _counted_below(check: Check) -> tuple[str, int] | None:
    """(the text counted, lower-cased; the count it must stay below) of a "less than" count of a text.
    None with a sigma: Python lower-cases it by its context, so its count in a phrase and in a response
    can differ."""
    if check.id == "keywords:frequency" and check.relation == "less than":
        counted, below = (check.keyword or "").strip().lower(), check.frequency
    elif check.id == "keywords:letter_frequency" and check.let_relation == "less than":
        counted, below = (check.letter or "").lower(), check.let_frequency
    else:
        return None
    return None if _has_sigma(counted) else (counted, below)


def _has_sigma(text: str) -> bool:
    return any(c in text for c in "\u03a3\u03c3\u03c2")


def _range(check: Check) -> tuple[tuple[str, str], int, float] | None:
    """(the quantity, lowest count that passes, first count that fails) of a counting check, else None."""
    if check.id not in QUANTITIES:
        return None
    subject, count_name, relation_name = QUANTITIES[check.id]
    what = (check.id, str(getattr(check, subject)).strip().lower() if subject else "")  # as the verifiers count
    count = getattr(check, count_name)
    relation = getattr(check, relation_name) if relation_name else None
    if relation == "at least":
        return what, count, float("inf")
    if relation == "less than":
        return what, 0, count
    return what, count, count + 1


def _holds_whole_word(phrase: str, word: str) -> bool:
    """`word` is inside `phrase` with a non-word character of the phrase itself on each side, so every text
    holding the phrase holds the word as a whole word (at the phrase's edge, the text around it decides:
    "concatenate" holds "cat" but not the whole word)."""
    if not (phrase.isascii() and word.isascii()):
        return False  # case rules beyond ASCII can make the phrase and the word match differently
    return re.search(rf"(?<=\W){re.escape(word)}(?=\W)", phrase, re.IGNORECASE) is not None
