//! Progress of long CLI operations (snapshot, restore, export, import,
//! verify, recover): a bar on a terminal (indicatif), plain lines on
//! stderr otherwise (a log, a CI job) — the start, every tenth of the way,
//! and the end.

use std::io::IsTerminal as _;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// One operation's progress.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    total: u64,
    /// Plain mode: the last tenth printed.
    tenth: u64,
    started: Instant,
}

impl Progress {
    /// Starts showing `label`, out of `total` units (0: unknown, a spinner).
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if total > 0 {
                ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{msg:24} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                )
            } else {
                let bar = ProgressBar::new_spinner();
                bar.enable_steady_tick(std::time::Duration::from_millis(100));
                bar
            };
            bar.set_message(label.clone());
            bar
        });
        if bar.is_none() {
            eprintln!("{label}: started");
        }
        Self {
            label,
            bar,
            total,
            tenth: 0,
            started: Instant::now(),
        }
    }

    /// Sets the total (once known).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// `done` units are done.
    pub fn update(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.total > 0 => {
                let tenth = done.saturating_mul(10) / self.total;
                if tenth > self.tenth && tenth < 10 {
                    self.tenth = tenth;
                    eprintln!("{}: {done}/{} ({}0 %)", self.label, self.total, tenth);
                }
            }
            None => {}
        }
    }

    /// Ends the display with `outcome` (one line).
    pub fn finish(self, outcome: &str) {
        let millis = self.started.elapsed().as_millis();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {outcome} ({millis} ms)", self.label);
    }
}
