//! Who may call what: principals, their roles and their bearer tokens.
//!
//! The configuration names principals (`[[principal]]` in `keel.toml`),
//! each with one or more token hashes and roles:
//!
//! | role | may |
//! |---|---|
//! | `admin` | deploy, roll back, and every administrative route added later |
//! | `client` | send commands and queries (to every plugin, or to those `plugins` names) |
//! | `operator` | what `client` may; plugins see the role and trust it with operator actions |
//!
//! Every authenticated principal may also read `/v1/status` and
//! `/v1/plugins`. A request's credential is `Authorization: Bearer <token>`.
//!
//! **Hashing.** The configuration holds only the SHA-256 of each token
//! (hex), so it can be shown or committed without leaking a secret;
//! `keel hash-token` prints the hash of a token read from stdin (the same
//! as `printf %s "$TOKEN" | sha256sum`). Tokens are meant to be long random
//! strings (32 bytes from a CSPRNG, e.g. `openssl rand -hex 32`), so a fast
//! hash is enough: a slow password hash only matters for guessable secrets.
//!
//! **Constant time.** The hash of the presented token is compared with
//! every configured hash, all of them, with
//! [`constant_time_eq::constant_time_eq_32`] (the `constant_time_eq`
//! crate, which blake3 also uses), so neither the position of the first
//! differing byte nor which principal matched shows in the timing.
//!
//! With no principal configured the host is *unauthenticated*: every
//! request is served with no principal, and the host refuses to listen on
//! anything but a loopback address ([`Access::check_listen`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::PrincipalConfig;

/// What a principal may do (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Deploys, rollbacks and every administrative route.
    Admin,
    /// Commands and queries.
    Client,
    /// A client that plugins trust with operator actions.
    Operator,
}

impl Role {
    /// The role's name as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }
}

/// The authenticated caller of a request; the HTTP layer puts it in the
/// request's extensions (absent when the host is unauthenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// The principal's configured name.
    pub(crate) name: String,
    /// Its roles, sorted, without duplicates.
    pub(crate) roles: Vec<Role>,
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any authenticated principal (host status and listings).
    Any,
    /// Any authenticated principal allowed the plugin named in the path.
    AnyForPlugin,
    /// `client` or `operator`, allowed the plugin named in the path.
    Client,
    /// `admin`.
    Admin,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No credential, a malformed one, or one no principal holds (401).
    Unauthenticated(&'static str),
    /// A valid credential without the right (403).
    Forbidden(String),
}

/// A SHA-256 token hash.
pub type TokenHash = [u8; 32];

/// The SHA-256 of `token`'s bytes.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two token hashes in constant time
/// ([`constant_time_eq::constant_time_eq_32`]).
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    constant_time_eq::constant_time_eq_32(a, b)
}

/// Lowercase hex of a hash, as the configuration holds it.
pub fn hash_hex(hash: &TokenHash) -> String {
    crate::state_hash::hex(hash)
}

fn parse_hash(text: &str) -> anyhow::Result<TokenHash> {
    let text = text.trim();
    anyhow::ensure!(
        text.len() == 64,
        "a token hash is 64 hex digits (SHA-256), found {} characters; `keel hash-token` prints one",
        text.len()
    );
    // ASCII first: slicing a multi-byte character in half would panic.
    anyhow::ensure!(text.is_ascii(), "a token hash holds only hex digits");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| anyhow::anyhow!("a token hash holds only hex digits"))?;
    }
    Ok(out)
}

/// One configured principal, ready to match.
#[derive(Debug)]
struct Entry {
    principal: Principal,
    hashes: Vec<TokenHash>,
    /// The plugins a client may use; `None`: every plugin.
    plugins: Option<BTreeSet<String>>,
}

/// The principals of a host and the rules that apply to them.
#[derive(Debug, Default)]
pub struct Access {
    entries: Vec<Entry>,
}

