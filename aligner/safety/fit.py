"""Whether a tenant's safety config fits the model: the operator section it composes must leave a share of
the context window (`max_model_len`) to the conversation and the answer.

Checked when a config is stored or activated (PUT and activate are refused, naming `text`), on the
replica that serves the model, with the policy model's own tokenizer and template. At request time a prompt
that does not fit under a config that leaves less than that share is the config's fault (`invalid_config`),
not the client's (`prompt_too_long` on its messages): a config stored before this check, or a server
started later with a shorter context, a larger share or another model.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from aligner.contract import AlignRequest
from aligner.errors import ConfigError, InvalidRequest, PromptTooLong
from aligner.prompting_guard import neutralize_control_tokens
from aligner.safety.config import SafetyConfig


class _Windowed(Protocol):
    @property
    def max_model_len(self) -> int: ...

    @property
    def tokenizer(self) -> Any: ...


class Aligner(Protocol):
    """What is measured here of the core's `Aligner` (which imports this module): how it composes a
    prompt, its engine's window and its share to leave free."""

    safety_min_free_context: float

    @property
    def engine(self) -> _Windowed: ...

    def prepare(self, request: AlignRequest, *, safety: SafetyConfig | None = None) -> Any: ...


# The share of max_model_len a config must leave free, unless the server configures another.
DEFAULT_MIN_FREE_SHARE = 0.5
# The shortest request: one user message of one character. Its prompt is the config's operator section and
# the template's own tokens, with as little of a conversation as there can be.
PROBE = AlignRequest.parse({"prompt": "?", "max_tokens": 1})


def config_prompt_tokens(aligner: Aligner, config: SafetyConfig) -> int:
    """Tokens of the shortest request's prompt under `config`, composed as every request's is (the policy
    model's tokenizer and template): what the config costs every request."""
    try:
        return len(aligner.prepare(PROBE, safety=config).token_ids)
    except PromptTooLong as exc:  # longer than the whole window: the count is still known
        return exc.prompt_tokens


def required_free(max_model_len: int, min_free_share: float) -> int:
    return math.ceil(min_free_share * max_model_len)


def check_control_tokens(tokenizer: Any, config: SafetyConfig) -> None:
    """`InvalidRequest` naming the field of the config's text or topics that spells one of the policy
    model's control tokens (`<|im_end|>`, also as its normalizer would make it): in the operator's section
    it would end the system turn, or open another, wherever an admin pasted it."""
    fields = [("text", config.text)]
    fields += [(f"allowed[{i}]", t) for i, t in enumerate(config.allowed)]
    fields += [(f"disallowed[{i}]", t) for i, t in enumerate(config.disallowed)]
    for field, value in fields:
        if neutralize_control_tokens(value, tokenizer) != value:
            raise InvalidRequest(field, "spells one of the policy model's control tokens; they are reserved")


def check_config_fits(aligner: Aligner, config: SafetyConfig) -> int:
    """The tokens `config` costs every request; `InvalidRequest` naming `text` when it leaves less than the
    aligner's `safety_min_free_context` share of `max_model_len` to the conversation and the answer, or
    naming the field that spells a control token (`check_control_tokens`)."""
    check_control_tokens(aligner.engine.tokenizer, config)
    used = config_prompt_tokens(aligner, config)
    max_model_len, share = aligner.engine.max_model_len, aligner.safety_min_free_context
    needed = required_free(max_model_len, share)
    if max_model_len - used < needed:
        raise InvalidRequest(
            "text",
            f"the composed safety config takes {used} of the model's {max_model_len} tokens (max_model_len); it "
            f"must leave at least {needed} ({share:g} of them, the server's safety_min_free_context) to the "
            f"conversation and the answer: shorten it by at least {used - (max_model_len - needed)} tokens",
        )
    return used


def overflow_error(aligner: Aligner, exc: PromptTooLong, config: SafetyConfig | None, version: int | None) -> Exception:
    """What a request's `PromptTooLong` is: the config's `ConfigError` when the config alone leaves less
    than the share free (the client could not have fit), else the client's own error unchanged."""
    if config is None:
        return exc
    try:
        check_config_fits(aligner, config)
    except InvalidRequest as too_long:
        which = "the tenant's safety config" if version is None else f"the tenant's safety config (version {version})"
        return ConfigError(f"{which} does not fit the model: {too_long.reason}")
    return exc
