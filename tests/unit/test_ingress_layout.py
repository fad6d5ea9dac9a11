"""The ingress class is HTTP routes + gRPC methods (serve/ingress/grpc_methods.py) + the admin core
(serve/gateway/admin.py), mixed together: a name defined twice would silently send one transport into the
other's code. Every mixin method must resolve to the mixin's own function on the ingress."""

import inspect

from serve.gateway.admin import AdminCore
from serve.ingress.grpc_methods import GrpcMethods
from serve.ingress.ingress import Ingress


def test_no_mixin_method_is_shadowed_on_the_ingress():
    for mixin in (GrpcMethods, AdminCore):
        for name, member in vars(mixin).items():
            if inspect.isfunction(member):
                resolved = inspect.getattr_static(Ingress, name)
                assert resolved is member, f"Ingress.{name} is not {mixin.__name__}.{name}"


def test_every_rpc_of_the_contract_is_a_method_of_the_ingress():
    from proto.aligner.v1 import aligner_pb2

    for service in aligner_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            function = getattr(Ingress, method.name)
            # Ray Serve's proxy streams a server-streaming RPC from an async generator.
            kind = inspect.isasyncgenfunction if method.server_streaming else inspect.iscoroutinefunction
            assert kind(function), f"{service.name}/{method.name}"