impl Access {
    /// Builds the principals from the configuration, reading every
    /// `token_sha256_file`. Refuses duplicate names or hashes, principals
    /// without a hash or a role, and `plugins` on an admin (an admin acts
    /// on every plugin).
    pub fn from_config(principals: &[PrincipalConfig]) -> anyhow::Result<Access> {
        let mut entries: Vec<Entry> = Vec::new();
        for p in principals {
            let what = format!("principal {:?}", p.name);
            anyhow::ensure!(!p.name.is_empty(), "a principal needs a non-empty `name`");
            anyhow::ensure!(
                entries.iter().all(|e| e.principal.name != p.name),
                "{what} is configured twice"
            );
            let mut hashes = Vec::new();
            if let Some(h) = &p.token_sha256 {
                hashes.push(parse_hash(h).with_context(|| format!("{what}: token_sha256"))?);
            }
            if let Some(path) = &p.token_sha256_file {
                hashes.extend(
                    read_hash_file(path).with_context(|| format!("{what}: token_sha256_file"))?,
                );
            }
            anyhow::ensure!(
                !hashes.is_empty(),
                "{what} has no credential: set `token_sha256` or `token_sha256_file` (see `keel hash-token`)"
            );
            for h in &hashes {
                anyhow::ensure!(
                    entries.iter().all(|e| !e.hashes.contains(h)),
                    "{what} shares a token hash with another principal"
                );
            }
            let roles: BTreeSet<Role> = p.roles.iter().copied().collect();
            anyhow::ensure!(
                !roles.is_empty(),
                "{what} has no role: give it `roles = [\"client\"]`, `[\"operator\"]` or `[\"admin\"]`"
            );
            if p.plugins.is_some() {
                anyhow::ensure!(
                    !roles.contains(&Role::Admin),
                    "{what}: `plugins` limits client and operator principals; an admin acts on every plugin"
                );
            }
            entries.push(Entry {
                principal: Principal {
                    name: p.name.clone(),
                    roles: roles.into_iter().collect(),
                },
                hashes,
                plugins: p.plugins.as_ref().map(|v| v.iter().cloned().collect()),
            });
        }
        Ok(Access { entries })
    }

    /// True when no principal is configured: every request is served, and
    /// only on a loopback address.
    pub fn is_unauthenticated(&self) -> bool {
        self.entries.is_empty()
    }

    /// How the host authenticates, for `/v1/status` and the start-up line.
    pub fn describe(&self) -> String {
        if self.is_unauthenticated() {
            "unauthenticated (no principals configured; loopback only)".to_owned()
        } else {
            format!("bearer tokens ({} principals)", self.entries.len())
        }
    }

