use ecom_log::{Log, LogError, LogOptions};

use crate::support::open;

#[test]
fn second_open_of_a_locked_directory_names_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    let LogError::Locked { dir: locked, pid } = &err else {
        panic!("expected Locked, got {err}");
    };
    assert_eq!(locked, dir.path());
    assert_eq!(*pid, Some(std::process::id()));
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("process {}", std::process::id())),
        "{message}"
    );
    assert!(err.is_retryable());

    // A clone is the way to share; dropping the last one releases the lock.
    let clone = log.clone();
    drop(log);
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(LogError::Locked { .. })
    ));
    drop(clone);
    let reopened = open(dir.path());
    assert_eq!(reopened.next_seq(), 0);
}
