"""The `checks` field of a request: IFEval instruction ids with IFEval's parameter names, validated so
that every check names only its own parameters, each within bounds (errors name `checks[i].param`)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import langdetect
from pydantic import BaseModel, ConfigDict, Field

from aligner.checks.conflicts import QUANTITIES, refuse_conflicts
from aligner.checks.verifiers import RELATIONS, VERIFIERS, verify
from aligner.errors import InvalidRequest, shown

MAX_CHECKS = 16
MAX_COUNT = 100_000
MAX_PHRASE_CHARS = 200
MAX_WORDS = 32
MAX_CHECK_TEXT = 4000  # characters over every text parameter of a request's checks: what verifying costs
FIRST_WORD_CUTS = ".,?!'\""  # where IFEval's verifier cuts a paragraph's first word
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
# langdetect's languages (ISO 639-1, and zh-cn / zh-tw): the profiles shipped in the package.
LANGUAGES = tuple(sorted(p.name for p in (Path(langdetect.__file__).parent / "profiles").iterdir()))

# Each id's parameters: name -> kind (count: an integer 0..MAX_COUNT, positive: 1..MAX_COUNT, relation,
# phrase: non-empty text, words: a list of phrases, letter, language). All are required.
PARAMETERS: dict[str, dict[str, str]] = {
    "keywords:existence": {"keywords": "words"},
    "keywords:frequency": {"keyword": "phrase", "frequency": "count", "relation": "relation"},
    "keywords:forbidden_words": {"forbidden_words": "words"},
    "keywords:letter_frequency": {"letter": "letter", "let_frequency": "count", "let_relation": "relation"},
    "language:response_language": {"language": "language"},
    "length_constraints:number_sentences": {"num_sentences": "count", "relation": "relation"},
    "length_constraints:number_paragraphs": {"num_paragraphs": "positive"},
    "length_constraints:number_words": {"num_words": "count", "relation": "relation"},
    "length_constraints:nth_paragraph_first_word": {
        "num_paragraphs": "positive",
        "nth_paragraph": "positive",
        "first_word": "phrase",
    },
    "detectable_content:number_placeholders": {"num_placeholders": "count"},
    "detectable_content:postscript": {"postscript_marker": "phrase"},
    "detectable_format:number_bullet_lists": {"num_bullets": "count"},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": "count"},
    "detectable_format:multiple_sections": {"section_spliter": "phrase", "num_sections": "positive"},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": "phrase"},
    "startend:end_checker": {"end_phrase": "phrase"},
    "startend:quotation": {},
    "change_case:capital_word_frequency": {"capital_frequency": "count", "capital_relation": "relation"},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
}
assert set(PARAMETERS) == set(VERIFIERS)


class Check(BaseModel):
    """One checkable instruction: `id` (an IFEval instruction id) and that instruction's parameters."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(description="IFEval instruction id, e.g. `length_constraints:number_words`.")
    relation: str | None = Field(None, description='"less than" or "at least".')
    keywords: list[str] | None = Field(None, description="keywords:existence: phrases that must all appear.")
    keyword: str | None = Field(None, description="keywords:frequency: the phrase counted.")
    frequency: int | None = Field(None, description="keywords:frequency: the count compared.")
    forbidden_words: list[str] | None = Field(None, description="keywords:forbidden_words: words that must not appear.")
    letter: str | None = Field(None, description="keywords:letter_frequency: the letter counted.")
    let_frequency: int | None = Field(None, description="keywords:letter_frequency: the count compared.")
    let_relation: str | None = Field(None, description='keywords:letter_frequency: "less than" or "at least".')
    language: str | None = Field(None, description="language:response_language: ISO 639-1 code (langdetect's).")
    num_sentences: int | None = Field(None, description="length_constraints:number_sentences: the count compared.")
    num_paragraphs: int | None = Field(None, description="Paragraphs wanted (number_paragraphs: exactly).")
    num_words: int | None = Field(None, description="length_constraints:number_words: the count compared.")
    nth_paragraph: int | None = Field(None, description="nth_paragraph_first_word: the paragraph (from 1).")
    first_word: str | None = Field(None, description="nth_paragraph_first_word: its first word.")
    num_placeholders: int | None = Field(None, description="number_placeholders: at least this many [..].")
    postscript_marker: str | None = Field(None, description='detectable_content:postscript: e.g. "P.S.".')
    num_bullets: int | None = Field(None, description="number_bullet_lists: exactly this many bullets.")
    num_highlights: int | None = Field(None, description="number_highlighted_sections: at least this many *..*.")
    section_spliter: str | None = Field(None, description='multiple_sections: the heading word, e.g. "Section".')
    num_sections: int | None = Field(None, description="multiple_sections: at least this many sections.")
    prompt_to_repeat: str | None = Field(None, description="combination:repeat_prompt: the text to begin with.")
    end_phrase: str | None = Field(None, description="startend:end_checker: the phrase to end with.")
    capital_frequency: int | None = Field(None, description="capital_word_frequency: the count compared.")
    capital_relation: str | None = Field(None, description='capital_word_frequency: "less than" or "at least".')

    def params(self) -> dict[str, Any]:
        """The parameters this check's verifier takes (validated), text stripped of surrounding blanks."""
        return {name: _stripped(getattr(self, name)) for name in PARAMETERS[self.id]}

    def passes(self, text: str) -> bool:
        return verify(self.id, text, self.params())