    /// Refuses to serve an unauthenticated host on a non-loopback address.
    pub fn check_listen(&self, listen: SocketAddr) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.is_unauthenticated() || listen.ip().is_loopback(),
            "refusing to listen on {listen} without authentication: no [[principal]] is configured, \
             so anyone who reaches the port could deploy and send commands; configure principals \
             (see `keel hash-token`) or listen on a loopback address such as 127.0.0.1"
        );
        Ok(())
    }

    fn authenticate_entry(&self, headers: &HeaderMap) -> Result<Option<&Entry>, Denied> {
        if self.is_unauthenticated() {
            return Ok(None);
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Denied::Unauthenticated(
                "this host requires `Authorization: Bearer <token>`",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Unauthenticated(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        let given = hash_token(token);
        // Every hash is compared, whatever matched earlier.
        let mut found = None;
        for entry in &self.entries {
            for hash in &entry.hashes {
                if hashes_equal(&given, hash) {
                    found = Some(entry);
                }
            }
        }
        found
            .map(Some)
            .ok_or(Denied::Unauthenticated("the bearer token is not valid"))
    }

    /// Checks that `headers` carry a credential meeting `need` (for
    /// `plugin`, when the route names one); returns the principal.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        need: Need,
        plugin: Option<&str>,
    ) -> Result<Option<Principal>, Denied> {
        let Some(entry) = self.authenticate_entry(headers)? else {
            return Ok(None);
        };
        let who = &entry.principal;
        let has = |r: Role| who.roles.contains(&r);
        let plugin_allowed = || match (&entry.plugins, plugin) {
            (Some(allowed), Some(p)) => allowed.contains(p),
            _ => true,
        };
        let refuse =
            |why: String| Err(Denied::Forbidden(format!("principal {:?} {why}", who.name)));
        match need {
            Need::Admin if !has(Role::Admin) => {
                return refuse("lacks the `admin` role this route requires".into());
            }
            Need::Client if !has(Role::Client) && !has(Role::Operator) => {
                return refuse(
                    "lacks the `client` (or `operator`) role that commands and queries require"
                        .into(),
                );
            }
            Need::Client | Need::AnyForPlugin if !plugin_allowed() => {
                return refuse(format!(
                    "may not use plugin {:?}",
                    plugin.unwrap_or_default()
                ));
            }
            _ => {}
        }
        Ok(Some(who.clone()))
    }
}

/// Reads a file of token hashes: one hex SHA-256 per line; blank lines and
/// lines starting with `#` are ignored.
fn read_hash_file(path: &Path) -> anyhow::Result<Vec<TokenHash>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse_hash(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn principal(
        name: &str,
        token: &str,
        roles: &[Role],
        plugins: Option<&[&str]>,
    ) -> PrincipalConfig {
        PrincipalConfig {
            name: name.into(),
            token_sha256: Some(hash_hex(&hash_token(token))),
            token_sha256_file: None,
            roles: roles.to_vec(),
            plugins: plugins.map(|p| p.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn the_comparison_tells_equal_from_unequal_tokens() {
        let a = hash_token("correct horse battery staple 0123456789abcdef");
        let same = hash_token("correct horse battery staple 0123456789abcdef");
        // Same length, one byte off; and a different length.
        let off = hash_token("correct horse battery staple 0123456789abcdeg");
        let short = hash_token("correct");
        assert!(hashes_equal(&a, &same));
        assert!(!hashes_equal(&a, &off));
        assert!(!hashes_equal(&a, &short));
    }

    #[test]
    fn the_hash_is_plain_sha256_hex() {
        // `printf %s abc | sha256sum`
        assert_eq!(
            hash_hex(&hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_token_hash_with_multi_byte_characters_is_refused_not_a_panic() {
        // 64 bytes, but "é" straddles the boundary of the first hex pair.
        let text = format!("a\u{e9}{}", "0".repeat(61));
        assert_eq!(text.len(), 64);
        let err = parse_hash(&text).unwrap_err().to_string();
        assert!(err.contains("only hex digits"), "{err}");
        assert!(parse_hash(&"0".repeat(64)).is_ok());
    }

    #[test]
    fn roles_and_plugins_decide() {
        let access = Access::from_config(&[
            principal("root", "t-admin", &[Role::Admin], None),
            principal("alice", "t-alice", &[Role::Client], Some(&["spot"])),
            principal("op", "t-op", &[Role::Operator], None),
        ])
        .unwrap();
        let name = |r: Result<Option<Principal>, Denied>| r.map(|p| p.unwrap().name);
        assert_eq!(
            name(access.check(&bearer("t-admin"), Need::Admin, None)),
            Ok("root".into())
        );
        assert!(matches!(
            access.check(&bearer("t-alice"), Need::Admin, None),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            name(access.check(&bearer("t-alice"), Need::Client, Some("spot"))),
            Ok("alice".into())
        );
        assert!(matches!(
            access.check(&bearer("t-alice"), Need::Client, Some("perp")),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            access.check(&bearer("t-admin"), Need::Client, Some("spot")),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            name(access.check(&bearer("t-op"), Need::Client, Some("perp"))),
            Ok("op".into())
        );
        assert!(matches!(
            access.check(&bearer("wrong"), Need::Any, None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            access.check(&HeaderMap::new(), Need::Any, None),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn an_unauthenticated_host_stays_on_loopback() {
        let open = Access::default();
        assert!(open.check_listen("127.0.0.1:7700".parse().unwrap()).is_ok());
        assert!(open.check_listen("[::1]:7700".parse().unwrap()).is_ok());
        let err = open
            .check_listen("0.0.0.0:7700".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("without authentication"), "{err}");
        assert_eq!(open.check(&HeaderMap::new(), Need::Admin, None), Ok(None));
    }

    #[test]
    fn bad_principals_are_refused_with_a_reason() {
        let mut p = principal("a", "t", &[Role::Admin], Some(&["spot"]));
        let err = Access::from_config(&[p.clone()]).unwrap_err().to_string();
        assert!(err.contains("admin acts on every plugin"), "{err}");
        p.plugins = None;
        p.token_sha256 = Some("abc".into());
        let err = format!("{:#}", Access::from_config(&[p]).unwrap_err());
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
