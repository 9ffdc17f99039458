//! Scheduling priority of the host's background threads. On two cores, a
//! CPU-bound query or snapshot thread at the same priority as a plugin's
//! command thread makes the command thread wait for a scheduler timeslice
//! (milliseconds) whenever both want the same core. Background work runs
//! at a lower priority instead (`nice` [`BACKGROUND_NICE`] on Linux), so a
//! command thread that wakes up preempts it; background work still gets
//! every cycle the command path leaves idle — and under a load that keeps
//! both cores busy with commands, little more: queries and snapshots slow
//! down before commands do.
//!
//! Measured with the isolation benchmark (spot deposits from one client
//! while 8 clients loop a 10,000-order book page, 2 cores): deposit p99
//! 2.3–2.7 ms at nice 0, 0.55–1.55 ms at nice 10, 0.51–0.76 ms at nice 19
//! (0.54–0.66 ms with no queries). Readers also never run the log fsync
//! while a batch's acknowledger can (`DbInner::wait_durable_as_reader`):
//! a low-priority thread holding the group fsync would hold every
//! acknowledgement behind its scheduling.

/// The nice value of background threads (0 is normal, 19 the lowest).
pub const BACKGROUND_NICE: i32 = 19;

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]. Best
/// effort: a failure leaves it at normal priority.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with a thread id sets that thread's nice.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            tracing::debug!(error = %e, "could not lower a background thread's priority");
        }
    }
}