def _stripped(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [v.strip() for v in value]
    return value


def validate_checks(checks: list[Check]) -> None:
    """Each check's id is known, and it has exactly its id's parameters, each within bounds; no check
    repeats another, can never pass, or contradicts another (errors name `checks[i]`)."""
    for i, check in enumerate(checks):
        _validate_check(f"checks[{i}]", check)
    text = sum(len(v) for c in checks for v in _texts(c))
    if text > MAX_CHECK_TEXT:
        raise InvalidRequest("checks", f"its text parameters hold {text} characters; at most {MAX_CHECK_TEXT}")
    refuse_conflicts(checks)


def _validate_check(where: str, check: Check) -> None:
    wanted = PARAMETERS.get(check.id)
    if wanted is None:
        raise InvalidRequest(f"{where}.id", f"unknown check {shown(check.id)}; the checks are: {', '.join(PARAMETERS)}")
    given = {name for name in Check.model_fields if name != "id" and getattr(check, name) is not None}
    for name in sorted(given - set(wanted)):
        allowed = ", ".join(wanted) or "none"
        raise InvalidRequest(f"{where}.{name}", f"is not a parameter of {check.id} (its parameters: {allowed})")
    for name, kind in wanted.items():
        _check_value(f"{where}.{name}", getattr(check, name), kind)
    if check.id == "length_constraints:nth_paragraph_first_word":
        assert check.nth_paragraph is not None and check.num_paragraphs is not None and check.first_word
        if check.nth_paragraph > check.num_paragraphs:
            raise InvalidRequest(
                f"{where}.nth_paragraph", f"is {check.nth_paragraph}, beyond num_paragraphs {check.num_paragraphs}"
            )
        if len(check.first_word.split()) != 1 or any(c in FIRST_WORD_CUTS for c in check.first_word):
            raise InvalidRequest(
                f"{where}.first_word",
                "must be one word without . , ? ! ' or \" (a paragraph's first word is cut there)",
            )
    if check.id == "startend:end_checker" and (check.end_phrase or "").strip().endswith('"'):
        raise InvalidRequest(f"{where}.end_phrase", "must not end with \" (the response's closing quotes are not read)")
    if check.id in QUANTITIES:
        _, count, relation = QUANTITIES[check.id]
        if relation is not None and getattr(check, relation) == "less than" and getattr(check, count) == 0:
            raise InvalidRequest(f"{where}.{count}", "is 0 with 'less than': no response can pass it")


def _check_value(field: str, value: Any, kind: str) -> None:
    if value is None:
        raise InvalidRequest(field, "is required for this check")
    if kind in ("count", "positive"):
        low = 1 if kind == "positive" else 0
        if not low <= value <= MAX_COUNT:
            raise InvalidRequest(field, f"is {value}; it must be between {low} and {MAX_COUNT}")
    elif kind == "relation":
        if value not in RELATIONS:
            raise InvalidRequest(field, f"is {value!r}; it must be one of {', '.join(repr(r) for r in RELATIONS)}")
    elif kind == "language":
        if value not in LANGUAGES:
            raise InvalidRequest(field, f"is {value!r}; it must be one of {', '.join(LANGUAGES)}")
    elif kind == "letter":
        if len(value) != 1 or not value.isalpha():
            raise InvalidRequest(field, f"is {value!r}; it must be one letter")
    elif kind == "words":
        if not value or len(value) > MAX_WORDS:
            raise InvalidRequest(field, f"has {len(value)} items; it must have 1 to {MAX_WORDS}")
        for j, phrase in enumerate(value):
            _check_phrase(f"{field}[{j}]", phrase)
    else:
        _check_phrase(field, value)


def _texts(check: Check) -> list[str]:
    values = [getattr(check, name) for name, kind in PARAMETERS[check.id].items() if kind in ("phrase", "words")]
    return [t for v in values for t in (v if isinstance(v, list) else [v])]


def _check_phrase(field: str, phrase: str) -> None:
    """Non-blank: some character that shows (zero-width and control characters alone do not)."""
    if len(phrase) > MAX_PHRASE_CHARS or not any(_shows(c) for c in phrase):
        raise InvalidRequest(field, f"must be non-blank text of at most {MAX_PHRASE_CHARS} characters")


def _shows(char: str) -> bool:
    """A character that is seen on its own: not a blank, a control or format character, a mark without a
    base, a private-use one, a variation selector, or a filler that renders empty (Hangul
    fillers, the braille blank, Khmer's inherent vowels)."""
    if char.isspace() or char in INVISIBLE or "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef":
        return False
    # Not "Cn": a character newer than this Python's Unicode tables (a recent emoji) is not known to be blank.
    return unicodedata.category(char) not in ("Cc", "Cf", "Co", "Cs", "Mn", "Me", "Zs", "Zl", "Zp")
