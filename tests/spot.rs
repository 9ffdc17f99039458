//! Component-level tests of the spot plugin (to be written with its issue).
