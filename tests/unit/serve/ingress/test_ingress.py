"""The ingress serves HTTP (serve/ingress/http_routes.py) and gRPC (serve/ingress/grpc_methods.py) over
one gateway, by composition: neither transport's module depends on the other, and Ray Serve's gRPC
proxy finds every RPC of the services it registers on the ingress class, as the right kind of function."""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from serve.ingress.grpc_methods import SERVICER_FUNCTIONS, GrpcService
from serve.ingress.ingress import Ingress

ROOT = Path(__file__).resolve().parents[4]
TRANSPORTS = {
    "serve.ingress.http_routes": ROOT / "serve/ingress/http_routes.py",
    "serve.ingress.grpc_methods": ROOT / "serve/ingress/grpc_methods.py",
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize(("module", "other"), [tuple(TRANSPORTS), tuple(reversed(TRANSPORTS))])
def test_one_transport_does_not_import_the_other(module, other):
    assert other not in imported_modules(TRANSPORTS[module]), f"{module} imports {other}"


def registered_services() -> list:
    """The service descriptors of SERVICER_FUNCTIONS (what the proxy serves), from their stub modules."""
    services = []
    for function in SERVICER_FUNCTIONS:
        stubs, _, name = function.rpartition(".")
        service = name.removeprefix("add_").removesuffix("Servicer_to_server")
        messages = importlib.import_module(stubs.removesuffix("_grpc"))
        services.append(messages.DESCRIPTOR.services_by_name[service])
    return services


def test_every_rpc_of_the_registered_services_is_a_method_of_the_ingress():
    services = registered_services()
    assert {s.full_name for s in services} == {"aligner.v1.Aligner", "aligner.v1.Admin", "grpc.health.v1.Health"}
    for service in services:
        for method in service.methods:
            # Ray Serve's proxy streams a server-streaming RPC from an async generator.
            kind = inspect.isasyncgenfunction if method.server_streaming else inspect.iscoroutinefunction
            on_ingress = getattr(Ingress, method.name, None)
            assert on_ingress is not None and kind(on_ingress), f"Ingress.{method.name} ({service.full_name})"
            # The proxy passes the call's context by keyword, only to a method that names it.
            assert "grpc_context" in inspect.signature(on_ingress).parameters, method.name
            # And the ingress only delegates: the service object answers it, as the same kind.
            assert kind(getattr(GrpcService, method.name)), f"GrpcService.{method.name}"
