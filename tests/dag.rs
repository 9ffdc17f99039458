//! Component-level tests of the dag plugin (to be written with its issue).
