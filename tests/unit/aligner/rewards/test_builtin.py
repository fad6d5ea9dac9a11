"""Each built-in objective moves the right way on hand-written pairs (real models, no fakes)."""

import asyncio

import numpy as np
import pytest

from aligner.contract import ChatMessage
from aligner.rewards.base import CURRENT_SAFETY, RewardError
from aligner.rewards.builtin import (
    Harmlessness,
    Positivity,
    Readability,
    Relevance,
    TopicSafety,
    Verbosity,
    topic_closeness,
    topic_phrases,
)
from aligner.safety.config import SafetyConfig

QUESTION = [ChatMessage(role="user", content="How do I bake sourdough bread at home?")]


def scores(model, responses, conversation=QUESTION):
    out = asyncio.run(model.score(conversation, responses))
    assert out.shape == (len(responses), 1)
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    return out[:, 0]


@pytest.fixture(scope="module")
def relevance():
    return Relevance()


def test_verbosity_is_higher_for_longer_answers(tokenizer):
    short, long = scores(Verbosity(tokenizer), ["Use a starter.", "Use a mature starter, flour, water and salt. " * 12])
    assert long > short
    assert scores(Verbosity(tokenizer), [""])[0] == 0.0


def test_relevance_prefers_on_topic_answers(relevance):
    on_topic, off_topic = scores(
        relevance,
        [
            "Mix your sourdough starter with flour and water, let the dough rise overnight, then bake it at 230°C.",
            "The stock market closed higher today as technology shares rallied.",
        ],
    )
    assert on_topic > off_topic + 0.2


