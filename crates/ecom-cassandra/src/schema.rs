//! Applying `schema.cql` idempotently, to the default or to another keyspace.

use std::time::Duration;

use scylla::statement::Statement;

use crate::config::{DEFAULT_KEYSPACE, validate_keyspace};
use crate::{CassandraConfig, CassandraError};

/// The committed schema (repository root `schema.cql`), compiled in.
pub const SCHEMA_CQL: &str = include_str!("../../../schema.cql");

/// Server-side DDL can be slow (schema migrations go to every node).
const DDL_TIMEOUT: Duration = Duration::from_secs(120);

/// Splits CQL text into statements and renames the keyspace.
///
/// Drops `--`, `//` and `/* */` comments, splits on `;` outside string
/// literals and quoted identifiers, and replaces every bare identifier
/// token `ecom_store` with `keyspace` (which must pass
/// [`validate_keyspace`]). Empty statements are dropped.
pub fn schema_statements(schema_text: &str, keyspace: &str) -> Result<Vec<String>, CassandraError> {
    validate_keyspace(keyspace)?;
    let chars: Vec<char> = schema_text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        match c {
            '-' if at(i + 1) == Some('-') => i = skip_line(&chars, i),
            '/' if at(i + 1) == Some('/') => i = skip_line(&chars, i),
            '/' if at(i + 1) == Some('*') => {
                i += 2;
                while i < chars.len() && !(at(i) == Some('*') && at(i + 1) == Some('/')) {
                    i += 1;
                }
                i += 2;
                cur.push(' ');
            }
            '\'' | '"' => {
                // A doubled quote inside is an escaped quote: it reads as the
                // end of one literal and the start of the next, which is fine.
                cur.push(c);
                i += 1;
                while let Some(d) = at(i) {
                    cur.push(d);
                    i += 1;
                    if d == c {
                        break;
                    }
                }
            }
            ';' => {
                push_statement(&mut out, &cur);
                cur.clear();
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let start = i;
                while at(i).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_') {
                    i += 1;
                }
                let token: String = chars[start..i].iter().collect();
                if token == DEFAULT_KEYSPACE {
                    cur.push_str(keyspace);
                } else {
                    cur.push_str(&token);
                }
            }
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
    push_statement(&mut out, &cur);
    Ok(out)
}

fn skip_line(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i] != '\n' {
        i += 1;
    }
    i
}

fn push_statement(out: &mut Vec<String>, s: &str) {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if !s.is_empty() {
        out.push(s);
    }
}

/// Applies `schema_text` (normally [`SCHEMA_CQL`]) to the cluster, with the
/// keyspace renamed to `cfg.keyspace`, then waits for schema agreement.
///
/// Idempotent as long as every statement is `IF NOT EXISTS`, as in
/// `schema.cql`. It never alters existing tables. The statement text comes
/// from the committed file, never from user input; the only substitution is
/// the validated keyspace identifier.
pub async fn apply_schema(cfg: &CassandraConfig, schema_text: &str) -> Result<(), CassandraError> {
    let statements = schema_statements(schema_text, &cfg.keyspace)?;
    let session = crate::session::open_session(cfg).await?;
    for text in statements {
        tracing::debug!(statement = %text, "applying schema statement");
        let mut st = Statement::new(text.clone());
        st.set_request_timeout(Some(DDL_TIMEOUT));
        st.set_is_idempotent(true);
        session
            .query_unpaged(st, ())
            .await
            .map_err(|source| CassandraError::Request {
                what: format!("applying `{text}`"),
                source: Box::new(source),
            })?;
    }
    session.await_schema_agreement().await.map_err(Box::new)?;
    tracing::info!(keyspace = %cfg.keyspace, "Cassandra schema applied");
    Ok(())
}

/// Drops `cfg.keyspace` and everything in it. For tests and tooling only.
pub async fn drop_keyspace(cfg: &CassandraConfig) -> Result<(), CassandraError> {
    validate_keyspace(&cfg.keyspace)?;
    let session = crate::session::open_session(cfg).await?;
    let text = format!("DROP KEYSPACE IF EXISTS {}", cfg.keyspace);
    let mut st = Statement::new(text.clone());
    st.set_request_timeout(Some(DDL_TIMEOUT));
    session
        .query_unpaged(st, ())
        .await
        .map_err(|source| CassandraError::Request {
            what: format!("running `{text}`"),
            source: Box::new(source),
        })?;
    session.await_schema_agreement().await.map_err(Box::new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_splits_into_keyspace_four_tables_and_the_queue_settings() {
        let st = schema_statements(SCHEMA_CQL, "ecom_test_1").unwrap();
        assert_eq!(st.len(), 6, "{st:#?}");
        assert!(st[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ecom_test_1 WITH replication"));
        assert!(
            st[5].starts_with("ALTER TABLE ecom_test_1.dlq_payments WITH gc_grace_seconds = 10800"),
            "{}",
            st[5]
        );
        for (s, table) in st[1..5].iter().zip([
            "order_state",
            "orders_payments_facts",
            "duplicate_orders",
            "dlq_payments",
        ]) {
            assert!(
                s.starts_with(&format!("CREATE TABLE IF NOT EXISTS ecom_test_1.{table} (")),
                "{s}"
            );
        }
        assert!(
            st.iter()
                .all(|s| !s.contains("ecom_store") && !s.contains("--"))
        );
    }

    #[test]
    fn comments_and_literals_are_respected() {
        let text = "-- drop ecom_store; nope\nCREATE x.ecom_store_y WITH a = 'ecom_store; ''q''' /* ecom_store; */ AND ecom_store.t; // tail ecom_store\n;";
        let st = schema_statements(text, "ks").unwrap();
        assert_eq!(
            st,
            vec!["CREATE x.ecom_store_y WITH a = 'ecom_store; ''q''' AND ks.t"]
        );
    }

    #[test]
    fn invalid_keyspace_names_are_refused() {
        for bad in ["", "Ecom", "1abc", "a-b", "a;drop", &"a".repeat(49)] {
            assert!(schema_statements(SCHEMA_CQL, bad).is_err(), "{bad:?}");
        }
    }
}
