//! Integration tests of ecom-log: one test binary, one module per concern.
//!
//! `crash` re-runs this binary as a child process (see its module docs).

mod append;
mod checkpoint;
mod compact;
mod corruption;
mod crash;
mod dedup;
mod file_damage;
mod full_disk;
mod group_commit;
mod lock;
mod prune;
mod quarantine;
mod support;
mod upgrade;
