"""The one registry of search strategies: their parameters, their cost and their run code, by name.

The contract (aligner/contract.py) validates a request's `search` object here, the core runs the
strategy it names (`strategies.strategy_for`), and the CLI flags, the docs table and the bench
presets are read from it. The wire form stays flat: `{"strategy": name, <its parameters>}`, one JSON
object, one proto message; `wire_model()` is that object's schema, every registered strategy's fields
in one model.

The parameters of the built-in strategies are registered here, at import; their run code, which reads
the contract and so cannot be imported by it, is registered by aligner/search/strategies.py. A test
(or a plug-in) registers both at once: `register(Params, strategy)`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from aligner.errors import InvalidRequest
from aligner.search.params import beam, best_of_n, particle_filter, rejection, rps, sample
from aligner.search.params.base import SearchParams

_PARAMS: dict[str, type[SearchParams]] = {}
# Run code (aligner.search.base.Strategy), kept untyped: its module imports the contract, which imports
# this one. aligner/search/strategies.py, which may import it, hands it out typed.
_STRATEGIES: dict[str, Any] = {}
_wire: type[BaseModel] | None = None


def register(params: type[SearchParams], strategy: Any = None) -> None:
    """Register a strategy's parameters, and its run code when given (it may follow later)."""
    name = params.strategy_name()
    known = _PARAMS.get(name)
    if known is not None and known is not params:
        raise ValueError(f"strategy {name!r} is already registered with other parameters ({known.__module__})")
    if strategy is not None and strategy.params is not params:
        raise ValueError(f"strategy {name!r}: its run code reads other parameters than the ones registered")
    _PARAMS[name] = params
    if strategy is not None:
        _STRATEGIES[name] = strategy


def unregister(name: str) -> None:
    _PARAMS.pop(name, None)
    _STRATEGIES.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_PARAMS)


def params_of(name: str) -> type[SearchParams]:
    return _PARAMS[name]


def run_code(name: str) -> Any:
    """The run code registered for strategy `name` (see `aligner.search.strategies.strategy_for`)."""
    return _STRATEGIES[name]


def readers(field: str) -> tuple[str, ...]:
    """The strategies that read parameter `field`."""
    return tuple(name for name, params in _PARAMS.items() if field in params.model_fields)


def wire_model() -> type[BaseModel]:
    """`SearchSpec`: the flat `search` object of the wire, built once from the strategies registered by
    then (the contract builds it at import). Each field is described by the strategies that read it."""
    global _wire
    if _wire is None:
        _wire = _build_wire_model()
    return _wire


def wire_part(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the fields only strategies registered after `wire_model()` read (checked later)."""
    wire_fields = wire_model().model_fields
    return {field: value for field, value in data.items() if field in wire_fields or not readers(field)}


class SearchField:
    """`Annotated[SearchParams, SearchField()]`: a request's `search`, checked as the flat `wire_model()`
    (its JSON schema too) and kept as the strategy's own `Params`. The server's `SearchLimits` come in
    the validation context (`{"limits": ...}`); without one, each field's declared `Maximum` holds."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_wrap_validator_function(
            _search_field,
            handler.generate_schema(wire_model()),
            # Dumped as the instance it is (the strategy's own fields), not as the declared base.
            serialization=core_schema.wrap_serializer_function_ser_schema(
                lambda value, serialize: serialize(value), schema=core_schema.any_schema()
            ),
        )


def _search_field(value: Any, check_wire: ValidatorFunctionWrapHandler, info: ValidationInfo) -> SearchParams:
    if isinstance(value, SearchParams):
        return value
    # Field types and bounds, unknown fields: reported like any other field's errors.
    check_wire(wire_part(value) if isinstance(value, dict) else value)
    limits = (info.context or {}).get("limits")
    return search_params(value, {} if limits is None else limits.model_dump())


