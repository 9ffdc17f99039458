"""Typed access to the ledger's tables through the host's `tables` import.

Every value is stored as compact UTF-8 JSON; keys are raw bytes chosen so
that byte order is the order the ledger wants (account names as UTF-8,
draws by big-endian sequence number). A table operation the host refuses
(a key too large, a write set over the per-command limit, ...) becomes a
refusal of the whole command, which the host then undoes.
"""

import json
from typing import Any, Iterator, Optional, Tuple

from componentize_py_types import Err
from wit_world.exports.guest import Error
from wit_world.imports import tables

#: Balances: account name (UTF-8) -> integer balance.
ACCOUNTS = "accounts"
#: Lottery draws: sequence number (8 bytes, big-endian) -> the draw.
DRAWS = "draws"
#: One-off facts: `config` -> the operator's configuration from `init`.
META = "meta"

#: Entries asked of the host per cursor chunk (the host may return fewer).
SCAN_CHUNK = 64


def refusal(code: str, message: str) -> Err:
    """The exception that makes the host refuse the current call."""
    return Err(Error(code=code, message=message))


def _table_call(what: str, op, *args):
    try:
        return op(*args)
    except Err as e:
        raise refusal("storage-refused", f"{what}: the host refused it ({e.value})")


def get(table: str, key: bytes) -> Optional[Any]:
    """The JSON value under `key` in `table`, or None."""
    raw = _table_call(f"reading {table}", tables.get, table, key)
    return None if raw is None else json.loads(raw)


def put(table: str, key: bytes, value: Any) -> None:
    """Stores `value` (as compact JSON) under `key` in `table`."""
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    _table_call(f"writing {table}", tables.put, table, key, raw)


def scan(table: str, start: Optional[bytes] = None) -> Iterator[Tuple[bytes, Any]]:
    """Every (key, JSON value) of `table` from `start` on, in key order,
    fetched from the host in chunks of SCAN_CHUNK entries."""
    cursor = _table_call(
        f"scanning {table}", tables.scan, table, start, None, tables.Direction.FORWARD
    )
    with cursor:
        while True:
            chunk = cursor.next(SCAN_CHUNK)
            if not chunk:
                return
            for entry in chunk:
                yield entry.key, json.loads(entry.value)


def seq_key(sequence: int) -> bytes:
    """A sequence number as a key whose byte order is numeric order."""
    return sequence.to_bytes(8, "big")
