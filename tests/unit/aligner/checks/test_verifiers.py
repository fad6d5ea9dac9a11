"""Every IFEval instruction type passes and fails on hand-made texts."""

import pytest

from aligner.checks.verifiers import VERIFIERS, sentences, verify

# id -> (params, a text that passes, a text that fails)
CASES = {
    "keywords:existence": ({"keywords": ["tent", "Stove"]}, "Pack a tent and a stove.", "Pack a tent."),
    "keywords:frequency": (
        {"keyword": "rain", "frequency": 2, "relation": "at least"},
        "Rain, rain, go away.",
        "Rain stops.",
    ),
    "keywords:forbidden_words": ({"forbidden_words": ["very"]}, "It is everything.", "It is Very good."),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        "A lazy dog.",
        "Zig zag.",
    ),
    "language:response_language": (
        {"language": "fr"},
        "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
        "The cat sleeps on the sofa while the rain falls outside.",
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        "One. Two!",
        "One. Two? Three.",
    ),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First.\n***\nSecond.", "First.\n***\n***\nLast."),
    "length_constraints:number_words": (
        {"num_words": 5, "relation": "less than"},
        "Four words right here.",
        "These are five words, see.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        'First we boil.\n\n"Then, we eat.',
        "First we boil.\n\nAfter that we eat.",
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Dear [name], at [address].",
        "Dear [name].",
    ),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Bye.\nP.S. call me", "Bye. PS call me"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* one\n* two", "* one\n* two\n- three"),
    "detectable_format:constrained_response": ({}, "My answer is no.", "No, I think not."),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "*one* and **two**",
        "*one* and ** **",
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nIntro\nSection 2\nMore",
        "Section 1\nAll of it",
    ),
    "detectable_format:json_format": ({}, '```json\n{"a": 1}\n```', "{'a': 1}"),
    "detectable_format:title": ({}, "<<A Poem>>\nRoses.", "<< >>\nRoses."),
    "combination:two_responses": ({}, "Yes.\n******\nNo.", "Yes.\n******\nYes."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Name a colour."}, "name a colour. Blue.", "Blue."),
    "startend:end_checker": ({"end_phrase": "Any questions?"}, 'Done. Any questions?"', "Any questions? Done."),
    "startend:quotation": ({}, '"Quoted."', 'Not "quoted".'),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        "NASA and ESA fly.",
        "NASA flies.",
    ),
    "change_case:english_capital": ({}, "THE WEATHER IS LOVELY TODAY IN LONDON.", "The weather is lovely today."),
    "change_case:english_lowercase": ({}, "the weather is lovely today in london.", "The weather is lovely today."),
    "punctuation:no_comma": ({}, "No commas here.", "One, two."),
}


def test_every_instruction_type_has_cases():
    assert set(CASES) == set(VERIFIERS) and len(VERIFIERS) == 25


@pytest.mark.parametrize("check_id", sorted(CASES))
def test_a_text_that_follows_the_instruction_passes_and_one_that_does_not_fails(check_id):
    params, passing, failing = CASES[check_id]
    assert verify(check_id, passing, params) is True
    assert verify(check_id, failing, params) is False


def test_relations_are_ifevals_less_than_is_strict_and_at_least_is_not():
    words = "one two three"
    assert verify("length_constraints:number_words", words, {"num_words": 3, "relation": "at least"})
    assert not verify("length_constraints:number_words", words, {"num_words": 3, "relation": "less than"})


def test_keywords_are_literal_text_not_regular_expressions():
    assert not verify("keywords:existence", "abc", {"keywords": ["a.c"]})
    assert verify("keywords:existence", "a.c", {"keywords": ["a.c"]})
    # A pathological pattern is only text: no backtracking blow-up on a long input.
    assert not verify("keywords:existence", "a" * 50_000, {"keywords": ["(a+)+$b"]})


def test_text_langdetect_cannot_classify_fails_a_language_check():
    assert not verify("language:response_language", "12345 !!!", {"language": "en"})
    assert not verify("change_case:english_lowercase", "", {})


