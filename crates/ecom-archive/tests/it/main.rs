//! Integration tests of ecom-archive against a real `ecom_log::Log` in a
//! temporary directory, each run on a local directory and on an in-memory
//! object store: one test binary, one module per concern.

mod damage;
mod readable;
mod round_trip;
mod sealing;
mod support;
