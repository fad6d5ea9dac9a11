"""`aligner generate --server HOST:PORT [--grpc]`: the same flags and output, answered by a running server.

The flags build the same JSON body the in-process command validates; it goes to `POST /v1/generate`
(SSE when streaming) or, with `--grpc`, to `aligner.v1.Aligner/Generate` (`GenerateStream`). The
server's errors come back with their code and field, so bad input still exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from aligner.errors import InvalidRequest, ServerError, from_payload
from aligner.contract import AlignResponse

KEY_ENV = "ALIGNER_API_KEY"
# Flags that configure an in-process engine or catalog: meaningless against a server.
LOCAL_ONLY = ("safety_config", "model", "dtype", "max_model_len", "kv_cache_gib", "block_size")


def add_arguments(generate: argparse.ArgumentParser) -> None:
    group = generate.add_argument_group("server (instead of an in-process engine)")
    group.add_argument("--server", metavar="HOST:PORT", help="Send the request to a running server (HTTP by default).")
    group.add_argument("--grpc", action="store_true", help="With --server: use the gRPC API (port 9000 by default).")
    group.add_argument("--key", help=f"With --server: the API key (default: ${KEY_ENV}).")


def run(args: argparse.Namespace) -> int:
    from serve.cli.commands import format_scores, request_data_from_args

    for name in LOCAL_ONLY:
        if getattr(args, name, None) is not None:
            raise InvalidRequest(f"--{name.replace('_', '-')}", "configures an in-process engine; the server has its own")
    if args.reward_model or args.no_judge:
        raise InvalidRequest("--reward-model", "configures an in-process catalog; the server has its own")
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        raise InvalidRequest("--key", f"an API key is needed with --server (or set ${KEY_ENV})")
    data = request_data_from_args(args)
    send = grpc_events if args.grpc else http_events
    response = None
    for event in send(args.server, key, data):
        if event["type"] in ("delta", "chunk") and args.stream:
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(event["text"], end="", flush=True)
        elif event["type"] == "done":
            response = event["response"]
            if args.stream and args.json:
                print(json.dumps(event), flush=True)
    if response is None:
        raise ServerError("internal", "the server ended the answer without a response")
    if args.stream:
        if not args.json:
            print()
        return 0
    if args.json:
        print(json.dumps(response, indent=2))
    else:
        print(response["text"])
        if response.get("scores") is not None:
            print(format_scores(AlignResponse.model_validate(response)), file=sys.stderr)
    return 0


def http_events(server: str, key: str, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answer as events: the SSE events when streaming, else one `done`."""
    import httpx

    url = f"{server if '://' in server else 'http://' + server}/v1/generate"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(timeout=httpx.Timeout(None, connect=10), trust_env=False) as client:
            if not data.get("stream"):
                reply = client.post(url, json=data, headers=headers)
                body = reply.json()
                if reply.status_code != 200:
                    raise from_payload(body["error"])
                yield {"type": "done", "response": body}
                return
            with client.stream("POST", url, json=data, headers=headers) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise from_payload(reply.json()["error"])
                for line in reply.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if "error" in event and "type" not in event:
                            raise from_payload(event["error"])
                        yield event
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise ServerError("unavailable", f"cannot get an answer from {url}: {exc}") from None


def grpc_events(server: str, key: str, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import grpc

    from proto.aligner.v1 import aligner_pb2 as pb
    from proto.aligner.v1 import aligner_pb2_grpc
    from serve.ingress.grpc_convert import from_plain, to_plain

    streaming = bool(data.get("stream"))
    request = from_plain(data, pb.GenerateRequest())
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(server) as channel:
        stub = aligner_pb2_grpc.AlignerStub(channel)
        try:
            if streaming:
                for event in stub.GenerateStream(request, metadata=metadata):
                    yield to_plain(event)
            else:
                yield {"type": "done", "response": to_plain(stub.Generate(request, metadata=metadata))}
        except grpc.RpcError as exc:
            raise from_payload(_grpc_error(exc)) from None


def _grpc_error(exc: Any) -> dict[str, Any]:
    """code, field and message of a failed call, from the trailers the server sets (status otherwise)."""
    from google.rpc import error_details_pb2, status_pb2

    trailers = dict(exc.trailing_metadata() or ())
    error = {"code": trailers.get("aligner-error-code", exc.code().name.lower()), "message": exc.details() or ""}
    if error["code"] == "invalid_argument" and ": " in error["message"]:
        # A failed stream loses its trailers; the message still starts with the field.
        error["field"] = error["message"].split(": ", 1)[0]
    if "grpc-status-details-bin" in trailers:
        for detail in status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad) and bad.field_violations:
                error["field"] = bad.field_violations[0].field
    return error