def search_params(data: dict[str, Any], limits: Mapping[str, int]) -> SearchParams:
    """The strategy's own `Params` for a `search` object that passed `wire_model()`'s field checks.

    In the order the contract has always checked them: the server's limits (`limits`, then each
    field's declared `Maximum`), each field's own checks, then fields the strategy does not read."""
    name = data.get("strategy", "sample")
    params = _PARAMS[name]
    given = [field for field in data if field != "strategy"]
    wire_fields = wire_model().model_fields
    for field in given:
        if field not in wire_fields:  # a strategy registered after the wire schema: its fields are checked here
            _check_field(_reader(params, field), field, data[field])
    for field, maximum in _maxima(limits).items():
        if field in data and data[field] > maximum:
            raise InvalidRequest(f"search.{field}", f"is {data[field]} but the configured maximum is {maximum}")
    for field in given:
        _check_field(_reader(params, field), field, data[field])
    unread = sorted(set(given) - set(params.model_fields))
    if unread:
        field = unread[0]
        raise InvalidRequest(
            f"search.{field}", f"does not apply to strategy {name!r} (it is read by: {', '.join(readers(field))})"
        )
    chosen = params.model_validate(data)
    maxima = _maxima(limits)
    # A default above the server's maximum becomes the maximum; only explicit values are refused.
    lowered = {
        field: maxima[field]
        for field in params.model_fields
        if field in maxima and field not in data and getattr(chosen, field) > maxima[field]
    }
    return chosen.model_copy(update=lowered) if lowered else chosen


def markdown_table() -> str:
    """The strategies, their parameters and what each does, as the Markdown table of docs/alignment.md."""
    rows = ["| strategy | parameters (default, maximum) | what it does |", "|---|---|---|"]
    for name, params in _PARAMS.items():
        maxima = params.maxima()
        cells = [
            f"`{field}` ({_number(info.default)}, {maxima[field] if field in maxima else _bounds(info)})"
            for field, info in params.model_fields.items()
            if field != "strategy"
        ]
        summary = " ".join((params.__doc__ or "").split())
        rows.append(f"| `{name}` | {', '.join(cells) or '—'} | {summary} |")
    return "\n".join(rows) + "\n"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as JSON writes it
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(info: FieldInfo) -> str:
    """A field's range from its constraints: "[0, 1)", "(0, 90]"; "any" when it has none."""
    low = next((("[", m.ge) for m in info.metadata if getattr(m, "ge", None) is not None), None)
    low = low or next((("(", m.gt) for m in info.metadata if getattr(m, "gt", None) is not None), ("(", "-∞"))
    high = next(((m.le, "]") for m in info.metadata if getattr(m, "le", None) is not None), None)
    high = high or next(((m.lt, ")") for m in info.metadata if getattr(m, "lt", None) is not None), ("∞", ")"))
    if low[1] == "-∞" and high[0] == "∞":
        return "any"
    return f"{low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"


def _reader(params: type[SearchParams], field: str) -> type[SearchParams]:
    """The strategy whose rules check `field`: the request's own, or the first that reads it."""
    if field in params.model_fields:
        return params
    return _PARAMS[readers(field)[0]]


def _check_field(params: type[SearchParams], field: str, value: Any) -> None:
    try:
        params.model_validate({field: value})
    except ValidationError as exc:
        error = exc.errors()[0]
        path = "search" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        raise InvalidRequest(path, error["msg"].removeprefix("Value error, ")) from None


def _maxima(limits: Mapping[str, int]) -> dict[str, int]:
    """Each parameter's maximum: the server's `SearchLimits` where it names the parameter (in its order),
    else the parameter's declared `Maximum`."""
    declared: dict[str, int] = {}
    for params in _PARAMS.values():
        for field, maximum in params.maxima().items():
            declared.setdefault(field, maximum)
    configured = {field: maximum for field, maximum in limits.items() if field in declared}
    return {**configured, **{f: m for f, m in declared.items() if f not in configured}}


def _build_wire_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "strategy": (str, Field("sample", description=f"Search strategy; one of: {', '.join(_PARAMS)}."))
    }
    for field in dict.fromkeys(f for params in _PARAMS.values() for f in params.model_fields if f != "strategy"):
        info = copy.copy(_PARAMS[readers(field)[0]].model_fields[field])
        info.description = "; ".join(f"{name}: {_clause(_PARAMS[name].model_fields[field])}" for name in readers(field))
        info.description += "."
        fields[field] = (info.annotation, info)
    return create_model(
        "SearchSpec",
        __config__=ConfigDict(extra="forbid", strict=True),
        __validators__={"_known_strategy": field_validator("strategy")(_known_strategy)},
        **fields,
    )


def _clause(info: FieldInfo) -> str:
    """ "Candidates per round." -> "candidates per round": one strategy's part of a shared description."""
    text = (info.description or "").rstrip(".")
    return text[:1].lower() + text[1:]


def _known_strategy(cls: type, value: str) -> str:
    if value not in _PARAMS:
        raise ValueError(f"unknown strategy {value!r}; allowed: {', '.join(_PARAMS)}")
    return value


for _params in (sample.Params, best_of_n.Params, rejection.Params, beam.Params, rps.Params, particle_filter.Params):
    register(_params)
