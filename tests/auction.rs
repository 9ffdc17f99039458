//! Component-level tests of the auction plugin (to be written with its issue).
