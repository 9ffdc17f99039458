// js-ledger: a Keel plugin written in JavaScript, built with componentize-js
// against the world `kv-plugin` (wit/keel.wit). Its storage is the standard
// `wasi:keyvalue` interface: each bucket is one of the plugin's tables, and
// every command runs in the host's write set, so a refused or trapping
// command keeps none of its writes.
//
// Commands and queries are JSON bytes. Money is integer minor units (a JS
// safe integer); balances never go below zero.
//
// Commands:
//   {"open": {"accounts": ["alice", "bob"]}}             -> {"opened": [...]}
//   {"deposit": {"account": "alice", "amount": 100}}    -> {"account", "balance"}
//   {"transfer": {"from": "alice", "to": "bob", "amount": 30}}
//                               -> {"from", "to", "amount", "transfer": n}
//                                  or error `insufficient-funds`
//   {"lottery": {"account": "alice"}}  -> a prize in 0..100 drawn with
//                                         Math.random(), stamped with Date.now()
//   {"explode": {"account": "alice"}}  -> writes, then throws an Error (a trap)
//   "noop"                             -> {"ok": true}
// Queries:
//   {"balance": {"account": "alice"}}, {"accounts": {}}, {"draws": {}}

import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft2';
import { getMany, setMany } from 'wasi:keyvalue/batch@0.2.0-draft2';
import { sequence, timestampMs, log } from 'keel:plugin/context@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Largest lottery prize (exclusive). */
const MAX_PRIZE = 100;

/** Accounts: key = account name, value = JSON {"balance": n}. */
const ACCOUNTS = 'accounts';
/** Counters kept with `atomics.increment`. */
const COUNTERS = 'counters';
/** Lottery draws: key = the command's sequence, zero-padded so keys sort. */
const DRAWS = 'draws';

/**
 * A refusal: becomes the `err` of `result<_, error>` (a keel `error`
 * record). componentize-js's export glue catches what an export throws and
 * lowers it as the `err` payload, so a thrown `{code, message}` of strings
 * is a keel `error`.
 */
function refuse(code, message) {
  return { code, message };
}

/** True when `e` is one of this plugin's refusals. */
function isRefusal(e) {
  return e !== null && typeof e === 'object' && !(e instanceof Error)
    && typeof e.code === 'string' && typeof e.message === 'string';
}

/**
 * Runs `body`; a wasi:keyvalue error (a ComponentError whose payload is the
 * store's `error` variant, e.g. a too-large key) becomes a refusal, other
 * refusals pass through, and anything else is a bug: the call traps.
 */
function guarded(body) {
  try {
    return body();
  } catch (e) {
    if (isRefusal(e)) throw e;
    const payload = e && e.payload;
    if (payload && typeof payload.tag === 'string') {
      const detail = payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
      throw refuse('store-error', `the store refused: ${detail}`);
    }
    trap(e);
  }
}

/**
 * Makes the call trap, so that a bug is never mistaken for a refusal. JS has
 * no `unreachable`; but an `Error` without string `code` and `message`
 * cannot be lowered into keel's `error` record, so the export glue fails
 * and the engine aborts: a wasm trap. Either way the host keeps none of
 * the call's writes.
 */
function trap(e) {
  const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  log('error', `uncaught exception, the call traps: ${what}`);
  throw new Error(what);
}

/**
 * The buckets opened during the current call, by name. Each is opened once
 * per call and dropped when the call ends: the bindings never drop a bucket
 * handle on their own once it has been used, and the host limits how many
 * handles an instance holds.
 */
let callBuckets = null;
const DISPOSE = Symbol.dispose ?? Symbol.for('dispose');

/** The bucket `name`, opened at most once per call. */
function useBucket(name) {
  let handle = callBuckets.get(name);
  if (handle === undefined) {
    handle = open(name);
    callBuckets.set(name, handle);
  }
  return handle;
}

