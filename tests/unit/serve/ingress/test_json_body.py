"""serve/ingress/json_body.py: every body that is not a JSON object this API reads is a 400 naming `body`
(or a 415 naming Content-Type), never a Python error escaping as a 500."""

from __future__ import annotations

import json
import time

import pytest

from aligner.errors import InvalidRequest
from serve.errors import UnsupportedMediaType, http_status
from serve.ingress.json_body import check_media_type, parse_json_object


def refused(body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse_json_object(body)
    return err.value


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_an_integer_longer_than_python_converts_is_a_400_naming_the_body(digits):
    """Failed before the fix: json.loads raised ValueError (int_max_str_digits), answered as a 500."""
    error = refused(b'{"max_tokens": 1' + b"0" * (digits - 1) + b"}")
    assert error.field == "body" and f"{digits} digits" in error.reason
    assert "0" * 100 not in error.message  # the literal is never echoed back


def test_a_negative_integer_longer_than_python_converts_is_a_400_too():
    assert refused(b'{"seed": -' + b"9" * 5000 + b"}").field == "body"


def test_an_integer_of_python_s_limit_is_read():
    assert parse_json_object(b'{"a": ' + b"9" * 4300 + b"}")["a"] == int("9" * 4300)


@pytest.mark.parametrize("literal", [b"1e999", b"-1e999", b"1E400", b"1" + b"0" * 400 + b".0", b"12345e999999"])
def test_a_number_that_overflows_to_infinity_is_refused_like_infinity(literal):
    """Failed before the fix: `1e999` was read as inf where `Infinity` is refused."""
    error = refused(b'{"temperature": ' + literal + b"}")
    assert error.field == "body" and "finite" in error.reason
    assert len(error.message) < 200


@pytest.mark.parametrize("literal", [b"1e-999", b"5e-324", b"1.7976931348623157e308", b"-0.0"])
def test_finite_extremes_are_read(literal):
    assert parse_json_object(b'{"a": ' + literal + b"}")["a"] == float(literal)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"null", b"5", b'"x"', b"{", b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe", b"[" * 100_000],
)
def test_what_is_not_a_json_object_is_a_400_naming_the_body(body):
    assert refused(body).field == "body"


def test_an_unpaired_surrogate_is_refused():
    assert "surrogate" in refused(b'{"prompt": "\\ud800"}').reason


def test_a_duplicate_key_names_the_key():
    assert refused(b'{"prompt": "a", "prompt": "b"}').field == "prompt"


def test_a_duplicated_key_that_cannot_be_shown_as_a_field_names_body():
    """Found by review: the unpaired surrogate became the error's field, which the answer could not encode."""
    for key in ("\\ud800", "a\\u0000b", "\\u202e"):
        error = refused(f'{{"{key}": 1, "{key}": 2}}'.encode())
        assert error.field == "body" and "appears more than once" in error.reason
        str(error).encode("utf-8")
        json.dumps({"field": error.field, "message": str(error)}).encode("utf-8")


def test_a_huge_duplicated_key_is_not_echoed_and_many_keys_cost_linear_time():
    """Failed before this fix: the key was echoed whole as the field (a megabyte back per request), and
    finding the duplicate compared every key with every earlier one (quadratic)."""
    key = "k" * 500_000
    error = refused(f'{{"{key}": 1, "{key}": 2}}'.encode())
    assert error.field == "body" and "500000 characters" in error.reason and len(str(error)) < 300
    many = "{" + ", ".join(f'"k{i}": 0' for i in range(200_000)) + ', "k0": 1}'
    started = time.perf_counter()
    assert refused(many.encode()).field == "k0"
    assert time.perf_counter() - started < 30  # quadratic: about 2·10^10 comparisons, hours


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_a_missing_or_json_content_type_is_accepted(content_type):
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/merge-patch+json",
        "application/jsonx",
        "x" * 10_000,
    ],
)
def test_another_content_type_is_a_415_naming_the_allowed_type(content_type):
    """Failed before the fix: the documented 415 never happened; Content-Type was not read."""
    with pytest.raises(UnsupportedMediaType) as err:
        check_media_type(content_type)
    assert http_status(err.value.code) == 415 and err.value.code == "unsupported_media_type"
    assert err.value.field == "Content-Type" and "application/json" in err.value.reason
    assert len(err.value.message) < 200


def test_a_body_in_utf16_or_utf32_is_refused_as_not_utf8():
    """Found by review: json.loads(bytes) detects UTF-16 and UTF-32 and read them, where UTF-8 is the rule."""
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        with pytest.raises(InvalidRequest) as err:
            parse_json_object('{"prompt": "hi"}'.encode(encoding))
        assert err.value.field == "body"
    assert parse_json_object('{"prompt": "h\u00e9"}'.encode()) == {"prompt": "h\u00e9"}
