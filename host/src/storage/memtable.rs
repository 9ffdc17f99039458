//! One plugin's in-memory state: the active layer (lent to the batch that
//! runs now), the frozen layers (shared with readers and the
//! checkpointer) and the redb snapshot they sit on. See [`super::layer`].
//!
//! Who touches it, and how long they wait:
//! - the plugin's batch takes the active layer at its start and returns it
//!   at its end ([`PluginLayers::take_active`], [`PluginLayers::return_active`]);
//! - a reader (a query, a journal read) waits at most for the batch in
//!   progress to return the active layer, then freezes it (an O(1) move)
//!   and reads the frozen stack without holding any lock;
//! - the checkpointer freezes the same way, *pins* the frozen layers it
//!   writes to redb, and after its durable commit drops them and moves the
//!   base to a redb snapshot that holds them.
//!
//! No lock is held while plugin code runs, and no plugin waits for
//! another plugin's batch.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::layer::Layer;
use super::read::{Base, ReadView};

/// Frozen layers beyond which the two newest unpinned ones are merged, so
/// that a point read checks a bounded number of maps.
const FROZEN_LAYERS_MAX: usize = 6;

/// One plugin's layers over redb.
pub(crate) struct PluginLayers {
    id: u32,
    inner: Mutex<Inner>,
    returned: Condvar,
}

struct Inner {
    /// `None` while a batch holds it.
    active: Option<Layer>,
    /// Oldest first.
    frozen: Vec<Arc<Layer>>,
    /// The first `pinned` frozen layers are being written by a checkpoint:
    /// they are not merged with later ones.
    pinned: usize,
    base: Arc<Base>,
}

impl Inner {
    /// Moves a non-empty active layer onto the frozen stack, merging the
    /// newest unpinned layers while there are too many.
    fn freeze(&mut self) {
        let active = self.active.as_mut().expect("freeze needs the active layer");
        if active.is_empty() {
            return;
        }
        self.frozen.push(Arc::new(std::mem::take(active)));
        while self.frozen.len() > FROZEN_LAYERS_MAX && self.frozen.len() - self.pinned >= 2 {
            let newer = self.frozen.pop().expect("two layers");
            let older = self.frozen.pop().expect("two layers");
            // In place when no reader holds the older layer any more.
            let mut merged = Arc::try_unwrap(older).unwrap_or_else(|shared| (*shared).clone());
            merged.absorb(&newer);
            self.frozen.push(Arc::new(merged));
        }
    }

    fn view(&self, plugin_id: u32) -> ReadView {
        ReadView::new(
            plugin_id,
            self.frozen.iter().rev().cloned().collect(),
            self.base.clone(),
        )
    }
}

impl PluginLayers {
    pub(crate) fn new(id: u32, base: Arc<Base>) -> Self {
        Self {
            id,
            inner: Mutex::new(Inner {
                active: Some(Layer::default()),
                frozen: Vec::new(),
                pinned: 0,
                base,
            }),
            returned: Condvar::new(),
        }
    }

    /// The plugin's id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no batch holds the active layer.
    fn lock_idle(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        while inner.active.is_none() {
            inner = self.returned.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        inner
    }

    /// Lends the active layer to a batch, with a view of everything below it.
    pub(crate) fn take_active(&self) -> (Layer, ReadView) {
        let mut inner = self.lock_idle();
        let active = inner.active.take().expect("idle");
        (active, inner.view(self.id))
    }

    /// Takes the active layer back from a batch.
    pub(crate) fn return_active(&self, layer: Layer) {
        let mut inner = self.lock();
        debug_assert!(inner.active.is_none(), "one batch at a time");
        inner.active = Some(layer);
        drop(inner);
        self.returned.notify_all();
    }

    /// A consistent view of everything committed (waits for the batch in
    /// progress, if any).
    pub(crate) fn view(&self) -> ReadView {
        let mut inner = self.lock_idle();
        inner.freeze();
        inner.view(self.id)
    }

    /// Freezes the active layer and pins every frozen layer for a
    /// checkpoint; returns them, oldest first.
    pub(crate) fn pin_for_checkpoint(&self) -> Vec<Arc<Layer>> {
        let mut inner = self.lock_idle();
        inner.freeze();
        inner.pinned = inner.frozen.len();
        inner.frozen.clone()
    }

    /// After a checkpoint's durable commit: drops the pinned layers, which
    /// `base` now holds.
    pub(crate) fn checkpointed(&self, base: Arc<Base>) {
        let mut inner = self.lock();
        let pinned = inner.pinned;
        inner.frozen.drain(..pinned);
        inner.pinned = 0;
        inner.base = base;
    }

    /// After a failed checkpoint: the pinned layers stay, unpinned.
    pub(crate) fn unpin(&self) {
        self.lock().pinned = 0;
    }

    /// Frozen layers and rows held in memory, for status.
    pub(crate) fn memory(&self) -> (usize, usize) {
        let inner = self.lock();
        let active = inner.active.as_ref().map_or(0, |l| l.bytes);
        (
            inner.frozen.len(),
            active + inner.frozen.iter().map(|l| l.bytes).sum::<usize>(),
        )
    }
}
