"""The cost check a request passes once its prompt is composed, before any engine work.

The contract already refused a search whose own worst case exceeds a cap (`SearchParams.cost`, at
parse). Two parts of the cost are known only here, where the catalog, the composed prompt and the
tenant's safety config are:

- Judges on the policy model (`YesNoJudge`: helpfulness, policy_compliance without a guard model)
  prefill one prompt per reward call and judged objective: the judge's template, the question and
  the whole response (a longer one than half the model's context is undecided, not judged), within
  the model's context. The composed prompt
  holds the question (and the tenant's policy text), so it bounds their part.
- A tenant's `resample` action may add up to `max_resamples` candidates after the search. They are
  priced here, beside the search's worst case: the request is admitted with as many resamples as
  fit under every cap (`Admission.resamples`), so the server's limits hold for the search and its
  resamples together, and the meter never lets the action draw more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aligner.contract import AlignRequest, SearchLimits
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.judge import YesNoJudge
from aligner.safety.config import SafetyConfig, resamples_allowed
from aligner.search.params.cost import SearchCost, check_cost, over_cap

# Tokens of a judge's own prompt around the question and the response (system message, the question's
# wording, chat markup), with a margin: the built-in judges' are under 100 with the embedded model.
JUDGE_TEMPLATE_TOKENS = 128


@dataclass(frozen=True)
class Admission:
    """What an admitted request may cost at most, and the resamples its tenant's config may add."""

    cost: SearchCost
    resamples: int


def judged_objectives(catalog: ObjectiveCatalog, names: list[str]) -> list[YesNoJudge]:
    """The judges on the policy model among the models that score `names`, one entry per judged objective."""
    return [
        model
        for model in catalog.models
        if isinstance(model, YesNoJudge)
        for objective in model.objectives
        if objective.name in names
    ]


def judge_prefill_per_call(judge: YesNoJudge, prompt_tokens: int, max_tokens: int) -> int:
    """The most prompt tokens `judge` prefills to score one response of a request with this prompt."""
    engine = judge.engine
    if engine is None:
        return JUDGE_TEMPLATE_TOKENS + prompt_tokens + max_tokens
    # A judge's prompt fits the context or is not sent (`bounded_prompt_ids`).
    cap = engine.max_model_len - 1
    return min(JUDGE_TEMPLATE_TOKENS + prompt_tokens + min(max_tokens, cap // 2), cap)


def resample_cost(count: int, max_tokens: int, prefill_per_call: int) -> SearchCost:
    """One engine request of `count` full-length candidates, scored in one round."""
    return SearchCost(
        engine_requests=1 if count else 0,
        candidates=count,
        candidate_tokens=count * max_tokens,
        scoring_rounds=1 if count else 0,
        reward_calls=count,
        judge_prefill_tokens=count * prefill_per_call,
    )


def admit(
    request: AlignRequest,
    catalog: ObjectiveCatalog,
    safety: SafetyConfig | None,
    *,
    prompt_tokens: int,
    limits: SearchLimits,
) -> Admission:
    """The request's full worst case against `limits` (InvalidRequest naming `search` and the limit when
    its search exceeds one), and the resamples that fit beside it.

    `request` is the one the search runs (the config's thresholds merged in); `prompt_tokens`: its
    composed prompt's length."""
    names = request.scored_objectives()
    prefill = sum(
        judge_prefill_per_call(j, prompt_tokens, request.max_tokens) for j in judged_objectives(catalog, names)
    )
    search = request.search.cost(request.shape()).within(request.budget)
    cost = replace(search, judge_prefill_tokens=search.reward_calls * prefill)
    check_cost(request.search.strategy, cost, limits)
    resamples = 0
    wanted = resamples_allowed(safety)
    if wanted:
        resamples = fitting_resamples(cost, wanted, request.max_tokens, prefill, limits)
        cost = cost.plus(resample_cost(resamples, request.max_tokens, prefill))
    return Admission(cost=cost, resamples=resamples)


def fitting_resamples(cost: SearchCost, wanted: int, max_tokens: int, prefill: int, limits: SearchLimits) -> int:
    """The most resamples, at most `wanted`, that keep `cost` plus theirs within every cap."""
    fits = 0
    low, high = 1, wanted
    while low <= high:  # the resamples' cost grows with their count: the largest that fits, by bisection
        middle = (low + high) // 2
        if over_cap(cost.plus(resample_cost(middle, max_tokens, prefill)), limits) is None:
            fits, low = middle, middle + 1
        else:
            high = middle - 1
    return fits
