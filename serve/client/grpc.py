"""A running server over gRPC: `aligner.v1.Aligner/Generate` and `GenerateStream`.

The same request body as over HTTP (converted to the proto), the same wire events back, and the
server's errors as the `AlignerError` of their code and field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from aligner.errors import from_payload
from proto.aligner.v1 import aligner_pb2 as pb
from proto.aligner.v1 import aligner_pb2_grpc
from serve.ingress.grpc_convert import from_plain, to_plain


def generate_events(server: str, key: str, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answer to a request body as wire events: the stream's events when streaming, else one `done`."""
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
            raise from_payload(error_payload(exc)) from None


def error_payload(exc: Any) -> dict[str, Any]:
    """code, field and message of a failed call, from the trailers the server sets (status otherwise)."""
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
