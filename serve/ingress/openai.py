"""OpenAI chat-completions format <-> the aligner's AlignRequest data / AlignResponse.

Pure protocol conversion: no alignment logic. Every OpenAI field is either
mapped, accepted at its no-op value (`n: 1`, `logprobs: false`, penalties 0),
or refused with a 400 naming it — never silently ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aligner.contract import AlignResponse
from aligner.errors import InvalidRequest

ALIGNMENT_FIELDS = (
    "preferences",
    "preference_vector",
    "search",
    "budget",
    "combination",
    "references",
    "constraints",
    "checks",
    "return_candidates",
)
PASSED_THROUGH = ("temperature", "top_p", "seed", "stop")
# OpenAI fields this server knows but does not implement.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "top_logprobs",
    "response_format",
    "logit_bias",
    "modalities",
    "audio",
    "prediction",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "suffix",
    "echo",
    "best_of",
)
# Accepted only at the value that changes nothing.
NO_OP_VALUES = {"n": (1,), "logprobs": (False,), "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0)}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "length", "content_filter": "content_filter"}


@dataclass
class ChatOptions:
    """The OpenAI-only fields of a request: they choose the answer's form, not its content."""

    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def to_align_request(body: dict[str, Any]) -> tuple[dict[str, Any], ChatOptions]:
    """(AlignRequest data with `stream` set, the OpenAI-only options) from a request body."""
    data: dict[str, Any] = {}
    options = ChatOptions()
    for name, value in body.items():
        if name in ALIGNMENT_FIELDS or name in PASSED_THROUGH:
            if value is not None:  # OpenAI clients send null for "unset"; the default applies
                data[name] = value
        elif name == "model":
            if not isinstance(value, str) or not value:
                raise InvalidRequest("model", "must be a non-empty string naming the served model (GET /v1/models)")
            options.model = value
        elif name == "messages":
            data["messages"] = _messages(value)
        elif name in ("max_tokens", "max_completion_tokens"):
            if value is not None:
                if "max_tokens" in data and data["max_tokens"] != value:
                    raise InvalidRequest(name, "max_tokens and max_completion_tokens differ; give one of them")
                data["max_tokens"] = value
        elif name == "stream":
            if value is not None and not isinstance(value, bool):
                raise InvalidRequest("stream", "must be a boolean")
            options.stream = bool(value)
        elif name == "stream_options":
            options.include_usage = _stream_options(value)
        elif name == "user":
            if value is not None and not isinstance(value, str):
                raise InvalidRequest("user", "must be a string")
            options.user = value
        elif name in NO_OP_VALUES:
            # bool is an int in Python: `n: true` must not pass as 1, nor `logprobs: 0` as false.
            no_op = value in NO_OP_VALUES[name] and isinstance(value, bool) == (name == "logprobs")
            if value is not None and not no_op:
                allowed = " or ".join(repr(v) for v in NO_OP_VALUES[name][:1])
                raise InvalidRequest(name, f"is {value!r}; this server supports only {allowed}")
        elif name in UNSUPPORTED:
            if value is not None:
                raise InvalidRequest(name, "is not supported by this server")
        else:
            raise InvalidRequest(name, "unknown field")
    if "messages" not in data:
        raise InvalidRequest("messages", "is required")
    if options.model is None:
        raise InvalidRequest("model", "is required (GET /v1/models lists the served model)")
    if options.include_usage and not options.stream:
        raise InvalidRequest("stream_options", "is only allowed with stream: true")
    data["stream"] = options.stream
    return data, options


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise InvalidRequest("messages", "must be a list of {role, content} objects")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(where, "must be an object with role and content")
        for key in message:
            if key not in ("role", "content"):
                raise InvalidRequest(f"{where}.{key}", "is not supported by this server")
        role = message.get("role")
        # A list or an object is unhashable: test the type before looking the role up.
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"{where}.role", f"is {_shown(role)}; allowed: {', '.join(ROLES)}")
        out.append({"role": ROLES[role], "content": _content(message.get("content"), f"{where}.content")})
    return out


def _shown(value: Any) -> str:
    """A refused value as the message shows it: a short string quoted, anything else by its JSON type."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "a list"), (dict, "an object"))
    return next((kind for t, kind in kinds if isinstance(value, t)), type(value).__name__)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict):
                raise InvalidRequest(f"{where}[{j}]", 'only text parts ({"type": "text", "text": ...}) are supported')
            if part.get("type") != "text":
                raise InvalidRequest(
                    f"{where}[{j}].type", f'is {_shown(part.get("type"))}; only "text" parts are supported'
                )
            extra = next((key for key in part if key not in ("type", "text")), None)
            if extra is not None:
                raise InvalidRequest(f"{where}[{j}].{extra}", "is not supported by this server")
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{where}[{j}].text", f"is {_shown(part.get('text'))}; it must be a string")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(where, "must be a string or a list of text parts")


def _stream_options(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise InvalidRequest("stream_options", "must be an object")
    for key, flag in value.items():
        if key != "include_usage":
            raise InvalidRequest(f"stream_options.{key}", "is not supported by this server")
        if not isinstance(flag, bool):
            raise InvalidRequest("stream_options.include_usage", "must be a boolean")
    return bool(value.get("include_usage", False))


def alignment(strategy: str, response: AlignResponse) -> dict[str, Any]:
    """The `alignment` extension object: what steered the answer and what it cost."""
    keys = ("scores", "combined_score", "feasible", "checks", "threshold_met", "usage", "candidates", "safety")
    shown = response.model_dump(include=set(keys), exclude_none=True)
    return {"strategy": strategy, **{k: shown[k] for k in keys if k in shown}}


def usage(response: AlignResponse) -> dict[str, int]:
    prompt, completion = response.usage.prompt_tokens, response.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(response: AlignResponse, *, model: str, strategy: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{response.id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text},
                "finish_reason": FINISH_REASONS.get(response.finish_reason, "length"),
                "logprobs": None,
            }
        ],
        "usage": usage(response),
        "alignment": alignment(strategy, response),
    }


class ChunkWriter:
    """`chat.completion.chunk` objects of one streamed completion."""

    def __init__(self, request_id: str, model: str):
        self.id = f"chatcmpl-{request_id}"
        self.model = model
        self.created = int(time.time())

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None, **extra: object) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }

    def usage_chunk(self, response: AlignResponse) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(response),
        }
