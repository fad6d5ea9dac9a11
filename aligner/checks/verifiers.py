"""Verifiers of checkable instructions, one per IFEval instruction id ("Instruction-Following Evaluation
for Large Language Models", Zhou et al. 2023), with IFEval's parameter names and, where IFEval defines
it, its rule: `VERIFIERS[id](text, **params) -> bool`.

Departures, for a server that runs user input: keywords are matched as literal text (IFEval reads
them as regular expressions, which lets a request run a pathological one); text that langdetect
cannot classify fails a language check (IFEval passes it); `nth_paragraph_first_word` counts the
paragraph among the non-empty ones (IFEval indexes empty ones too); capital words are the
white-space-separated words, edge punctuation removed, that are all capitals (IFEval uses NLTK's
tokenizer, which splits "DON'T" in two); a run of "!", "?" or "." ends one sentence, not one each.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from langdetect import DetectorFactory, detect
from langdetect.detector_factory import init_factory
from langdetect.lang_detect_exception import LangDetectException

RELATIONS = ("less than", "at least")  # IFEval's comparison relations
CONSTRAINED_ANSWERS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?]+")
_CLOSERS = "\"')]\u201d\u2019"
# IFEval's sentence rules: no end after these titles, inside a.b.c acronyms, single initials, decimals
# and web addresses; after a company suffix or an acronym only when a sentence starter follows.
_TITLES = frozenset({"Mr", "Mrs", "Ms", "Dr", "St"})
_SUFFIXES = frozenset({"Inc", "Ltd", "Jr", "Sr", "Co"})
_STARTER = re.compile(
    r"\s+(?:Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He|She|It|They|Their|Our|We|But|However|That|This|Wherever)\b"
)
_LETTERS_WITH_DOTS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_WEB_SUFFIX = re.compile(r"(?:com|net|org|io|gov|edu|me)\b")
_EDGE_PUNCTUATION = "\"'`([{<>}]).,;:!?*_~\u201c\u201d\u2018\u2019"
_PARAGRAPH_DIVIDER = re.compile(r"\s?\*\*\*\s?")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\]")  # IFEval's \[.*?\], counted alike, linear in the text
_BULLET = re.compile(r"^[ \t]*(?:\*[^\*\n]|-).*$", re.MULTILINE)  # one line each: linear
_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_BOLD = re.compile(r"\*\*[^\n\*]*\*\*")


def compare(count: int, relation: str, target: int) -> bool:
    """IFEval's relations: "less than" is count < target, "at least" is count >= target."""
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences by IFEval's rules: each ends at ".", "!" or "?" (closing quotes and brackets stay
    with it), except where `_ends_sentence` says the dot is not an end."""
    found, start = [], 0
    for mark in _SENTENCE_END.finditer(text):
        if not _ends_sentence(text, mark.start(), mark.group()):
            continue
        end = mark.end()
        while end < len(text) and text[end] in _CLOSERS:
            end += 1
        found.append(text[start:end].strip())
        start = end
    found.append(text[start:].strip())
    return [s for s in found if s]


def _ends_sentence(text: str, at: int, mark: str) -> bool:
    if mark != ".":
        return True  # "!", "?", an ellipsis
    before, after = text[max(0, at - 40) : at], text[at + 1 : at + 40]
    if before[-1:].isdigit() and after[:1].isdigit():
        return False  # 3.14
    if _WEB_SUFFIX.match(after):
        return False  # example.com
    token = before.split()[-1].lstrip(_EDGE_PUNCTUATION) if before.strip() else ""
    if token in _TITLES or token == "Ph.D" or (token == "Ph" and after.startswith("D.")):
        return False
    if token in _SUFFIXES or (_LETTERS_WITH_DOTS.fullmatch(token) and "." in token):
        return bool(_STARTER.match(after))  # "Acme Inc. He said" ends; "U.S. policy" does not
    if _LETTERS_WITH_DOTS.fullmatch(token):
        return False  # an initial: "J. Smith"
    return True


_LANGDETECT_LOADING = threading.Lock()


def detect_language(text: str) -> str | None:
    """langdetect's ISO 639-1 code of `text`, deterministic (seeded); None when it cannot tell."""
    DetectorFactory.seed = 0  # langdetect samples: seeded, one text gets one answer
    # langdetect loads its profiles on first use into a global without a lock: two requests' checks
    # scored at once in worker threads would see a half-loaded set and answer None or a wrong language
    with _LANGDETECT_LOADING:
        init_factory()
    try:
        return str(detect(text))
    except LangDetectException:
        return None


# -- keywords: literal text in any case, found in lower-cased text (no pattern to compile; lower(), not
# casefold(), as IFEval's IGNORECASE: "ss" is not in "Fuß") --


def keywords_existence(text: str, keywords: list[str]) -> bool:
    lowered = text.lower()
    return all(k.lower() in lowered for k in keywords)


def keywords_frequency(text: str, keyword: str, frequency: int, relation: str) -> bool:
    return compare(text.lower().count(keyword.lower()), relation, frequency)


