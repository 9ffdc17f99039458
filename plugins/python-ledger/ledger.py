"""The ledger itself: accounts with integer balances, deposits, transfers
that refuse overdrafts, and a lottery that uses Python's own `random` and
`time` modules.

Determinism: the host runs each command with WASI random seeded from
(plugin, sequence) and the clocks reading the command's journaled
timestamp, so `random.random()` and `time.time()` give the same answers
when `keel verify` replays the journal.
"""

import random
import re
import time
from typing import Any, Dict

from wit_world.imports import context

import storage
from storage import ACCOUNTS, DRAWS, META, refusal

#: Largest balance and amount: money stays a signed 64-bit integer.
MAX_MONEY = 2**63 - 1
#: Account names: 1 to 64 of `[a-z0-9_-]`.
ACCOUNT_NAME = re.compile(r"[a-z0-9_-]{1,64}")
#: Most draws a `draws` query returns.
MAX_DRAWS = 1000


def _account(args: Dict[str, Any], field: str) -> str:
    name = args.get(field)
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise refusal(
            "invalid-account",
            f"`{field}` must be 1 to 64 of a-z, 0-9, `_` and `-`, got {name!r}",
        )
    return name


def _amount(args: Dict[str, Any]) -> int:
    amount = args.get("amount")
    # bool is an int in Python: refuse `true` explicitly.
    if type(amount) is not int or not 0 < amount <= MAX_MONEY:
        raise refusal(
            "invalid-amount",
            f"`amount` must be an integer from 1 to {MAX_MONEY}, got {amount!r}",
        )
    return amount


def _balance(name: str) -> int:
    balance = storage.get(ACCOUNTS, name.encode())
    if balance is None:
        raise refusal("unknown-account", f"no account named {name!r}; open it first")
    return balance


def _credit(name: str, amount: int) -> int:
    balance = _balance(name) + amount
    if balance > MAX_MONEY:
        raise refusal("overflow", f"{name!r} would hold more than {MAX_MONEY}")
    storage.put(ACCOUNTS, name.encode(), balance)
    return balance


def init(config: Dict[str, Any]) -> None:
    """First deployment: remembers the operator's configuration."""
    storage.put(META, b"config", config)


def open_account(args: Dict[str, Any]) -> Dict[str, Any]:
    name = _account(args, "account")
    if storage.get(ACCOUNTS, name.encode()) is not None:
        raise refusal("account-exists", f"{name!r} is already open")
    storage.put(ACCOUNTS, name.encode(), 0)
    return {"account": name, "balance": 0}


def deposit(args: Dict[str, Any]) -> Dict[str, Any]:
    name = _account(args, "account")
    return {"account": name, "balance": _credit(name, _amount(args))}


def transfer(args: Dict[str, Any]) -> Dict[str, Any]:
    source = _account(args, "from")
    target = _account(args, "to")
    amount = _amount(args)
    if source == target:
        raise refusal("same-account", "`from` and `to` must differ")
    # Debit first and check afterwards, on purpose: a refused transfer has
    # already written, and the host must undo it.
    remaining = _balance(source) - amount
    storage.put(ACCOUNTS, source.encode(), remaining)
    credited = _credit(target, amount)
    if remaining < 0:
        raise refusal(
            "insufficient-funds",
            f"{source!r} holds {remaining + amount}, cannot send {amount}",
        )
    context.log(context.Level.INFO, f"transfer {amount} from {source} to {target}")
    return {"from": {"account": source, "balance": remaining},
            "to": {"account": target, "balance": credited}}


def explode(args: Dict[str, Any]) -> Dict[str, Any]:
    """Writes, then fails with an ordinary Python exception: the call traps
    and the host keeps none of its writes."""
    name = _account(args, "account")
    _credit(name, 1_000_000)
    raise RuntimeError(f"exploding after crediting {name!r}")


def lottery(args: Dict[str, Any]) -> Dict[str, Any]:
    """Draws with Python's own generator and clock, pays the prize and
    records the draw."""
    name = _account(args, "account")
    _balance(name)
    roll = random.randint(1, 6)
    luck = random.random()
    drawn_at_ms = int(time.time() * 1000)
    prize = roll * 10 if luck < 0.5 else roll
    draw = {
        "sequence": context.sequence(),
        "account": name,
        "roll": roll,
        "luck": luck,
        "drawn_at_ms": drawn_at_ms,
        "prize": prize,
    }
    storage.put(DRAWS, storage.seq_key(context.sequence()), draw)
    draw["balance"] = _credit(name, prize)
    context.log(context.Level.INFO, f"lottery {name}: rolled {roll}, won {prize}")
    return draw


def clock(_args: Dict[str, Any]) -> Dict[str, Any]:
    """What Python's clocks say during this command (nothing is stored)."""
    return {
        # round, not int: a float of seconds times 1000 may land just below the integer.
        "time_ms": round(time.time() * 1000),
        "time_ns": time.time_ns(),
        "journaled_ms": context.timestamp_ms(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def noop(_args: Dict[str, Any]) -> Dict[str, Any]:
    """Does nothing: the per-command cost of a Python plugin."""
    return {}


#: Every command: name -> function of its arguments returning the response.
COMMANDS = {
    "open": open_account,
    "deposit": deposit,
    "transfer": transfer,
    "explode": explode,
    "lottery": lottery,
    "clock": clock,
    "noop": noop,
}


def q_balance(args: Dict[str, Any]) -> Dict[str, Any]:
    name = _account(args, "account")
    return {"account": name, "balance": _balance(name)}


def q_accounts(_args: Dict[str, Any]) -> Dict[str, Any]:
    accounts = [{"account": key.decode(), "balance": balance}
                for key, balance in storage.scan(ACCOUNTS)]
    return {"accounts": accounts, "total": sum(a["balance"] for a in accounts)}


def q_draws(args: Dict[str, Any]) -> Dict[str, Any]:
    only = args.get("account")
    limit = args.get("limit", 100)
    if type(limit) is not int or not 0 < limit <= MAX_DRAWS:
        raise refusal("invalid-limit", f"`limit` must be from 1 to {MAX_DRAWS}")
    draws = []
    for _key, draw in storage.scan(DRAWS):
        if only is None or draw["account"] == only:
            draws.append(draw)
            if len(draws) == limit:
                break
    return {"draws": draws}


#: Every query: name -> function of its arguments returning the response.
QUERIES = {
    "balance": q_balance,
    "accounts": q_accounts,
    "draws": q_draws,
}
