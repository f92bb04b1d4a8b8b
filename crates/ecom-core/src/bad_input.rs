//! A corpus of malformed messages, each with the topic it is published to
//! and a fragment of the reason it must be rejected with.
//!
//! One table, read top to bottom, shared by `decode`'s unit test (every
//! entry is rejected with its reason) and by the binary's end-to-end test
//! (`crates/ecom-pipeline/tests/it/bad_input.rs`: every entry published to
//! the Pub/Sub server, consumed by `ecom-pipeline run --source pubsub`,
//! quarantined, acknowledged, listed and counted, while good messages
//! around them land). Add a case here and both check it.

use crate::event::Topic;

/// One malformed message.
#[derive(Debug, Clone)]
pub struct BadInput {
    /// What is wrong with it, in a few words (unique).
    pub name: String,
    pub topic: Topic,
    pub data: Vec<u8>,
    /// A fragment of the rejection reason (`Rejection`'s text).
    pub reason: String,
}

/// A valid order; cases are edits of it.
pub const ORDER: &str = r#"{"order_id": 7, "customer_id": 3, "item": "Laptop", "quantity": 2, "price": 734.2183, "shipping_address": "1 Main St", "order_status": "Shipped", "creation_date": "2024-01-21"}"#;

/// A valid payment; cases are edits of it.
pub const PAYMENT: &str = r#"{"payment_id": 1007, "order_id": 7, "payment_method": "PayPal", "card_last_four": "0042", "payment_status": "Completed", "payment_datetime": "2024-01-21T25:01:30Z"}"#;

const ORDER_FIELDS: [&str; 8] = [
    "order_id",
    "customer_id",
    "item",
    "quantity",
    "price",
    "shipping_address",
    "order_status",
    "creation_date",
];
const PAYMENT_FIELDS: [&str; 6] = [
    "payment_id",
    "order_id",
    "payment_method",
    "card_last_four",
    "payment_status",
    "payment_datetime",
];

/// The size of the large payload: 5 MiB, under Pub/Sub's 10 MB message
/// limit.
pub const LARGE_PAYLOAD_BYTES: usize = 5 << 20;

/// `json` with the value of top-level `field` replaced by `value` (raw JSON).
fn with(json: &str, field: &str, value: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).expect("fixture is JSON");
    assert!(v.contains_key(field), "fixture has {field}");
    // Splice raw text so that values serde_json cannot represent (NaN,
    // integers beyond u64) can be written too.
    v.insert(field.to_string(), serde_json::Value::String("\u{1}".into()));
    let text = serde_json::to_string(&v).expect("serializes");
    text.replace("\"\\u0001\"", value).into_bytes()
}

fn without(json: &str, field: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).expect("fixture is JSON");
    assert!(v.remove(field).is_some(), "fixture has {field}");
    serde_json::to_vec(&v).expect("serializes")
}

