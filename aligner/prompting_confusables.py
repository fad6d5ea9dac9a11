"""A reader's view of a text, for the checks that compare user text with the server's own.

`skeleton(text)` folds what a reader cannot tell apart into one spelling, in the manner of Unicode's
confusable skeleton (UTS #39): compatibility forms (NFKC: full-width and mathematical letters),
invisible characters, combining marks, letters of other scripts that look like Latin ones, and case.
Two texts a reader takes for the same have the same skeleton.

The look-alike table below is PARTIAL: no package in this environment provides UTS #39's
`confusables.txt` mapping, so it covers the scripts an imitation of English text is written with
(Cyrillic, Greek, Armenian, Cherokee, Lisu, the Latin letters that look like others, the digits that look
like letters), not every confusable pair Unicode lists. The checks that use it are a second line:
the operator's section is delimited by a secret marker (aligner/prompting_guard.py), which no
folding has to catch.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

# Before case folding, so that the letters whose upper and lower cases look like different Latin
# letters map apart (Cyrillic Н looks like H, н like a small-capital h; Greek Η like H, η like n).
_LOOK_ALIKES: dict[str, str | None] = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "Ѕ": "S", "І": "l", "Ј": "J", "К": "K", "М": "M", "Н": "H", "О": "O",
    "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ү": "Y", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "l", "Ԁ": "d",
    "а": "a", "в": "b", "г": "r", "е": "e", "ѕ": "s", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ү": "y", "һ": "h", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "ɡ": "g",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "l", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i",
    "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
    # Armenian
    "Օ": "O", "Ս": "U", "Տ": "S", "Լ": "L", "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "ա": "w",
    "զ": "q", "ի": "h",
    # Cherokee (capitals that are Latin capitals' twins)
    "Ꭺ": "A", "Ᏼ": "B", "Ꮯ": "C", "Ꭰ": "D", "Ꭼ": "E", "Ꮐ": "G", "Ꮋ": "H", "Ꭻ": "J", "Ꮶ": "K", "Ꮮ": "L",
    "Ꮇ": "M", "Ꮎ": "O", "Ꮲ": "P", "Ꭱ": "R", "Ꮪ": "S", "Ꭲ": "T", "Ꮩ": "V", "Ꮃ": "W", "Ꮓ": "Z",
    # Lisu (Fraser's alphabet: its letters are Latin capitals, some turned; the upright ones)
    "ꓮ": "A", "ꓐ": "B", "ꓚ": "C", "ꓓ": "D", "ꓰ": "E", "ꓝ": "F", "ꓖ": "G", "ꓧ": "H", "ꓲ": "l", "ꓙ": "J",
    "ꓗ": "K", "ꓡ": "L", "ꓟ": "M", "ꓠ": "N", "ꓳ": "O", "ꓑ": "P", "ꓣ": "R", "ꓢ": "S", "ꓔ": "T", "ꓴ": "U",
    "ꓦ": "V", "ꓪ": "W", "ꓫ": "X", "ꓬ": "Y", "ꓜ": "Z",
    # Latin letters and digits that pass for others
    "I": "l", "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ɴ": "n", "ʀ": "r", "ꜱ": "s",
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m",
    "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    "0": "o", "1": "l", "|": "l", "ǀ": "l",
}  # fmt: skip
# After case folding: "i" for "l" (an upper-case I is an l, and a lower-case i must not differ from
# it), and letters that read as two (as UTS #39 does: the skeleton of "m" is "rn"). Each is a
# replacement of one character, never of a sequence: folded so, a text that holds the marker (or a
# phrase) still holds it folded, whatever letters stand beside it ("c" + "d..." is not read as "d").
_SEQUENCES = (("i", "l"), ("m", "rn"), ("w", "vv"), ("d", "cl"))


@functools.cache
def _table() -> dict[int, str | None]:
    """The look-alikes, and every invisible character and mark to delete: format characters (zero-width,
    bidi controls, the BOM), combining marks, variation selectors. Built once (a pass over Unicode)."""
    table: dict[int, str | None] = {
        c: None
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cf", "Mn", "Me") or 0xFE00 <= c <= 0xFE0F or 0xE0100 <= c <= 0xE01EF
    }
    table.update(str.maketrans(_LOOK_ALIKES))
    return table


def skeleton(text: str) -> str:
    """`text` as a reader sees it, one spelling for every look-alike: compatibility forms, invisible
    characters and marks dropped, look-alikes of other scripts as Latin, case folded; whitespace and
    punctuation kept (compare with `letters` to ignore them too)."""
    table = _table()
    text = unicodedata.normalize("NFKD", text).translate(table)
    # folded again: case folding maps small Cherokee letters to capitals, which the table makes capital
    # Latin (U+ABA6 -> U+13D5 -> "S"), while every reserved phrase is compared folded
    text = unicodedata.normalize("NFKC", text).casefold().translate(table).casefold()
    for sequence, letter in _SEQUENCES:
        text = text.replace(sequence, letter)
    return text


def letters(text: str) -> str:
    """The skeleton's letters and digits only: what is left when spacing and punctuation may differ."""
    return "".join(c for c in skeleton(text) if c.isalnum())
