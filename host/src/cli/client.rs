//! The CLI's HTTP client side: requests to a running host, answers
//! printed as pretty JSON (or the error and a failing exit code).

use std::process::ExitCode;

use anyhow::Context as _;

use super::ClientArgs;

pub(super) fn agent(client: &ClientArgs) -> anyhow::Result<(ureq::Agent, Option<String>)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    Ok((agent, client.token()?.map(|t| format!("Bearer {t}"))))
}

pub(super) fn finish(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<ExitCode> {
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .context("reading the response")?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("HTTP {status}\n{pretty}");
        Ok(ExitCode::FAILURE)
    }
}

pub(super) fn client_get(client: &ClientArgs, path: &str) -> anyhow::Result<ExitCode> {
    let (agent, auth) = agent(client)?;
    let url = format!("{}{path}", client.addr.trim_end_matches('/'));
    let mut req = agent.get(&url);
    if let Some(auth) = &auth {
        req = req.header("Authorization", auth);
    }
    finish(req.call().with_context(|| format!("connecting to {url}"))?)
}

pub(super) fn client_post(
    client: &ClientArgs,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<ExitCode> {
    let (agent, auth) = agent(client)?;
    let url = format!("{}{path}", client.addr.trim_end_matches('/'));
    let mut req = agent.post(&url);
    if let Some(auth) = &auth {
        req = req.header("Authorization", auth);
    }
    finish(
        req.send(&body[..])
            .with_context(|| format!("connecting to {url}"))?,
    )
}

pub(super) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a request and returns the answer's JSON, or fails with the
/// host's error (status and message).
pub(super) fn call_json(
    client: &ClientArgs,
    post: Option<Vec<u8>>,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let (agent, auth) = agent(client)?;
    let url = format!("{}{path}", client.addr.trim_end_matches('/'));
    let response = match post {
        Some(body) => {
            let mut req = agent.post(&url);
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            req.send(&body[..])
        }
        None => {
            let mut req = agent.get(&url);
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            req.call()
        }
    };
    let mut response = response.with_context(|| format!("connecting to {url}"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .context("reading the response")?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("HTTP {status}: the answer is not JSON: {text}"))?;
    anyhow::ensure!(status.is_success(), "HTTP {status}: {value}");
    Ok(value)
}
