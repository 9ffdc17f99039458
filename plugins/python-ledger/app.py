"""Keel plugin `python-ledger`: the exports of world `keel:plugin/plugin`.

Commands and queries are JSON objects with one key naming the operation,
e.g. `{"transfer": {"from": "alice", "to": "bob", "amount": 5}}`; responses
are JSON. A refusal raises `Err(Error(code, message))`; any other exception
traps the call. Either way the host keeps none of the call's writes.
"""

import json
from typing import Any, Callable, Dict, Tuple

from wit_world import exports
from wit_world.exports.guest import PluginInfo

import ledger
from storage import refusal

NAME = "python-ledger"
VERSION = "0.1.0"
#: Storage schema: bump it, and handle the old one in `migrate`, when the
#: layout of the tables changes.
SCHEMA = 1


def _parse(raw: bytes, table: Dict[str, Callable], what: str) -> Tuple[Callable, Dict[str, Any]]:
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise refusal(f"bad-{what}", f"not JSON: {e}")
    if not isinstance(request, dict) or len(request) != 1:
        raise refusal(f"bad-{what}", f"expected one of {sorted(table)} as the only key")
    (name, args), = request.items()
    if name not in table:
        raise refusal(f"bad-{what}", f"unknown {what} {name!r}; expected one of {sorted(table)}")
    if not isinstance(args, dict):
        raise refusal(f"bad-{what}", f"the arguments of {name!r} must be an object")
    return table[name], args


def _encode(response: Any) -> bytes:
    return json.dumps(response, separators=(",", ":"), sort_keys=True).encode()


class Guest(exports.Guest):
    """The component's `guest` export."""

    def info(self) -> PluginInfo:
        return PluginInfo(name=NAME, version=VERSION, schema=SCHEMA)

    def init(self, config: bytes) -> None:
        try:
            parsed = json.loads(config or b"{}")
        except ValueError as e:
            raise refusal("bad-config", f"the configuration is not JSON: {e}")
        ledger.init(parsed)

    def handle(self, command: bytes) -> bytes:
        op, args = _parse(command, ledger.COMMANDS, "command")
        return _encode(op(args))

    def query(self, request: bytes) -> bytes:
        op, args = _parse(request, ledger.QUERIES, "query")
        return _encode(op(args))

    def migrate(self, from_schema: int) -> None:
        if from_schema != SCHEMA:
            raise refusal("unsupported-schema", f"cannot migrate from schema {from_schema}")