def test_sentences_split_after_closing_quotes_and_ignore_blank_text():
    assert sentences('He said "stop." Then he left!  ') == ['He said "stop."', "Then he left!"]
    assert sentences("   ") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith paid 3.5 dollars. He left.", ["Dr. Smith paid 3.5 dollars.", "He left."]),
        ("I moved to the U.S. last year. It is fine.", ["I moved to the U.S. last year.", "It is fine."]),
        ("She works at Acme Inc. He works at home.", ["She works at Acme Inc.", "He works at home."]),
        ("Acme Inc. makes tools.", ["Acme Inc. makes tools."]),
        ("Mail J. Smith at example.com today. Thanks", ["Mail J. Smith at example.com today.", "Thanks"]),
        ("Wait... What?! No.", ["Wait...", "What?!", "No."]),
        ("A Ph.D. helps. Sometimes.", ["A Ph.D. helps.", "Sometimes."]),
    ],
)
def test_sentences_follow_ifevals_rules_for_titles_decimals_acronyms_and_addresses(text, expected):
    assert sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "word", "forbidden"),
    [("I like C++.", "C++", True), ("(very)", "very", True), ("concatenate", "cat", False), ("C++x", "C++", False)],
)
def test_a_forbidden_word_is_found_whole_whatever_its_edge_characters(text, word, forbidden):
    assert verify("keywords:forbidden_words", text, {"forbidden_words": [word]}) is not forbidden


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        ("One answer. ****** Another answer.", True),
        ("****** One answer. ****** Another answer. ******", True),
        ("One. ****** ****** Two.", False),
        ("Same. ****** Same.", False),
        ("Only one. ******", False),
    ],
)
def test_two_responses_allows_an_empty_part_only_at_either_end(text, passes):
    assert verify("combination:two_responses", text, {}) is passes


def test_a_paragraphs_first_word_is_cut_at_ifevals_punctuation():
    params = {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "hello"}
    assert verify("length_constraints:nth_paragraph_first_word", '"Hello,world" said he.\n\nBye.', params)
    assert not verify("length_constraints:nth_paragraph_first_word", "Hello-world.\n\nBye.", params)


def test_capital_words_are_whole_words_in_capitals():
    params = {"capital_frequency": 3, "capital_relation": "at least"}
    assert not verify("change_case:capital_word_frequency", "U.S.A. is BIG.", params)  # two: U.S.A, BIG
    assert verify("change_case:capital_word_frequency", "U.S.A. is BIG, VERY.", params)


@pytest.mark.parametrize(
    ("check_id", "params", "text"),
    [
        ("detectable_content:number_placeholders", {"num_placeholders": 1}, "[" * 20_000),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, " " * 20_000 + "x"),
        ("length_constraints:number_sentences", {"num_sentences": 1, "relation": "at least"}, "a " * 20_000),
        ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "*" * 20_000),
    ],
)
def test_a_long_adversarial_candidate_is_verified_in_linear_time(check_id, params, text):
    """A candidate is as long as max_tokens allows; no verifier may backtrack quadratically over it
    (IFEval's own placeholder and postscript patterns took 3 s and 1 s of CPU on these)."""
    import time

    started = time.process_time()
    verify(check_id, text, params)
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize(
    ("check_id", "text"),
    [
        ("detectable_format:number_bullet_lists", "\n" * 16_000),
        ("detectable_format:title", "<" * 16_000),
        ("detectable_format:json_format", "1" + " " * 16_000 + "1"),
        ("detectable_format:json_format", "[" * 16_000),
    ],
)
def test_patterns_a_hostile_review_found_quadratic_or_crashing_are_linear_and_answer(check_id, text):
    import time

    params = {"num_bullets": 1} if check_id.endswith("bullet_lists") else {}
    started = time.process_time()
    assert verify(check_id, text, params) is False  # `[` * 16000 raised RecursionError (a 500) before
    assert time.process_time() - started < 0.5


def test_language_detection_started_by_many_threads_at_once_loads_its_profiles_once(monkeypatch):
    """langdetect loads its profiles into a global on first use; checks scored at once in worker
    threads at a server's start saw a half-loaded set (None, or "pl" for German)."""
    import threading

    import langdetect.detector_factory

    from aligner.checks.verifiers import detect_language

    monkeypatch.setattr(langdetect.detector_factory, "_factory", None)
    german = "Das ist ein ganz normaler deutscher Satz, und er ist lang genug, um erkannt zu werden."
    answers: list[str | None] = []
    threads = [threading.Thread(target=lambda: answers.append(detect_language(german))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["de"] * 8
