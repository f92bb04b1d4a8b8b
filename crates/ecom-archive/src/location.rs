//! Where an archive lives: the `archive` setting parsed, and the object
//! store it names built from the standard environment.
//!
//! Rules:
//! - A plain path or `file:///path` is a local directory (`LocalFileSystem`).
//! - `gs://bucket[/prefix]` is Google Cloud Storage, `s3://bucket[/prefix]`
//!   is S3 (or an S3-compatible server). The client is configured the way
//!   object_store's own builders read the environment (`from_env`: every
//!   `GOOGLE_*` respectively `AWS_*` variable they know), and the archive is
//!   put under `prefix` with `PrefixStore`, so the layout below the prefix is
//!   the same as in a local directory.
//! - Credentials must be configured explicitly. Without them object_store
//!   would fall back to the cloud's instance metadata server, which off a
//!   cloud VM hangs in retries for minutes before failing; we refuse at once
//!   and say what to set instead. (S3: setting `AWS_METADATA_ENDPOINT` is
//!   the explicit choice of instance credentials.)
//! - Nothing here prints a secret: errors name variables, never their values,
//!   and a URL with user information (`s3://key:secret@bucket`) is refused
//!   without being echoed.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;

use crate::error::ArchiveError;

/// A parsed `archive` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A bucket of an object store, and the prefix the archive lives under
    /// (empty: the bucket's root).
    Bucket {
        cloud: Cloud,
        bucket: String,
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    Gcs,
    S3,
}

impl Cloud {
    fn scheme(self) -> &'static str {
        match self {
            Cloud::Gcs => "gs",
            Cloud::S3 => "s3",
        }
    }

    /// The environment variables that configure credentials, as the error
    /// for missing ones lists them.
    fn credentials_help(self) -> &'static str {
        match self {
            Cloud::Gcs => {
                "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a service account \
                 key file (or GOOGLE_SERVICE_ACCOUNT_KEY to its JSON), or run \
                 `gcloud auth application-default login`"
            }
            Cloud::S3 => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for \
                 temporary credentials), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or \
                 AWS_METADATA_ENDPOINT to use the instance's role"
            }
        }
    }
}

