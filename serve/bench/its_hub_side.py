"""The its_hub side of `aligner bench peers`: the shared relevance reward (what both sides' answers are
scored by, and its_hub's outcome and process reward models), and its_hub's best-of-N and particle
filtering driving an OpenAI-compatible server. its_hub is optional (the test extra): imported where used."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from aligner.contract import ChatMessage
from aligner.rewards.builtin import Relevance


class RelevanceJudge:
    """The built-in relevance objective, in this process: what both sides' chosen answers are scored by,
    and its_hub's outcome reward model."""

    def __init__(self):
        self.model = Relevance()
        self.model.load()

    def score(self, question: str, answers: Sequence[str]) -> list[float]:
        if not answers:
            return []
        rows = self.model.score_now([ChatMessage(role="user", content=question)], list(answers))
        return [float(v) for v in rows[:, 0]]


def its_hub_reward_model(judge: RelevanceJudge):
    """its_hub's outcome reward model interface over `judge`: each conversation's last user message and
    last assistant message."""
    # Here, not at the top: its_hub is optional (the test extra); only this bench uses it.
    from its_hub import AbstractOutcomeRewardModel

    def text(message: Any, role: str) -> str | None:
        message_role = message.role if hasattr(message, "role") else message.get("role")
        content = message.content if hasattr(message, "content") else message.get("content")
        return (content or "") if message_role == role else None

    class RelevanceORM(AbstractOutcomeRewardModel):
        def score(self, messages, **kwargs):
            conversations = messages if messages and isinstance(messages[0], list) else [messages]
            scores = []
            for conversation in conversations:
                question = next(t for m in reversed(conversation) if (t := text(m, "user")) is not None)
                answer = next(t for m in reversed(conversation) if (t := text(m, "assistant")) is not None)
                scores += judge.score(question, [answer])
            return scores if messages and isinstance(messages[0], list) else scores[0]

        async def ascore(self, messages, orchestrator=None, **kwargs):
            return await asyncio.to_thread(self.score, messages)

    return RelevanceORM()


def its_hub_process_reward_model(judge: RelevanceJudge):
    """its_hub's process reward model interface over `judge`: each partial answer's relevance to the prompt."""
    from its_hub.api.reward_models.prm import AbstractProcessRewardModel  # optional, as above
    from its_hub.api.types import ChatMessages

    class RelevancePRM(AbstractProcessRewardModel):
        def score(self, prompt_or_messages, steps):
            conversation = ChatMessages.from_prompt_or_messages(prompt_or_messages).to_chat_messages()
            question = next(m.content for m in reversed(conversation) if m.role == "user")
            return judge.score(str(question or ""), list(steps))

        async def ascore(self, prompt_or_messages, steps):
            return await asyncio.to_thread(self.score, prompt_or_messages, steps)

    return RelevancePRM()


def openai_lm(endpoint: str, model: str, max_tokens: int, temperature: float) -> Any:
    """its_hub's client of an OpenAI-compatible server."""
    from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel  # optional, as above

    return OpenAICompatibleLanguageModel(
        endpoint=endpoint, api_key="none", model_name=model, max_tokens=max_tokens, temperature=temperature
    )


def its_hub_best_of_n(endpoint: str, model: str, args, orm) -> tuple[Any, Callable]:
    """(its_hub's client of `endpoint`, one best-of-N request of `args.n` as a coroutine function)."""
    from its_hub import BestOfN  # optional, as in its_hub_reward_model

    lm = openai_lm(endpoint, model, args.max_tokens, args.temperature)
    algorithm = BestOfN(orm)

    async def one(prompt: str) -> dict[str, Any]:
        result = await algorithm.ainfer(lm, prompt, budget=args.n, return_response_only=False)
        return {"text": result.the_one.get("content") or "", "generated_tokens": result.usage.completion_tokens}

    return lm, one


def its_hub_particle_filter(endpoint: str, model: str, args, prm) -> tuple[Any, Callable]:
    """(its_hub's client of `endpoint`, one particle-filtering request of `args.particles` particles)."""
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering  # optional, as in its_hub_reward_model
    from its_hub.core.lms.step_generation import StepGeneration

    lm = openai_lm(endpoint, model, args.chunk_tokens, args.temperature)
    steps = math.ceil(args.max_tokens / args.chunk_tokens)
    generation = StepGeneration(max_steps=steps, tokens_per_step=args.chunk_tokens, temperature=args.temperature)
    algorithm = ParticleFiltering(generation, prm)

    async def one(prompt: str) -> dict[str, Any]:
        text = await algorithm.ainfer(lm, prompt, budget=args.particles)
        content = text.get("content") if isinstance(text, dict) else text
        # its_hub reports no usage for particle filtering: at most every particle's every step.
        return {"text": content or "", "generated_tokens": args.particles * args.max_tokens}

    return lm, one
