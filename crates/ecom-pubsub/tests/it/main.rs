//! Integration tests against a Pub/Sub server (the local emulator:
//! `scripts/pubsub-emulator.sh start`, then `eval "$(scripts/pubsub-emulator.sh env)"`).
//!
//! Without `PUBSUB_EMULATOR_HOST` the tests are skipped, unless `CI` or
//! `ECOM_REQUIRE_PUBSUB=1` is set, in which case they fail. Every test uses
//! its own project id, which keeps their topics apart on the emulator.

mod notifier;
mod source;
mod util;