impl Location {
    /// Parses the `archive` setting.
    pub(crate) fn parse(location: &str) -> Result<Location, ArchiveError> {
        let bad = |reason: &str| ArchiveError::BadLocation {
            location: redacted(location),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = location.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(location)));
        };
        let cloud = match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("a file:// URL takes an absolute path: file:///path"));
                }
                return Ok(Location::Local(PathBuf::from(rest)));
            }
            "gs" => Cloud::Gcs,
            "s3" => Cloud::S3,
            _ => {
                return Err(bad(
                    "unknown scheme; use a directory, file:///path, gs://bucket[/prefix] or s3://bucket[/prefix]",
                ));
            }
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(bad(
                "credentials do not go in the URL; give them in the environment",
            ));
        }
        if bucket.is_empty() {
            return Err(bad(
                "no bucket: use gs://bucket[/prefix] or s3://bucket[/prefix]",
            ));
        }
        // The rules both clouds share (GCS also allows '_' and dotted names
        // up to 222 characters; the store itself checks the rest).
        let valid_bucket = bucket.len() >= 3
            && bucket.len() <= 222
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !valid_bucket {
            return Err(bad(
                "not a bucket name: 3 or more lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains('?') || prefix.contains('#') {
            return Err(bad("a prefix has no query or fragment"));
        }
        if !prefix.is_empty() && Path::parse(prefix).is_err() {
            return Err(bad(
                "the prefix is not a plain object path (no empty, '.' or '..' segments)",
            ));
        }
        Ok(Location::Bucket {
            cloud,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// The object store of a bucket location, configured from the environment
/// (`env` is `std::env::var` but for tests).
pub(crate) fn bucket_store(
    cloud: Cloud,
    bucket: &str,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    let location = format!("{}://{bucket}/{prefix}", cloud.scheme());
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    let has_credentials = match cloud {
        Cloud::Gcs => {
            [
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "SERVICE_ACCOUNT",
            ]
            .iter()
            .any(|name| set(name))
                || env("GOOGLE_SKIP_SIGNATURE").is_some_and(|v| v == "true")
                // Where `gcloud auth application-default login` writes, and
                // object_store looks.
                || env("HOME").is_some_and(|home| {
                    std::path::Path::new(&home)
                        .join(".config/gcloud/application_default_credentials.json")
                        .is_file()
                })
        }
        Cloud::S3 => {
            (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
                || set("AWS_WEB_IDENTITY_TOKEN_FILE")
                || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                || set("AWS_METADATA_ENDPOINT")
                || env("AWS_SKIP_SIGNATURE").is_some_and(|v| v == "true")
        }
    };
    if !has_credentials {
        return Err(ArchiveError::MissingCredentials {
            location,
            help: cloud.credentials_help(),
        });
    }
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match cloud {
        Cloud::Gcs => GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map(|s| Arc::new(s) as _),
        Cloud::S3 => AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map(|s| Arc::new(s) as _),
    };
    let store = built.map_err(|source| ArchiveError::StoreConfig {
        location: location.clone(),
        source,
    })?;
    Ok(if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// The location as it may be shown: user information of a URL replaced.
fn redacted(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}/{path}"),
                None => location.to_string(),
            }
        }
        None => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(cloud: Cloud, bucket: &str, prefix: &str) -> Location {
        Location::Bucket {
            cloud,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn paths_file_urls_and_buckets_parse() {
        let parse = |s| Location::parse(s).unwrap();
        assert_eq!(
            parse("/var/archive"),
            Location::Local("/var/archive".into())
        );
        assert_eq!(parse("rel/dir"), Location::Local("rel/dir".into()));
        assert_eq!(parse("file:///var/a"), Location::Local("/var/a".into()));
        assert_eq!(parse("gs://my-bucket"), bucket(Cloud::Gcs, "my-bucket", ""));
        assert_eq!(
            parse("gs://my-bucket/ecom/prod/"),
            bucket(Cloud::Gcs, "my-bucket", "ecom/prod")
        );
        assert_eq!(
            parse("s3://logs.example/a"),
            bucket(Cloud::S3, "logs.example", "a")
        );
    }

    #[test]
    fn bad_locations_say_what_is_wrong_and_never_echo_credentials() {
        for (location, says) in [
            ("ftp://host/x", "unknown scheme"),
            ("gs://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            ("gs://Upper", "not a bucket name"),
            ("gs://ab", "not a bucket name"),
            ("s3://b_ucket-/x", "not a bucket name"),
            ("gs://bucket/a//b", "not a plain object path"),
            ("gs://bucket/a/../b", "not a plain object path"),
            ("file://relative", "absolute path"),
        ] {
            let err = Location::parse(location).unwrap_err().to_string();
            assert!(err.contains(says), "{location}: {err}");
        }
        let err = Location::parse("s3://AKIAKEY:hunter2secret@bucket/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("credentials do not go in the URL"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("AKIAKEY"),
            "{err}"
        );
    }

    #[test]
    fn missing_credentials_name_the_variables_to_set() {
        let nothing = |_: &str| None;
        for (cloud, names) in [
            (Cloud::Gcs, "GOOGLE_APPLICATION_CREDENTIALS"),
            (Cloud::S3, "AWS_ACCESS_KEY_ID"),
        ] {
            let err = bucket_store(cloud, "bucket", "p", &nothing).expect_err("no credentials");
            assert!(
                matches!(err, ArchiveError::MissingCredentials { .. }),
                "{err}"
            );
            assert!(err.to_string().contains(names), "{err}");
        }
        // A key id without its secret is not credentials either, and the
        // message does not show the id.
        let half = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "AKIASECRETID".to_string());
        let err = bucket_store(Cloud::S3, "bucket", "", &half).expect_err("half credentials");
        assert!(!err.to_string().contains("AKIASECRETID"), "{err}");
    }
}
