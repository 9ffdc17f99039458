//! Sealed WASI tests (to be written).
