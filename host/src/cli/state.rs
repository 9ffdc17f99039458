//! The CLI's state commands: snapshots, restore, export and import
//! (against a running host over HTTP, or — export, import — a stopped
//! host's data directory with `--data-dir`), and verify (a stopped host).
//! Each shows its progress (a bar on a terminal, plain lines otherwise)
//! and prints a plain summary, or JSON with `--json`.

use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::client::{agent, call_json, finish};
use super::{ClientArgs, TransferArgs};
use crate::config::HostConfig;
use crate::host::Host;
use crate::progress::Progress;
use crate::snapshot::SnapshotPolicy;
use crate::storage::{Db, Durability};

/// Prints `value` as JSON (`json`) or as the plain line `plain` gives.
fn print(json: bool, value: &Value, plain: impl FnOnce(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", plain(value));
    }
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value, key: &str) -> String {
    text(v, key).chars().take(16).collect()
}

/// Opens a stopped host's data directory in-process (no scheduled
/// snapshots, no HTTP) for an offline export or import.
fn open_offline(data_dir: &Path) -> anyhow::Result<Host> {
    Host::open(HostConfig {
        data_dir: data_dir.to_path_buf(),
        snapshots: SnapshotPolicy::OFF,
        ..HostConfig::default()
    })
    .with_context(|| {
        format!(
            "opening {} (is the host still running?)",
            data_dir.display()
        )
    })
}

