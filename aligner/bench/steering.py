"""`aligner bench steering`: what each way of steering buys, side by side on one engine, in one run.

- check satisfaction: prompts that state 1–3 instructions (IFEval-style), each also given as a check;
  the share of responses passing all of them for
  `sample`, `best_of_n` n=8 ranked by the checks, and adaptive best-of-N (n=8, rounds of 2), with the
  candidate tokens each generated;
- preference following: prompts with a preference in words and the check that verifies it; the mean
  `preference_following` score and the check's pass rate with the words in the prompt only (one
  candidate, scored, nothing chosen) and with the search ranking by the judge (best_of_n n=6);
- strategies at one candidate-token budget: `best_of_n`, `beam` and `particle_filter`, each spending
  up to 4 × max_tokens, next to `sample`: mean combined score and its gain per 1k extra tokens.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from aligner.bench.common import DIRECTION, target
from aligner.bench.runner import on_one_engine
from aligner.checks import Check
from aligner.contract import PREFERENCE_OBJECTIVE, AlignRequest

WORDS = "length_constraints:number_words"
SENTENCES = "length_constraints:number_sentences"
NO_COMMA = {"id": "punctuation:no_comma"}


def fewer_words(n: int) -> dict[str, Any]:
    return {"id": WORDS, "relation": "less than", "num_words": n}


def keyword(word: str) -> dict[str, Any]:
    return {"id": "keywords:existence", "keywords": [word]}


def forbidden(*words: str) -> dict[str, Any]:
    return {"id": "keywords:forbidden_words", "forbidden_words": list(words)}


ONE_SENTENCE = {"id": SENTENCES, "relation": "less than", "num_sentences": 2}
TWO_SENTENCES = {"id": SENTENCES, "relation": "less than", "num_sentences": 3}

# (prompt, its checks): the instructions stated in the prompt, IFEval-style, and given as checks too; each
# answerable by a small model, none passed by every answer.
CHECK_PROMPTS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    ("Describe the ocean in fewer than 40 words, without any commas.", [NO_COMMA, fewer_words(40)]),
    ("What is a cat? Use the word 'cat' and answer in one or two sentences.", [keyword("cat"), TWO_SENTENCES]),
    ("Give me a tip for sleeping better in under 50 words. Never say 'very'.", [forbidden("very"), fewer_words(50)]),
    ("Name a fruit that is red. Answer in fewer than 15 words.", [fewer_words(15)]),
    ("Explain rain to a child. Mention water and do not use commas.", [NO_COMMA, keyword("water")]),
    ("What do bees make? Answer in one sentence that says 'honey'.", [keyword("honey"), ONE_SENTENCE]),
    ("Write one sentence about the sun without the word 'very'.", [ONE_SENTENCE, forbidden("very")]),
    (
        "How do birds fly? Write at least 20 words and no commas.",
        [{"id": WORDS, "relation": "at least", "num_words": 20}, NO_COMMA],
    ),
    ("Tell me about trees in under 40 words. Mention their leaves.", [keyword("leaves"), fewer_words(40)]),
    ("What is music? Answer in fewer than 30 words.", [fewer_words(30)]),
    (
        "Why is the sky blue? Mention light, use no commas, stay under 40 words.",
        [keyword("light"), NO_COMMA, fewer_words(40)],
    ),
    ("Suggest a name for a dog in fewer than 20 words, without commas.", [fewer_words(20), NO_COMMA]),
)
# (prompt, a preference in words, the check that verifies it)
PREFERENCE_PROMPTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("What is the moon?", "Answer in one short sentence.", ONE_SENTENCE),
    ("How do I boil an egg?", "Answer in fewer than 15 words.", fewer_words(15)),
    ("Describe a forest.", "Do not use any commas.", NO_COMMA),
    ("What is a volcano?", "Mention the word 'lava'.", keyword("lava")),
    ("Tell me about winter.", "Never use the word 'cold'.", forbidden("cold")),
    ("What is a river?", "Keep it under 20 words.", fewer_words(20)),
)
CHECK_MODES: dict[str, dict[str, Any]] = {
    "sample": {"strategy": "sample"},
    "best_of_n8": {"strategy": "best_of_n", "n": 8},
    "adaptive_best_of_n8": {"strategy": "best_of_n", "n": 8, "adaptive": True, "batch": 2},
}
BUDGET_STRATEGIES: dict[str, dict[str, Any]] = {
    "sample": {"strategy": "sample"},
    "best_of_n": {"strategy": "best_of_n", "n": 4},
    "beam": {"strategy": "beam", "beam_width": 2, "expansions": 2, "chunk_tokens": 16},
    "particle_filter": {"strategy": "particle_filter", "particles": 4, "chunk_tokens": 16},
}
TARGETS = {
    "best_of_n8_over_sample_pass_rate_points": {"min": 25.0},
    "adaptive_below_best_of_n8_pass_rate_points": {"max": 2.0},
    "adaptive_over_best_of_n8_candidate_tokens": {"max": 0.6},
}


def request(prompt: str, seed: int, max_tokens: int, search: dict[str, Any], **fields) -> AlignRequest:
    return AlignRequest.parse(
        {"prompt": prompt, "seed": seed, "temperature": 1.0, "max_tokens": max_tokens, "search": search, **fields}
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: round(statistics.fmean(r[key] for r in rows if r[key] is not None), 4)
        if any(r[key] is not None for r in rows)
        else None
        for key in rows[0]
    }


async def check_satisfaction(aligner, max_tokens: int, progress) -> dict[str, Any]:
    modes = {}
    for mode, search in CHECK_MODES.items():
        rows = []
        for seed, (prompt, checks) in enumerate(CHECK_PROMPTS):
            response = await aligner.generate(request(prompt, seed, max_tokens, search, checks=checks))
            rows.append(
                {
                    "pass_all": 100.0 * all(response.checks or []),
                    "candidate_tokens": response.usage.candidate_tokens,
                    "rounds": response.usage.rounds,
                }
            )
        modes[mode] = summary(rows)
        progress(f"checks, {mode}: {modes[mode]}")
    return modes


async def preference_following(aligner, max_tokens: int, progress) -> dict[str, Any]:
    modes = {}
    for mode, n in (("words_in_prompt_only", 1), ("words_scored_by_the_search", 6)):
        rows = []
        for seed, (prompt, words, check) in enumerate(PREFERENCE_PROMPTS):
            search = {"strategy": "best_of_n", "n": n}
            response = await aligner.generate(request(prompt, seed, max_tokens, search, preferences=words))
            rows.append(
                {
                    "preference_following": (response.scores or {}).get(PREFERENCE_OBJECTIVE),
                    "check_pass": 100.0 * Check.model_validate(check).passes(response.text),
                    "candidate_tokens": response.usage.candidate_tokens,
                }
            )
        modes[mode] = summary(rows)
        progress(f"preferences, {mode}: {modes[mode]}")
    return modes


async def at_one_budget(aligner, prompts: Sequence[str], max_tokens: int, progress) -> dict[str, Any]:
    budget = {"max_candidate_tokens": 4 * max_tokens}
    results = {}
    for name, search in BUDGET_STRATEGIES.items():
        rows = []
        for seed, prompt in enumerate(prompts):
            response = await aligner.generate(
                request(prompt, seed, max_tokens, search, preference_vector=DIRECTION, budget=budget)
            )
            rows.append(
                {"combined_score": response.combined_score, "candidate_tokens": response.usage.candidate_tokens}
            )
        results[name] = summary(rows)
        progress(f"budget, {name}: {results[name]}")
    base = results["sample"]
    for row in results.values():
        extra = row["candidate_tokens"] - base["candidate_tokens"]
        row["gain_per_1k_extra_tokens"] = (
            round((row["combined_score"] - base["combined_score"]) / (extra / 1000), 4) if extra > 0 else None
        )
    return {"budget": budget, "strategies": results}


def targets(checks: dict[str, Any]) -> dict[str, Any]:
    sample, fixed, adaptive = checks["sample"], checks["best_of_n8"], checks["adaptive_best_of_n8"]
    measured = {
        "best_of_n8_over_sample_pass_rate_points": round(fixed["pass_all"] - sample["pass_all"], 2),
        "adaptive_below_best_of_n8_pass_rate_points": round(fixed["pass_all"] - adaptive["pass_all"], 2),
        "adaptive_over_best_of_n8_candidate_tokens": round(adaptive["candidate_tokens"] / fixed["candidate_tokens"], 3)
        if fixed["candidate_tokens"]
        else None,
    }
    return {name: target(measured[name], spec) for name, spec in TARGETS.items()}


def run(max_tokens: int = 64, engine_config=None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    async def work(aligner):
        await aligner.generate(request("Hi.", 0, 8, {"strategy": "sample"}))  # warm-up
        checks = await check_satisfaction(aligner, max_tokens, progress)
        words = await preference_following(aligner, max_tokens, progress)
        budget = await at_one_budget(aligner, [p for p, _ in CHECK_PROMPTS[:6]], max_tokens, progress)
        return {"check_satisfaction": checks, "preference_following": words, "at_one_budget": budget}

    model, report = on_one_engine(engine_config, work, progress, judge=True)
    return {
        "benchmark": "steering",
        "model": model,
        "machine": platform.processor() or platform.machine(),
        "max_tokens": max_tokens,
        "prompts": {
            "checks": [{"prompt": p, "checks": c} for p, c in CHECK_PROMPTS],
            "preferences": [{"prompt": p, "preferences": w, "check": c} for p, w, c in PREFERENCE_PROMPTS],
        },
        "notes": "pass_all and check_pass in percent; candidate_tokens: mean per request; words_in_prompt_only is "
        "best_of_n n=1: one candidate, scored by the judge, nothing chosen.",
        **report,
        "targets": targets(report["check_satisfaction"]),
    }
