//! Named limits, units last. Every number a plugin or a client controls is
//! clamped by one of these (or by the configured value that overrides it).

/// Longest command or query payload accepted, in bytes (default).
pub const COMMAND_SIZE_BYTES_MAX: usize = 1 << 20;
/// Longest key a plugin may store, in bytes (default).
pub const KEY_SIZE_BYTES_MAX: usize = 1024;
/// Longest value a plugin may store, in bytes (default).
pub const VALUE_SIZE_BYTES_MAX: usize = 1 << 20;
/// Most bytes (keys + values) one command may write (default).
pub const WRITE_SET_SIZE_BYTES_MAX: u64 = 64 << 20;
/// Longest response a plugin may return, in bytes.
pub const RESPONSE_SIZE_BYTES_MAX: usize = 4 << 20;
/// Longest table name, in bytes.
pub const TABLE_NAME_SIZE_BYTES_MAX: usize = 64;
/// Most entries one `cursor.next` returns, whatever the plugin asks for.
pub const SCAN_CHUNK_ENTRIES_MAX: u32 = 1024;
/// Most bytes one `cursor.next` returns (a chunk stops early past this).
pub const SCAN_CHUNK_BYTES_MAX: usize = 4 << 20;
/// Longest log line kept from a plugin, in bytes (longer ones are cut).
pub const LOG_LINE_BYTES_MAX: usize = 4096;
/// Most cursors an instance may hold open at once (a leaking plugin traps).
pub const CURSORS_OPEN_MAX: usize = 256;
/// Fuel (roughly wasm instructions) one command may burn (default).
pub const FUEL_PER_COMMAND: u64 = 200_000_000;
/// Fuel one `migrate` call may burn (default): a migration may rewrite
/// every row the plugin holds.
pub const MIGRATE_FUEL: u64 = 200_000_000_000;
/// Wall-clock backstop for one `migrate` call, in milliseconds (default).
pub const MIGRATE_DEADLINE_MS: u64 = 600_000;
/// Most bytes one `migrate` call may write (default).
pub const MIGRATE_WRITE_SET_SIZE_BYTES_MAX: u64 = 16 << 30;
/// Wall-clock backstop per call, in milliseconds (default).
pub const CALL_DEADLINE_MS: u64 = 2_000;
/// How often the epoch ticker advances, in milliseconds.
pub const EPOCH_TICK_MS: u64 = 10;
/// Linear memory one instance may grow to, in bytes (default).
pub const INSTANCE_MEMORY_BYTES_MAX: usize = 64 << 20;
/// Wasm stack per call, in bytes.
pub const WASM_STACK_BYTES_MAX: usize = 512 << 10;
/// Most elements one wasm table may hold (a language runtime's function
/// table: CPython's has tens of thousands).
pub const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Batches of one plugin that may be executed and logged but not yet
/// durable (their fsync running) before the plugin's actor waits: how far
/// execution runs ahead of the disk.
pub const BATCHES_AWAITING_FSYNC_MAX: usize = 8;
/// Instances of components the engine's pool holds at once. Every running
/// plugin holds one between calls (more during a hot-swap or a deploy).
pub const POOL_COMPONENT_INSTANCES_MAX: u32 = 256;
/// Core instances the pool holds at once (a Python or JavaScript component
/// instantiates a dozen or more core modules).
pub const POOL_CORE_INSTANCES_MAX: u32 = 4096;
/// Linear memories the pool holds at once; each reserves its address
/// space (4 GiB plus guard) but no memory until touched.
pub const POOL_MEMORIES_MAX: u32 = 512;
/// Tables the pool holds at once.
pub const POOL_TABLES_MAX: u32 = 2048;
/// Bytes of a linear memory reset in place (only the pages a call dirtied,
/// found with PAGEMAP_SCAN, copied back from the initial image) instead of
/// unmapped, so that the next instance takes no page faults on them.
pub const POOL_MEMORY_KEEP_RESIDENT_BYTES: usize = 16 << 20;
/// Most commands in one group commit (default).
pub const BATCH_COMMANDS_MAX: usize = 4096;
/// Commands waiting per plugin before submissions are refused as overloaded.
pub const QUEUE_COMMANDS_MAX: usize = 65_536;
/// Longest plugin name, in bytes.
pub const PLUGIN_NAME_SIZE_BYTES_MAX: usize = 48;
/// Most bytes of an oversized HTTP body read (and discarded) so that the
/// client gets a 413 answer rather than a reset connection.
pub const BODY_DRAIN_BYTES_MAX: usize = 256 << 20;
/// Largest export file `POST /v1/import` accepts, in bytes (larger
/// states: import offline, `keel import --data-dir`).
pub const IMPORT_SIZE_BYTES_MAX: usize = 256 << 20;
/// Largest component file accepted, in bytes.
pub const COMPONENT_SIZE_BYTES_MAX: usize = 64 << 20;
/// Most open HTTP connections (default); one more is accepted and closed
/// at once, so idle sockets cannot exhaust the process's file limit.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;
/// Time a client has to send a request's headers, counted from the
/// connection's opening or the previous response, so also the idle
/// keep-alive timeout, in milliseconds (default).
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Time a client has to send a whole request body, in milliseconds
/// (default): 64 MiB components need about 1 MiB/s.
pub const HTTP_BODY_TIMEOUT_MS: u64 = 60_000;
/// Command and query bodies read at once (default); the rest wait before
/// reading a byte, so uploads hold at most this many command-size buffers.
pub const HTTP_UPLOADS_MAX: usize = 64;
/// Component uploads (deployments) read at once.
pub const HTTP_DEPLOY_UPLOADS_MAX: usize = 2;
/// How long a shutdown waits for requests in flight before it closes
/// their connections, in milliseconds (default).
pub const HTTP_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// hyper's read buffer per connection: a request's line and headers must
/// fit (larger ones get hyper's bare 431).
pub const HTTP_READ_BUFFER_BYTES_MAX: usize = 64 << 10;
/// Longest request URI, in bytes (414 past it).
pub const HTTP_URI_BYTES_MAX: usize = 8 << 10;
/// Most bytes of request headers, names and values (431 past it).
pub const HTTP_HEADERS_BYTES_MAX: usize = 16 << 10;

const _: () = assert!(KEY_SIZE_BYTES_MAX <= VALUE_SIZE_BYTES_MAX);
const _: () = assert!(SCAN_CHUNK_BYTES_MAX >= KEY_SIZE_BYTES_MAX + VALUE_SIZE_BYTES_MAX);
const _: () = assert!(CALL_DEADLINE_MS >= 10 * EPOCH_TICK_MS);
const _: () = assert!(POOL_CORE_INSTANCES_MAX >= POOL_COMPONENT_INSTANCES_MAX);
const _: () = assert!(POOL_MEMORY_KEEP_RESIDENT_BYTES <= INSTANCE_MEMORY_BYTES_MAX);
const _: () = assert!(HTTP_URI_BYTES_MAX + HTTP_HEADERS_BYTES_MAX < HTTP_READ_BUFFER_BYTES_MAX);
