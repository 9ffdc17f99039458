//! Compiled components cached on disk as precompiled artifacts, keyed by
//! the BLAKE3 of the component bytes under a directory named by the
//! engine's compatibility hash (wasmtime version + configuration), so an
//! artifact is only ever loaded into an engine that can run it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::limits::COMPONENT_SIZE_BYTES_MAX;
use crate::state_hash::hex;

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component: the file does not start with the wasm magic bytes")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build the plugin with the keel-guest SDK for wasm32-unknown-unknown (linked by wasm-component-ld) or wasm32-wasip2"
    )]
    CoreModule,
    /// Too large.
    #[error("component is {0} bytes, larger than the {COMPONENT_SIZE_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    /// wasmtime refused to compile it.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// It imports something this host does not provide.
    #[error(
        "component imports something this host does not provide (is it built for keel:plugin@0.1.0?): {0}"
    )]
    Imports(String),
    /// It does not export Keel's `guest` interface.
    #[error(
        "component does not export keel:plugin/guest@0.1.0 (a component of another world?): {0}"
    )]
    WrongWorld(String),
    /// The cache directory failed.
    #[error("component cache: {0}")]
    Cache(String),
}

pub(crate) struct ComponentCache {
    dir: PathBuf,
}

/// A `Hasher` whose output does not change between Rust releases (std's
/// `DefaultHasher` makes no such promise): the bytes `Hash` feeds it go
/// through BLAKE3. Names the cache directory, which must stay the same for
/// the same engine configuration across rebuilds of the host.
struct StableHasher(blake3::Hasher);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

impl ComponentCache {
    pub(crate) fn new(root: &Path, engine: &Engine) -> anyhow::Result<Self> {
        let mut hasher = StableHasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!(
            "wasmtime-{}-{:016x}",
            wasmtime_version(),
            hasher.finish()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating cache dir {}: {e}", dir.display()))?;
        Ok(Self { dir })
    }

    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        hash: &[u8; 32],
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        check_header(bytes)?;
        let path = self.dir.join(format!("{}.cwasm", hex(hash)));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (the directory name),
            // under a name that is the hash of its source; wasmtime also
            // checks the artifact's header before using it.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact")
                }
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        match component.serialize() {
            Ok(artifact) => {
                let tmp = path.with_extension("tmp");
                let written =
                    std::fs::write(&tmp, artifact).and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialize compiled component"),
        }
        Ok(component)
    }
}

fn wasmtime_version() -> &'static str {
    // The wasmtime version is pinned in Cargo.lock; the compatibility hash
    // covers it as well, this just makes directory names readable.
    "48"
}

/// Refuses bytes that are not a component, with a message that says why.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() > COMPONENT_SIZE_BYTES_MAX {
        return Err(LoadError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Layer field: 0 for core modules, 1 for components.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}