/// `keel snapshot`.
pub(super) fn snapshot(client: &ClientArgs, plugin: &str, json: bool) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(format!("snapshot {plugin}"), 0);
    let info = call_json(
        client,
        Some(Vec::new()),
        &format!("/v1/plugins/{plugin}/snapshots"),
    )?;
    progress.finish("written");
    print(json, &info, |s| {
        format!(
            "snapshot of {plugin} at sequence {}: {} rows, {} bytes, state {}, {}",
            text(s, "sequence"),
            text(s, "rows"),
            text(s, "bytes"),
            short(s, "state_hash"),
            text(s, "path")
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `keel snapshots`.
pub(super) fn list_snapshots(
    client: &ClientArgs,
    plugin: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let list = call_json(client, None, &format!("/v1/plugins/{plugin}/snapshots"))?;
    if json {
        print(true, &list, |_| String::new());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>12}  {:23}  {:>12}  {:>10}  {:16}  {:16}  reason",
        "sequence", "taken (UTC)", "bytes", "rows", "state hash", "module"
    );
    for s in list.as_array().into_iter().flatten() {
        println!(
            "{:>12}  {:23}  {:>12}  {:>10}  {:16}  {:16}  {}",
            text(s, "sequence"),
            format_ms(s["created_ms"].as_u64().unwrap_or_default()),
            text(s, "bytes"),
            text(s, "rows"),
            short(s, "state_hash"),
            short(s, "module_hash"),
            text(s, "reason"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `keel restore`.
pub(super) fn restore(
    client: &ClientArgs,
    plugin: &str,
    snapshot: Option<u64>,
    to_sequence: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = match (snapshot, to_sequence) {
        (Some(s), _) => format!("?snapshot={s}"),
        (_, Some(n)) => format!("?to_sequence={n}"),
        _ => String::new(),
    };
    let progress = Progress::new(format!("restore {plugin}"), 0);
    let report = call_json(
        client,
        Some(Vec::new()),
        &format!("/v1/plugins/{plugin}/restore{query}"),
    )?;
    progress.finish("done");
    print(json, &report, |r| {
        format!(
            "{plugin} has the state of sequence {} again (snapshot {} + {} entries replayed), \
             journaled as sequence {}; state {}; undo with `keel restore {plugin} --to-sequence {}`",
            text(r, "restored_to"),
            text(r, "from_snapshot"),
            text(r, "replayed"),
            text(r, "sequence"),
            short(r, "state_hash"),
            text(r, "undo_to_sequence"),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Counts rows and decoded rows of an export stream while copying it.
struct ExportCopy {
    rows: u64,
    decoded: u64,
    header: Option<Value>,
    ended: bool,
}

impl ExportCopy {
    fn line(&mut self, line: &str, progress: &mut Progress) -> anyhow::Result<()> {
        if self.header.is_none() {
            let header: Value = serde_json::from_str(line).context("the export's header")?;
            progress.set_total(header["rows"].as_u64().unwrap_or(0));
            self.header = Some(header);
        } else if line.starts_with("{\"keel_export_end\"") {
            self.ended = true;
        } else {
            self.rows += 1;
            if !line.contains("\"key_base64\"") {
                self.decoded += 1;
            }
            if self.rows.is_multiple_of(1024) {
                progress.update(self.rows);
            }
        }
        Ok(())
    }
}

/// `keel export`.
pub(super) fn export(
    target: &TransferArgs,
    plugin: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (client, json) = (&target.client, target.json);
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{plugin}.jsonl")));
    let file =
        std::fs::File::create(&output).with_context(|| format!("creating {}", output.display()))?;
    let mut out = BufWriter::new(file);
    let mut progress = Progress::new(format!("export {plugin}"), 0);
    let summary = match &target.data_dir {
        Some(dir) => {
            let host = open_offline(dir)?;
            let result = host.export(plugin, &mut out, &mut |done, total| {
                progress.set_total(total);
                progress.update(done);
            });
            host.shutdown();
            serde_json::to_value(result?)?
        }
        None => {
            let (agent, auth) = agent(client)?;
            let url = format!(
                "{}/v1/plugins/{plugin}/export",
                client.addr.trim_end_matches('/')
            );
            let mut req = agent.get(&url);
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            let response = req.call().with_context(|| format!("connecting to {url}"))?;
            if !response.status().is_success() {
                return finish(response);
            }
            let reader = BufReader::new(
                response
                    .into_body()
                    .into_with_config()
                    .limit(u64::MAX)
                    .reader(),
            );
            let mut copy = ExportCopy {
                rows: 0,
                decoded: 0,
                header: None,
                ended: false,
            };
            for line in reader.lines() {
                let line = line.context("reading the export (the host cut it short?)")?;
                copy.line(&line, &mut progress)?;
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            anyhow::ensure!(
                copy.ended,
                "the export ended without its trailer: the host failed mid-way (see its log); {} is incomplete",
                output.display()
            );
            let header = copy.header.unwrap_or_default();
            serde_json::json!({
                "plugin": plugin,
                "sequence": header["sequence"],
                "rows": copy.rows,
                "decoded_rows": copy.decoded,
                "state_hash": header["state_hash"],
            })
        }
    };
    out.flush()?;
    progress.finish("written");
    let mut summary = summary;
    summary["file"] = Value::String(output.display().to_string());
    print(json, &summary, |s| {
        format!(
            "{} at sequence {}: {} rows ({} decoded) to {}; state {}",
            text(s, "plugin"),
            text(s, "sequence"),
            text(s, "rows"),
            text(s, "decoded_rows"),
            text(s, "file"),
            short(s, "state_hash"),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `keel import`.
pub(super) fn import(
    target: &TransferArgs,
    file: &Path,
    component: Option<PathBuf>,
    accept_changes: bool,
) -> anyhow::Result<ExitCode> {
    let (client, json) = (&target.client, target.json);
    let component = component
        .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let mut progress = Progress::new(format!("import {}", file.display()), 0);
    let summary = match &target.data_dir {
        Some(dir) => {
            let host = open_offline(dir)?;
            let result = (|| {
                if let Some(bytes) = &component {
                    host.store_module(bytes)?;
                }
                let input = BufReader::new(
                    std::fs::File::open(file)
                        .with_context(|| format!("opening {}", file.display()))?,
                );
                Ok::<_, anyhow::Error>(host.import(input, accept_changes, &mut |done, total| {
                    progress.set_total(total);
                    progress.update(done);
                })?)
            })();
            host.shutdown();
            serde_json::to_value(result?)?
        }
        None => {
            if let Some(bytes) = component {
                call_json(client, Some(bytes), "/v1/modules")?;
            }
            let body =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            call_json(
                client,
                Some(body),
                &format!("/v1/import?accept_changes={accept_changes}"),
            )?
        }
    };
    progress.finish("imported");
    print(json, &summary, |s| {
        format!(
            "plugin {} created at sequence {} with {} rows; state {}",
            text(s, "plugin"),
            text(s, "sequence"),
            text(s, "rows"),
            short(s, "state_hash"),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `keel verify`.
pub(super) fn verify(
    data_dir: PathBuf,
    cache_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let db = Db::open(&data_dir.join("keel.redb"), Durability::Immediate).with_context(|| {
        format!(
            "opening {} (is the host still running?)",
            data_dir.display()
        )
    })?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    // The host's own compiled components.
    let cache = cache_dir.unwrap_or_else(|| data_dir.join("cache"));
    let store = crate::snapshot::SnapshotStore::new(&data_dir);
    let mut bar: Option<(String, Progress)> = None;
    let results = crate::replay::verify(
        &db,
        Some(&store),
        scratch.path(),
        &cache,
        |plugin, done, total| {
            if bar.as_ref().is_none_or(|(p, _)| p != plugin) {
                if let Some((_, b)) = bar.take() {
                    b.finish("replayed");
                }
                bar = Some((
                    plugin.to_owned(),
                    Progress::new(format!("verify {plugin}"), total),
                ));
            }
            if let Some((_, b)) = &mut bar {
                b.update(done);
            }
        },
    )?;
    if let Some((_, b)) = bar.take() {
        b.finish("replayed");
    }
    let ok = results.iter().all(|v| v.ok());
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for v in &results {
            let verdict = if v.ok() { "OK" } else { "MISMATCH" };
            println!(
                "{verdict:8} {:16} entries {:>9}  stored {}  rows {}  replayed {}",
                v.plugin,
                v.entries,
                &v.stored_hash[..16],
                &v.rows_hash[..16],
                &v.replayed_hash[..16]
            );
            if !v.response_mismatches.is_empty() {
                println!(
                    "         responses differ at sequences {:?}",
                    v.response_mismatches
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `keel deploy --dry-run`.
pub(super) fn dry_run(
    client: &ClientArgs,
    component: Vec<u8>,
    last: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = match last {
        Some(n) => format!("?dry_run=true&last={n}"),
        None => "?dry_run=true".to_owned(),
    };
    let progress = Progress::new("dry run", 0);
    let report = call_json(client, Some(component), &format!("/v1/plugins{query}"))?;
    progress.finish("done");
    if json {
        print(true, &report, |_| String::new());
    } else {
        println!(
            "{}: {} commands replayed from sequence {}: {} identical, {} different ({} rows written by migrate; live copy diverged from the journal {} times)",
            text(&report, "plugin"),
            text(&report, "replayed"),
            text(&report, "from_sequence"),
            text(&report, "identical"),
            text(&report, "different"),
            text(&report, "migrate_rows_written"),
            text(&report, "live_diverged_from_journal"),
        );
        if let Some(stop) = report["stopped_at"].as_str() {
            println!("stopped at {stop}");
        }
        for d in report["first_differences"].as_array().into_iter().flatten() {
            println!(
                "--- sequence {}: {}",
                text(d, "sequence"),
                text(d, "command")
            );
            println!("    live:      {}", d["live"]);
            println!("    candidate: {}", d["candidate"]);
            for row in d["rows"].as_array().into_iter().flatten() {
                println!(
                    "    row {} {}: live {} / candidate {}",
                    text(row, "table"),
                    row["key"],
                    row["live"],
                    row["candidate"]
                );
            }
        }
    }
    Ok(if report["different"].as_u64() == Some(0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `keel rollback --undo-upgrade`.
pub(super) fn undo_upgrade(
    client: &ClientArgs,
    plugin: &str,
    upgrade: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let query = upgrade.map_or_else(String::new, |u| format!("?upgrade={u}"));
    let progress = Progress::new(format!("undo the upgrade of {plugin}"), 0);
    let report = call_json(
        client,
        Some(Vec::new()),
        &format!("/v1/plugins/{plugin}/undo-upgrade{query}"),
    )?;
    progress.finish("done");
    print(json, &report, |r| {
        let mut out = format!(
            "{plugin}: the upgrade at sequence {} is undone; version {} is active again, {} commands ran again on it, {} answer differently now (journaled as sequence {}; state {}; undo with `keel restore {plugin} --to-sequence {}`)",
            text(r, "upgrade_sequence"),
            text(r, "version"),
            text(r, "replayed"),
            text(r, "responses_changed"),
            text(r, "sequence"),
            short(r, "state_hash"),
            text(r, "undo_to_sequence"),
        );
        for c in r["changes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  sequence {}: told {} / now {}",
                text(c, "sequence"),
                text(c, "told"),
                text(c, "now")
            ));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}

/// Opens a stopped host's database and finds `plugin`'s record.
pub(super) fn open_stopped(
    data_dir: &Path,
    plugin: &str,
) -> anyhow::Result<(Db, crate::storage::PluginRecord)> {
    let db = Db::open(&data_dir.join("keel.redb"), Durability::Immediate).with_context(|| {
        format!(
            "opening {} (is the host still running?)",
            data_dir.display()
        )
    })?;
    let record = db
        .plugins()?
        .into_iter()
        .find(|r| r.name == plugin)
        .with_context(|| format!("no plugin named {plugin:?} in {}", data_dir.display()))?;
    Ok((db, record))
}

/// `keel journal export`.
pub(super) fn journal_export(
    data_dir: &Path,
    plugin: &str,
    from: u64,
    to: Option<u64>,
    output: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{plugin}.fixture.jsonl")));
    let (db, record) = open_stopped(data_dir, plugin)?;
    let store = crate::snapshot::SnapshotStore::new(data_dir);
    let source = crate::replay::Source {
        db: Some(&db),
        archive_root: data_dir.join("archive"),
        snapshots: Some(&store),
        cache_dir: data_dir.join("cache"),
    };
    let progress = Progress::new(format!("journal export {plugin}"), 0);
    let mut out = BufWriter::new(
        std::fs::File::create(&output).with_context(|| format!("creating {}", output.display()))?,
    );
    let summary = crate::fixture::write_fixture(
        &source,
        &record,
        from,
        to.unwrap_or(record.last_sequence),
        &mut out,
    )?;
    progress.finish("written");
    let mut value = serde_json::to_value(&summary)?;
    value["file"] = Value::String(output.display().to_string());
    print(json, &value, |s| {
        format!(
            "{}: {} commands ({}..={}) to {}{}",
            text(s, "plugin"),
            text(s, "commands"),
            text(s, "from"),
            text(s, "to"),
            text(s, "file"),
            s["ended_at"]
                .as_str()
                .map(|e| format!("; ended at {e}"))
                .unwrap_or_default()
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `keel recover`.
pub(super) fn recover(
    data_dir: PathBuf,
    mode: crate::recover::RecoverMode,
    cache_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cache = cache_dir.unwrap_or_else(|| data_dir.join("cache"));
    let mut bar: Option<(String, Progress)> = None;
    let report = crate::recover::recover(&data_dir, &cache, mode, &mut |plugin, done, total| {
        if bar.as_ref().is_none_or(|(p, _)| p != plugin) {
            if let Some((_, b)) = bar.take() {
                b.finish("replayed");
            }
            bar = Some((
                plugin.to_owned(),
                Progress::new(format!("recover {plugin}"), total),
            ));
        }
        if let Some((_, b)) = &mut bar {
            b.update(done);
        }
    })?;
    if let Some((_, b)) = bar.take() {
        b.finish("replayed");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("database: {}", report.database);
        for p in &report.plugins {
            println!(
                "{:8} {:16} from snapshot {:>10} + {:>9} replayed = sequence {:>10}  {}",
                if p.ok { "OK" } else { "FAILED" },
                p.plugin,
                p.from_snapshot,
                p.replayed,
                p.recovered_to,
                p.check
            );
            if let Some(lost) = &p.lost {
                println!("         NOT recovered: {lost}");
            }
            for d in &p.damaged_snapshots {
                println!("         skipped a damaged snapshot: {d}");
            }
        }
        match &report.previous_database {
            Some(old) => println!("the new database is in place; the old one is {old}"),
            None if report.ok => println!("the new database is in place"),
            None => println!("nothing was changed: not every plugin could be recovered"),
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub(super) fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::format_ms;

    #[test]
    fn times_format_as_utc_dates() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_ms(1_796_083_199_123), "2026-11-30 23:59:59.123");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
