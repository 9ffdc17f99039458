//! Hot-swap tests (to be written).
