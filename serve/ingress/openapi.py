"""OpenAPI documents for the routes that parse their own bodies (the admin bodies are
serve/gateway/admin.py's).

Routes read raw JSON (to enforce size limits and report errors in one format),
so their request and response schemas are declared here and added to the
OpenAPI components: /docs and schema-based fuzzing see the real contract.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from aligner.contract import AlignRequest, AlignResponse
from serve.gateway.admin import (
    ActivateSafetyConfig,
    ActivateTenantPolicy,
    CreateKey,
    PutSafetyConfig,
    PutTenantPolicy,
)
from serve.ingress.openai import ALIGNMENT_FIELDS

REF = "#/components/schemas/{model}"


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "field": {"type": ["string", "null"]},
                "message": {"type": "string"},
            },
        }
    },
}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
        }
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                    },
                },
            ]
        },
    },
}
_ALIGN_PROPS = AlignRequest.model_json_schema(ref_template=REF)["properties"]
CHAT_REQUEST = {
    "type": "object",
    "description": "OpenAI chat completion request plus the alignment fields (the client's extra_body).",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": _MESSAGE},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "user": {"type": ["string", "null"]},
        "n": {"type": ["integer", "null"], "description": "Only 1 is supported."},
        **{name: _ALIGN_PROPS[name] for name in ALIGNMENT_FIELDS},
    },
}
CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage", "alignment"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "usage": {"type": "object"},
        "alignment": {
            "type": "object",
            "description": "strategy, scores, combined_score, feasible, threshold_met, usage, candidates.",
        },
    },
}


def _pydantic(model: type[BaseModel]) -> dict[str, dict]:
    schema = model.model_json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    return {model.__name__: schema, **defs}


SCHEMAS: dict[str, dict] = {
    **_pydantic(AlignRequest),
    **_pydantic(AlignResponse),
    **_pydantic(CreateKey),
    **_pydantic(PutSafetyConfig),
    **_pydantic(ActivateSafetyConfig),
    **_pydantic(PutTenantPolicy),
    **_pydantic(ActivateTenantPolicy),
    "ChatCompletionRequest": CHAT_REQUEST,
    "ChatCompletion": CHAT_COMPLETION,
    "Error": ERROR,
    "OpenAIError": OPENAI_ERROR,
}


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def body(name: str) -> dict:
    """`openapi_extra` for a route whose JSON body follows schema `name`."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(name)}}}}


def responses(name: str, *, openai: bool = False) -> dict:
    error = {"content": {"application/json": {"schema": _ref("OpenAIError" if openai else "Error")}}}
    return {
        200: {
            "description": f"{name}, or with `stream: true` a text/event-stream",
            "content": {
                "application/json": {"schema": _ref(name)},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        **{
            status: {"description": text, **error}
            for status, text in (
                (400, "invalid request; `field` names the offending field"),
                (401, "missing, unknown or revoked API key"),
                (404, "unknown model"),
                (413, "body too large"),
                (429, "queue full; see Retry-After"),
                (500, "internal error"),
                (503, "engine unavailable"),
                (504, "deadline exceeded before any candidate was complete"),
            )
        },
    }


def install(app: FastAPI) -> None:
    """Add SCHEMAS to the app's OpenAPI components."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