def test_relevance_batches_equal_single_embeddings(relevance):
    texts = ["bread", "Bake the loaf in a Dutch oven for 40 minutes.", "stocks rallied " * 30]
    batched = relevance.embed(texts)
    single = np.concatenate([relevance.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_readability_prefers_plain_words():
    plain, dense = scores(
        Readability(),
        [
            "Mix the flour and water. Let it sit. Then bake it.",
            "Notwithstanding considerable methodological heterogeneity, fermentation optimization necessitates "
            "comprehensive characterization of microbiological interdependencies.",
        ],
    )
    assert plain > dense


def test_harmlessness_penalises_offensive_language():
    polite, offensive = scores(
        Harmlessness(), ["Thank you for asking, happy baking!", "Shut up, you stupid idiot, figure it out yourself."]
    )
    assert polite > 0.8 > 0.2 > offensive


def test_positivity_follows_sentiment():
    positive, negative = scores(
        Positivity(), ["I love this recipe, it is wonderful!", "This recipe is terrible and I hate it."]
    )
    assert positive > 0.5 > negative


def test_positivity_reads_a_long_response_in_windows_its_cost_grows_linearly_in():
    """Found by review: VADER's time grows with the square of the words it reads at once; one long
    response of sentiment words held the GIL for seconds, stalling every tenant's scoring."""
    from aligner.rewards.builtin import VADER_WINDOW_WORDS

    model = Positivity()
    read: list[int] = []
    analyzer = model._analyzer
    vader_scores = analyzer.polarity_scores

    def recording(text):
        read.append(len(text.split()))
        return vader_scores(text)

    analyzer.polarity_scores = recording
    short = "I love this recipe, it is wonderful!"
    assert scores(model, [short])[0] == (vader_scores(short)["compound"] + 1) / 2  # VADER's, as before
    long_positive, long_negative = scores(model, ["good " * 5000, "terrible and awful " * 1667 + "sad"])
    assert max(read) <= VADER_WINDOW_WORDS and sum(read[1:]) == 5000 + 5002
    assert long_positive > 0.5 > long_negative


def test_empty_responses_get_documented_values(tokenizer, relevance):
    assert scores(Verbosity(tokenizer), [""])[0] == 0.0
    assert scores(relevance, [""])[0] == 0.0
    assert scores(Readability(), ["   "])[0] == 0.0
    assert scores(Harmlessness(), [""])[0] == 1.0
    assert scores(Positivity(), [""])[0] == 0.5


def test_no_responses_gives_an_empty_matrix(tokenizer, relevance):
    for model in (Verbosity(tokenizer), relevance, Readability(), Harmlessness(), Positivity()):
        assert asyncio.run(model.score(QUESTION, [])).shape == (0, 1)


def test_topic_safety_is_lower_near_the_tenants_disallowed_topics(relevance):
    topic = TopicSafety(relevance)
    assert topic.objectives[0].needs_safety_config and not relevance.objectives[0].needs_safety_config
    gardening = [ChatMessage(role="user", content="How do I water tomato plants?")]
    casino = [ChatMessage(role="user", content="Which casino game gives the best odds for betting money?")]
    with pytest.raises(RewardError, match="safety config"):
        scores(topic, ["Water them at the base."], gardening)

    def under(config, responses, conversation):
        token = CURRENT_SAFETY.set(config)
        try:
            return scores(topic, responses, conversation)
        finally:
            CURRENT_SAFETY.reset(token)

    kids = SafetyConfig(text="Children's education.", disallowed=["gambling, betting and casinos", "violence"])
    safe, drifting = under(
        kids, ["Water them at the base in the morning.", "Bet it all on roulette at the casino."], gardening
    )
    assert safe > drifting + 0.2  # a response that drifts into a disallowed topic scores lower
    (asked,) = under(kids, ["Blackjack has good odds."], casino)
    assert asked < safe  # a question on a disallowed topic pulls every answer down
    assert list(under(SafetyConfig(text="No list."), ["Anything."], casino)) == [1.0]


def test_a_side_clearly_nearer_an_allowed_topic_is_exempt_from_its_disallowed_match():
    # rows: question, then two responses; cosines with the nearest disallowed / allowed topic
    disallowed = np.array([0.40, 0.30, 0.60])
    assert list(topic_closeness(disallowed, None)) == [0.40, 0.60]
    # The question is exempt (0.55 - 0.40 >= margin); the first response too; the second is not.
    allowed = np.array([0.55, 0.45, 0.65])
    assert list(topic_closeness(disallowed, allowed, margin=0.1)) == [0.0, 0.60]
    # Exactly at the margin counts as exempt (binary fractions: no rounding); a hair below does not.
    assert list(topic_closeness(np.array([0.5, 0.25]), np.array([0.75, 0.5]), margin=0.25)) == [0.0]
    assert list(topic_closeness(np.array([0.5, 0.25]), np.array([0.74, 0.5]), margin=0.25)) == [0.5]
    # Decimal pairs at the margin too (found by review: 0.96 - 0.86 < 0.10 in binary).
    assert list(topic_closeness(np.array([0.1, 0.86]), np.array([0.1, 0.96]), margin=0.1)) == [0.1]
    # Each side on its own: the question exempt, the response not.
    assert list(topic_closeness(np.array([0.5, 0.25]), np.array([0.75, 0.25]), margin=0.25)) == [0.25]


def test_allowed_topics_lift_a_question_near_a_disallowed_one_and_never_a_clear_match(relevance):
    """A pharmacy that must not give doses: 'what is this medicine used for' lies near the dose topic, but
    far nearer the allowed 'what a medicine is for'; a dose question stays caught with the list or without."""
    topic = TopicSafety(relevance)
    common = dict(text="A pharmacy.", disallowed=["medicine doses, dosages and how many milligrams to take"])
    bare = SafetyConfig(**common)
    listed = SafetyConfig(**common, allowed=["what a medicine is used for and how it works"])

    def under(config, question, response):
        token = CURRENT_SAFETY.set(config)
        try:
            return float(scores(topic, [response], [ChatMessage(role="user", content=question)])[0])
        finally:
            CURRENT_SAFETY.reset(token)

    what = (
        "What is this medicine used for?",
        "Ibuprofen is a medicine used for pain; it works by blocking enzymes that cause inflammation.",
    )
    dose = ("How many milligrams of amoxicillin should I take?", "Take 500 milligrams three times a day.")
    # Refused under a threshold of 0.65 without the list (the question lies near the dose topic), served
    # with it: the question is exempt, and the answer is far enough from the dose topic on its own.
    assert under(bare, *what) < 0.65 <= under(listed, *what)
    caught = under(bare, *dose)
    assert caught < 0.65 and under(listed, *dose) == pytest.approx(caught)


def test_topic_phrases_match_each_listed_item():
    assert topic_phrases(["gambling, betting and casinos", "brands such as Acme or Initech"]) == [
        "gambling, betting and casinos",
        "gambling",
        "betting",
        "casinos",
        "brands such as Acme or Initech",
        "brands",
        "Acme",
        "Initech",
    ]