/// The corpus. Names are unique; see the module docs.
pub fn corpus() -> Vec<BadInput> {
    use Topic::{Orders, Payments};
    let case = |name: &str, topic, data: Vec<u8>, reason: &str| BadInput {
        name: name.to_string(),
        topic,
        data,
        reason: reason.to_string(),
    };
    let o = |field, value| with(ORDER, field, value);
    let p = |field, value| with(PAYMENT, field, value);
    let mut c = vec![
        case(
            "not JSON",
            Orders,
            b"order 7, 2 laptops".to_vec(),
            "malformed orders_data message: expected value",
        ),
        case("empty payload", Payments, Vec::new(), "EOF while parsing"),
        case(
            "whitespace only",
            Orders,
            b" \n\t ".to_vec(),
            "EOF while parsing",
        ),
        case(
            "invalid UTF-8 in a string",
            Orders,
            {
                let mut d = o("item", "\"Lap?top\"");
                let at = d.iter().position(|&b| b == b'?').expect("marker");
                d[at] = 0xff;
                d
            },
            "malformed",
        ),
        case(
            "invalid UTF-8 outside strings",
            Payments,
            b"\xfe\xff{}".to_vec(),
            "expected value",
        ),
        case(
            "lone surrogate escape",
            Orders,
            o("item", r#""\ud800""#),
            "hex escape",
        ),
        case(
            "truncated order",
            Orders,
            ORDER.as_bytes()[..ORDER.len() / 2].to_vec(),
            "EOF while parsing",
        ),
        case(
            "truncated payment",
            Payments,
            PAYMENT.as_bytes()[..PAYMENT.len() - 1].to_vec(),
            "EOF while parsing",
        ),
        case(
            "trailing garbage",
            Orders,
            format!("{ORDER} }}").into_bytes(),
            "trailing characters",
        ),
        case("JSON null", Orders, b"null".to_vec(), "invalid type: null"),
        case(
            "JSON string",
            Payments,
            b"\"payment\"".to_vec(),
            "invalid type: string",
        ),
        case(
            "order as an array in field order",
            Orders,
            br#"[7, 3, "Laptop", 2, 734.2183, "1 Main St", "Shipped", "2024-01-21"]"#.to_vec(),
            "must be a JSON object",
        ),
        case(
            "payment as an array in field order",
            Payments,
            br#"[1007, 7, "PayPal", "0042", "Completed", "2024-01-21T25:01:30Z"]"#.to_vec(),
            "must be a JSON object",
        ),
        case(
            "duplicate field",
            Orders,
            format!("{{\"order_id\": 8, {}", &ORDER[1..]).into_bytes(),
            "duplicate field `order_id`",
        ),
        case(
            "quantity as a string",
            Orders,
            o("quantity", "\"2\""),
            "invalid type: string \"2\", expected i64",
        ),
        case(
            "order_id as a fraction",
            Orders,
            o("order_id", "7.5"),
            "invalid type: floating point",
        ),
        case(
            "order_id as a string",
            Orders,
            o("order_id", "\"7\""),
            "invalid type: string",
        ),
        case(
            "payment_id as a boolean",
            Payments,
            p("payment_id", "true"),
            "invalid type: boolean",
        ),
        case(
            "price as a string",
            Orders,
            o("price", "\"734.2183\""),
            "invalid type: string",
        ),
        case(
            "item as a number",
            Orders,
            o("item", "42"),
            "invalid type: integer",
        ),
        case(
            "card_last_four as a number",
            Payments,
            p("card_last_four", "42"),
            "invalid type: integer",
        ),
        case(
            "order_id zero",
            Orders,
            o("order_id", "0"),
            "order_id must be > 0, got 0",
        ),
        case(
            "order_id negative",
            Orders,
            o("order_id", "-7"),
            "order_id must be > 0, got -7",
        ),
        case(
            "customer_id zero",
            Orders,
            o("customer_id", "0"),
            "customer_id must be > 0",
        ),
        case(
            "payment_id negative",
            Payments,
            p("payment_id", "-1007"),
            "payment_id must be > 0",
        ),
        case(
            "payment order_id zero",
            Payments,
            p("order_id", "0"),
            "order_id must be > 0",
        ),
        case(
            "order_id one past i64::MAX",
            Orders,
            o("order_id", "9223372036854775808"),
            "expected i64",
        ),
        case(
            "order_id far beyond u64",
            Orders,
            o("order_id", "123456789012345678901234567890"),
            "invalid type: floating point",
        ),
        case(
            "payment_id below i64::MIN",
            Payments,
            p("payment_id", "-9223372036854775809"),
            "invalid type: floating point",
        ),
        case(
            "quantity negative",
            Orders,
            o("quantity", "-1"),
            "quantity must be >= 0",
        ),
        case(
            "price negative",
            Orders,
            o("price", "-0.01"),
            "price must be a finite number >= 0",
        ),
        case(
            "price NaN as a string",
            Orders,
            o("price", "\"NaN\""),
            "invalid type: string \"NaN\"",
        ),
        case(
            "price NaN as a bare token",
            Orders,
            o("price", "NaN"),
            "expected value",
        ),
        case(
            "price Infinity as a string",
            Orders,
            o("price", "\"Infinity\""),
            "invalid type: string \"Infinity\"",
        ),
        case(
            "price Infinity as a bare token",
            Orders,
            o("price", "Infinity"),
            "expected value",
        ),
        case(
            "price -Infinity as a bare token",
            Orders,
            o("price", "-Infinity"),
            "invalid number",
        ),
        case(
            "price beyond f64",
            Orders,
            o("price", "1e400"),
            "number out of range",
        ),
        case(
            "card_last_four not digits",
            Payments,
            p("card_last_four", "\"12a4\""),
            "card_last_four must be 4 digits",
        ),
        case(
            "card_last_four too long",
            Payments,
            p("card_last_four", "\"12345\""),
            "card_last_four must be 4 digits",
        ),
        case(
            "version as a string",
            Orders,
            o("order_id", "7, \"version\": \"v2\""),
            "invalid type: string \"v2\", expected i64",
        ),
        case(
            "version as an object",
            Payments,
            p("order_id", "7, \"version\": {\"major\": 2}"),
            "invalid type: map",
        ),
        case(
            "version as a fraction",
            Orders,
            o("order_id", "7, \"version\": 1.5"),
            "invalid type: floating point",
        ),
        case(
            "payment on the orders topic",
            Orders,
            PAYMENT.as_bytes().to_vec(),
            "missing field `customer_id`",
        ),
        case(
            "order on the payments topic",
            Payments,
            ORDER.as_bytes().to_vec(),
            "missing field `payment_id`",
        ),
        case(
            "deeply nested document",
            Payments,
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "invalid type: sequence",
        ),
        case(
            "deeply nested value of a field",
            Orders,
            o(
                "item",
                &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            ),
            "invalid type: sequence, expected a string",
        ),
        case(
            "5 MiB payload",
            Orders,
            {
                // A valid order with 5 MiB of spaces before its closing brace.
                let mut d = ORDER.as_bytes()[..ORDER.len() - 1].to_vec();
                d.resize(LARGE_PAYLOAD_BYTES - 2, b' ');
                d.extend_from_slice(b"x}");
                d
            },
            "expected `,` or `}`",
        ),
    ];
    for f in ORDER_FIELDS {
        c.push(case(
            &format!("order without {f}"),
            Orders,
            without(ORDER, f),
            &format!("missing field `{f}`"),
        ));
    }
    for f in PAYMENT_FIELDS {
        c.push(case(
            &format!("payment without {f}"),
            Payments,
            without(PAYMENT, f),
            &format!("missing field `{f}`"),
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::event::RawMessage;

    fn raw(topic: Topic, data: &[u8]) -> RawMessage {
        RawMessage {
            message_id: "m1".into(),
            topic,
            publish_time_us: 1,
            data: data.to_vec(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn the_fixtures_themselves_decode() {
        assert!(decode(&raw(Topic::Orders, ORDER.as_bytes())).is_ok());
        assert!(decode(&raw(Topic::Payments, PAYMENT.as_bytes())).is_ok());
    }

    #[test]
    fn a_deeply_nested_unknown_field_is_ignored_without_recursing() {
        // Unknown fields are fine, however deep: serde_json skips them
        // without recursion (no stack overflow, no recursion limit), so
        // this order is valid and is not part of the corpus.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let data = with(ORDER, "order_id", &format!("7, \"extra\": {deep}"));
        assert!(decode(&raw(Topic::Orders, &data)).is_ok());
    }

    #[test]
    fn every_corpus_entry_is_rejected_with_its_reason() {
        let corpus = corpus();
        assert!(corpus.len() >= 30);
        let names: std::collections::BTreeSet<_> = corpus.iter().map(|c| &c.name).collect();
        assert_eq!(names.len(), corpus.len(), "names are unique");
        let mut wrong = Vec::new();
        for c in &corpus {
            match decode(&raw(c.topic, &c.data)) {
                Ok(e) => wrong.push(format!("{}: accepted as {e:?}", c.name)),
                Err(r) if !r.to_string().contains(&c.reason) => {
                    wrong.push(format!("{}: reason {r:?} lacks {:?}", c.name, c.reason))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
