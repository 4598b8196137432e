"""How the command writes each kind of value: the contract's JSON, and a cell's text."""

from __future__ import annotations

import math
import sys
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from datamorph_client.cli import main
from datamorph_client.cli.output import text, to_json
from datamorph_client.models import JsonValue, Value


@pytest.mark.parametrize(
    ("value", "as_json", "as_text"),
    [
        (None, None, ""),
        (True, True, "true"),
        (7, 7, "7"),
        (2**53 - 1, 2**53 - 1, "9007199254740991"),
        (2**53, "9007199254740992", "9007199254740992"),
        (-(2**63), str(-(2**63)), str(-(2**63))),
        (0.5, 0.5, "0.5"),
        (math.nan, "NaN", "NaN"),
        (-math.inf, "-Infinity", "-Infinity"),
        (Decimal("12345678901234567890.10"), "12345678901234567890.10", "12345678901234567890.10"),
        (Decimal("NaN"), "NaN", "NaN"),
        ("héllo", "héllo", "héllo"),
        (b"\x00\xff", "AP8=", "\\x00ff"),
        (date(2024, 2, 29), "2024-02-29", "2024-02-29"),
        (
            datetime(2024, 2, 29, 13, 45, 0, 500000, tzinfo=UTC),
            "2024-02-29T13:45:00.500000+00:00",
            "2024-02-29T13:45:00.500000+00:00",
        ),
        (time(13, 45), "13:45:00", "13:45:00"),
        (
            uuid.UUID(int=1),
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000001",
        ),
        ([1, None, [2]], [1, None, [2]], "[1,null,[2]]"),
        ({"a": Decimal("1.5"), "b": [True]}, {"a": "1.5", "b": [True]}, '{"a":"1.5","b":[true]}'),
    ],
)
def test_value_forms(value: Value, as_json: JsonValue, as_text: str) -> None:
    assert to_json(value) == as_json
    assert type(to_json(value)) is type(as_json)
    assert text(value) == as_text


def test_without_the_extra_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client installed without ``[cli]`` (as in a Lambda): typer cannot be imported."""
    monkeypatch.setitem(sys.modules, "typer", None)
    monkeypatch.delitem(sys.modules, "datamorph_client.cli.app", raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert "pip install 'datamorph-gateway-client[cli]'" in capsys.readouterr().err