/** Runs one exported call: guarded, with its buckets dropped at the end. */
function call(body) {
  callBuckets = new Map();
  try {
    return guarded(body);
  } finally {
    for (const handle of callBuckets.values()) handle[DISPOSE]();
    callBuckets = null;
  }
}

function parseJson(bytes, what) {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (e) {
    throw refuse('bad-json', `the ${what} is not JSON: ${e.message}`);
  }
}

function toBytes(value) {
  return encoder.encode(JSON.stringify(value));
}

/** Validates an account name: 1..=64 bytes of [a-z0-9_-]. */
function accountName(value) {
  if (typeof value !== 'string' || !/^[a-z0-9_-]{1,64}$/.test(value)) {
    throw refuse('invalid-account', `an account name is 1 to 64 of [a-z0-9_-], got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Validates an amount: a positive safe integer. */
function amount(value) {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw refuse('invalid-amount', `an amount is a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Adds two balances, refusing a result that is not a safe integer. */
function add(a, b) {
  const sum = a + b;
  if (!Number.isSafeInteger(sum)) {
    throw refuse('amount-too-large', `a balance would exceed ${Number.MAX_SAFE_INTEGER}`);
  }
  return sum;
}

function readAccount(bucket, name) {
  const bytes = bucket.get(name);
  if (bytes === undefined) {
    throw refuse('no-such-account', `there is no account ${JSON.stringify(name)}`);
  }
  return parseJson(bytes, 'stored account');
}

function writeAccount(bucket, name, account) {
  bucket.set(name, toBytes(account));
}

/** Every key of a bucket, through `list-keys` paging, sorted. */
function allKeys(bucket) {
  const keys = [];
  let cursor;
  do {
    const page = bucket.listKeys(cursor);
    keys.push(...page.keys);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys.sort();
}

/** Reads `keys` with one `get-many` and parses each present value. */
function readMany(bucket, keys) {
  if (keys.length === 0) return [];
  return getMany(bucket, keys)
    .filter((entry) => entry !== undefined)
    .map(([key, bytes]) => [key, parseJson(bytes, 'stored value')]);
}

function openAccounts({ accounts, balances }) {
  if (!Array.isArray(accounts) || accounts.length === 0) {
    throw refuse('invalid-command', '`open` takes a non-empty list `accounts`');
  }
  const names = accounts.map(accountName);
  if (new Set(names).size !== names.length) {
    throw refuse('invalid-command', '`open` names an account twice');
  }
  const bucket = useBucket(ACCOUNTS);
  for (const [name] of readMany(bucket, names)) {
    throw refuse('account-exists', `account ${JSON.stringify(name)} is already open`);
  }
  const initial = balances ?? {};
  setMany(bucket, names.map((name) => {
    const balance = initial[name] === undefined ? 0 : amount(initial[name]);
    return [name, toBytes({ balance })];
  }));
  return { opened: names };
}

function deposit(args) {
  const name = accountName(args.account);
  const value = amount(args.amount);
  const bucket = useBucket(ACCOUNTS);
  const account = readAccount(bucket, name);
  account.balance = add(account.balance, value);
  writeAccount(bucket, name, account);
  return { account: name, balance: account.balance };
}

/**
 * Moves money. The debit is written before the balance is checked, on
 * purpose: a refused transfer proves that the host drops its writes.
 */
function transfer(args) {
  const from = accountName(args.from);
  const to = accountName(args.to);
  const value = amount(args.amount);
  if (from === to) throw refuse('invalid-command', 'a transfer needs two different accounts');
  const bucket = useBucket(ACCOUNTS);
  const found = new Map(readMany(bucket, [from, to]));
  for (const name of [from, to]) {
    if (!found.has(name)) throw refuse('no-such-account', `there is no account ${JSON.stringify(name)}`);
  }
  const source = found.get(from);
  const target = found.get(to);
  source.balance -= value;
  writeAccount(bucket, from, source);
  const count = increment(useBucket(COUNTERS), 'transfers', 1n);
  if (source.balance < 0) {
    throw refuse('insufficient-funds', `${from} has ${source.balance + value}, cannot send ${value}`);
  }
  target.balance = add(target.balance, value);
  writeAccount(bucket, to, target);
  return { from, to, amount: value, transfer: Number(count) };
}

/**
 * Draws a prize with the language's own random numbers and clock. Both are
 * served by the host's sealed WASI, so replay draws the same prize.
 */
function lottery(args) {
  const name = accountName(args.account);
  const bucket = useBucket(ACCOUNTS);
  const account = readAccount(bucket, name);
  const draw = Math.random();
  const prize = Math.floor(draw * MAX_PRIZE);
  const at = Date.now();
  account.balance = add(account.balance, prize);
  writeAccount(bucket, name, account);
  const seq = sequence();
  const record = {
    account: name, draw, prize, at, journaled_ms: Number(timestampMs()), sequence: Number(seq),
  };
  useBucket(DRAWS).set(String(seq).padStart(20, '0'), toBytes(record));
  return record;
}

/** Writes, then fails with a genuine exception: the command traps. */
function explode(args) {
  const name = accountName(args.account);
  const bucket = useBucket(ACCOUNTS);
  const account = readAccount(bucket, name);
  account.balance = add(account.balance, 1_000_000);
  writeAccount(bucket, name, account);
  throw new Error(`explode: a bug after writing to ${name}`);
}

const COMMANDS = { open: openAccounts, deposit, transfer, lottery, explode };

function balance(args) {
  const name = accountName(args.account);
  return { account: name, balance: readAccount(useBucket(ACCOUNTS), name).balance };
}

function listAccounts() {
  const bucket = useBucket(ACCOUNTS);
  return readMany(bucket, allKeys(bucket)).map(([account, { balance }]) => ({ account, balance }));
}

function listDraws() {
  const bucket = useBucket(DRAWS);
  return readMany(bucket, allKeys(bucket)).map(([, record]) => record);
}

const QUERIES = { balance, accounts: listAccounts, draws: listDraws };

/** Dispatches `{"name": args}` (or the bare string `"name"`) to `table`. */
function dispatch(table, message, what) {
  const [name, args] = typeof message === 'string'
    ? [message, {}]
    : (message && typeof message === 'object' && !Array.isArray(message)
      && Object.keys(message).length === 1)
      ? Object.entries(message)[0]
      : [undefined, undefined];
  if (name === 'noop' && table === COMMANDS) return { ok: true };
  const run = name === undefined ? undefined : table[name];
  if (run === undefined || !Object.hasOwn(table, name)) {
    throw refuse(`unknown-${what}`, `expected one of ${Object.keys(table).join(', ')}${table === COMMANDS ? ', noop' : ''}`);
  }
  if (args === null || typeof args !== 'object') {
    throw refuse(`invalid-${what}`, `the arguments of ${name} are an object`);
  }
  return run(args);
}

/** The exported `keel:plugin/guest` interface. */
export const guest = {
  info() {
    return { name: 'js-ledger', version: '0.1.0', schema: 1 };
  },

  /** Config: `{"accounts": {"name": opening balance, ...}}` (optional). */
  init(config) {
    call(() => {
      const parsed = parseJson(config, 'configuration');
      const balances = parsed.accounts ?? {};
      const names = Object.keys(balances);
      if (names.length > 0) {
        openAccounts({ accounts: names, balances });
        log('info', `opened ${names.length} accounts from the configuration`);
      }
    });
  },

  handle(command) {
    return call(() => toBytes(dispatch(COMMANDS, parseJson(command, 'command'), 'command')));
  },

  query(request) {
    return call(() => toBytes(dispatch(QUERIES, parseJson(request, 'query'), 'query')));
  },

  migrate(fromSchema) {
    if (fromSchema !== 1) {
      throw refuse('unsupported-schema', `cannot migrate from schema ${fromSchema}`);
    }
  },
};
