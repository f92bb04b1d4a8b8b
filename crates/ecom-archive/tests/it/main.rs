//! Integration tests of ecom-archive against a real `ecom_log::Log` in a
//! temporary directory, each run on a local directory, an in-memory object
//! store and, when `ECOM_OBJECT_STORE` names one (`scripts/fake-s3.sh`), a
//! fresh bucket of a real S3 server: one test binary, one module per
//! concern. Without the server the S3 runs are skipped, unless `CI` or
//! `ECOM_REQUIRE_OBJECT_STORE=1` is set: then they fail.

mod bucket;
mod damage;
mod readable;
mod round_trip;
mod sealing;
mod support;
