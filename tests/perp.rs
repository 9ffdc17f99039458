//! Component-level tests of the perp plugin (to be written with its issue).