def forbidden_words(text: str, forbidden_words: list[str]) -> bool:
    """No forbidden word as a whole word: not inside a longer word, whatever its own first and last
    characters ("C++" is found in "I like C++.", "cat" is not in "concatenate")."""
    return _whole_words(tuple(forbidden_words)).search(text) is None


@functools.lru_cache(maxsize=256)
def _whole_words(words: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for all the words, so the text is scanned once: tried only where no word character
    precedes (the starts of words), linear in the text."""
    return re.compile(rf"(?<!\w)(?:{'|'.join(re.escape(w) for w in words)})(?!\w)", re.IGNORECASE)


def letter_frequency(text: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return compare(text.lower().count(letter.lower()), let_relation, let_frequency)


# -- language and length ---------------------------------------------------------------------------


def response_language(text: str, language: str) -> bool:
    return detect_language(text) == language


def number_sentences(text: str, num_sentences: int, relation: str) -> bool:
    return compare(len(sentences(text)), relation, num_sentences)


def number_paragraphs(text: str, num_paragraphs: int) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider ***; none of them empty."""
    paragraphs = _PARAGRAPH_DIVIDER.split(text)
    count = len(paragraphs)
    for i, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if i in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def number_words(text: str, num_words: int, relation: str) -> bool:
    return compare(len(words(text)), relation, num_words)


def nth_paragraph_first_word(text: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by blank lines, the `nth_paragraph`-th (from 1)
    starting with `first_word` (case and surrounding punctuation ignored)."""
    paragraphs = [p for p in re.split(r"\n\n", text) if p.strip()]
    if len(paragraphs) != num_paragraphs or nth_paragraph > len(paragraphs):
        return False
    # IFEval's first word: quotes before it dropped, cut at the first . , ? ! ' or ".
    word = re.split(r"""[.,?!'"]""", paragraphs[nth_paragraph - 1].split()[0].lstrip("'\""), maxsplit=1)[0]
    return word.lower() == first_word.lower()


# -- detectable content and format -----------------------------------------------------------------


def number_placeholders(text: str, num_placeholders: int) -> bool:
    return len(_PLACEHOLDER.findall(text)) >= num_placeholders


def postscript(text: str, postscript_marker: str) -> bool:
    lowered = text.lower()
    if postscript_marker == "P.P.S":
        pattern = r"p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"p\.\s?s\..*$"
    else:  # IFEval's patterns less their leading \s*, which changes no answer and is quadratic in blanks
        pattern = re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, lowered, flags=re.MULTILINE))


def number_bullet_lists(text: str, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullets (lines starting with "* " or "-")."""
    return len(_BULLET.findall(text)) == num_bullets


def constrained_response(text: str) -> bool:
    return any(answer in text.strip() for answer in CONSTRAINED_ANSWERS)


def number_highlighted_sections(text: str, num_highlights: int) -> bool:
    count = sum(1 for h in _HIGHLIGHT.findall(text) if h.strip("*").strip())
    count += sum(1 for h in _BOLD.findall(text) if h.removeprefix("**").removesuffix("**").strip())
    return count >= num_highlights


def multiple_sections(text: str, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", text)
    return len(parts) - 1 >= num_sections


def json_format(text: str) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON")
    body = body.removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(body)
    except (ValueError, RecursionError):  # deep nesting is not an answer to pass, nor a server error
        return False
    return True


def title(text: str) -> bool:
    """IFEval's `<<[^\n]+>>` per line (from the first << to the last >>), its inside not blank once the
    brackets are stripped; found with str.find, linear in the text (the pattern backtracks on "<<a<<a…")."""
    for line in text.split("\n"):
        start, end = line.find("<<"), line.rfind(">>")
        if start >= 0 and end >= start + 2 and line[start : end + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


# -- combination, case, start and end, punctuation -------------------------------------------------


def two_responses(text: str) -> bool:
    """Two different responses separated by ******; an empty part only before the first or after the last."""
    parts = [p.strip() for p in text.split("******")]
    if any(not p for p in parts[1:-1]):
        return False
    valid = [p for p in parts if p]
    return len(valid) == 2 and valid[0] != valid[1]


def repeat_prompt(text: str, prompt_to_repeat: str) -> bool:
    return text.strip().lower().startswith(prompt_to_repeat.strip().lower())


def capital_word_frequency(text: str, capital_frequency: int, capital_relation: str) -> bool:
    capitals = [w for w in (t.strip(_EDGE_PUNCTUATION) for t in text.split()) if w.isupper()]
    return compare(len(capitals), capital_relation, capital_frequency)


def english_capital(text: str) -> bool:
    return text.isupper() and detect_language(text) == "en"


def english_lowercase(text: str) -> bool:
    return text.islower() and detect_language(text) == "en"


def end_checker(text: str, end_phrase: str) -> bool:
    return text.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(text: str) -> bool:
    stripped = text.strip()
    return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'


def no_comma(text: str) -> bool:
    return "," not in text


VERIFIERS: dict[str, Callable[..., bool]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:number_words": number_words,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
}


def verify(check_id: str, text: str, params: dict[str, Any]) -> bool:
    return VERIFIERS[check_id](text, **params)
