"""Helpers for the gRPC e2e tests: metadata, and what a failed call says."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def grpc_metadata(server, key: str | None = None) -> tuple:
    return (("application", server.app), ("authorization", f"Bearer {server.key if key is None else key}"))


def field_of(error: grpc.RpcError) -> str | None:
    """The field a `google.rpc.BadRequest` detail names, if the call failed with one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return bad.field_violations[0].field
    return None


def failure(error: grpc.RpcError) -> dict:
    """A failed call as the JSON error body's fields, plus the gRPC status name."""
    trailers = dict(error.trailing_metadata() or ())
    return {
        "status": error.code().name,
        "code": trailers.get("aligner-error-code"),
        "field": field_of(error),
        "message": error.details(),
    }
