//! Decoding and validating producer messages.
//!
//! Accepts exactly what today's producers send (unknown extra fields are
//! fine) and rejects, with a reason a human can act on, anything that is not
//! JSON, lacks a required field, has a wrong type, or carries an impossible
//! value. A rejection is data, not an error: the log quarantines it with the
//! raw bytes and the pipeline acknowledges the message.

use serde::{Deserialize, Serialize};

use crate::event::{Event, Order, Payment, Provenance, RawMessage, Topic, Versioned};

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The payload is not JSON of the expected shape: not JSON at all, a
    /// missing required field, or a field of the wrong type.
    #[error("malformed {topic} message: {detail}")]
    Malformed { topic: String, detail: String },
    /// The payload is well-formed but a value cannot be right.
    #[error("impossible value in {topic} message: {field} {detail}")]
    Impossible {
        topic: String,
        field: String,
        detail: String,
    },
}

impl Rejection {
    /// A bounded label for metrics: `malformed` or `impossible_value`.
    pub fn class(&self) -> &'static str {
        match self {
            Rejection::Malformed { .. } => "malformed",
            Rejection::Impossible { .. } => "impossible_value",
        }
    }

    fn impossible(topic: Topic, field: &str, detail: impl Into<String>) -> Self {
        Rejection::Impossible {
            topic: topic.name().to_string(),
            field: field.to_string(),
            detail: detail.into(),
        }
    }
}

/// Decodes a raw message into a business event, or says why it is rejected.
pub fn decode(raw: &RawMessage) -> Result<Event, Rejection> {
    let provenance = Provenance {
        message_id: raw.message_id.clone(),
        publish_time_us: raw.publish_time_us,
    };
    // serde's derived structs also accept a JSON array with the fields in
    // declaration order; producers send objects, and an array that happens
    // to line up is not what anyone meant. Checked after parsing, so a
    // payload that is not JSON at all keeps serde's reason.
    fn object<T: serde::de::DeserializeOwned>(raw: &RawMessage) -> Result<T, Rejection> {
        let malformed = |detail: String| Rejection::Malformed {
            topic: raw.topic.name().to_string(),
            detail,
        };
        let value = serde_json::from_slice(&raw.data).map_err(|e| malformed(e.to_string()))?;
        match raw.data.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(value),
            _ => Err(malformed(
                "the payload must be a JSON object, got an array".into(),
            )),
        }
    }
    match raw.topic {
        Topic::Orders => {
            let order: Order = object(raw)?;
            validate_order(&order)?;
            Ok(Event::Order(Versioned::new(order, provenance)))
        }
        Topic::Payments => {
            let payment: Payment = object(raw)?;
            validate_payment(&payment)?;
            Ok(Event::Payment(Versioned::new(payment, provenance)))
        }
    }
}

fn positive_id(topic: Topic, field: &str, v: i64) -> Result<(), Rejection> {
    if v <= 0 {
        return Err(Rejection::impossible(
            topic,
            field,
            format!("must be > 0, got {v}"),
        ));
    }
    Ok(())
}

pub fn validate_order(o: &Order) -> Result<(), Rejection> {
    let t = Topic::Orders;
    positive_id(t, "order_id", o.order_id)?;
    positive_id(t, "customer_id", o.customer_id)?;
    if o.quantity < 0 {
        return Err(Rejection::impossible(
            t,
            "quantity",
            format!("must be >= 0, got {}", o.quantity),
        ));
    }
    if !o.price.is_finite() || o.price < 0.0 {
        return Err(Rejection::impossible(
            t,
            "price",
            format!("must be a finite number >= 0, got {}", o.price),
        ));
    }
    Ok(())
}

pub fn validate_payment(p: &Payment) -> Result<(), Rejection> {
    let t = Topic::Payments;
    positive_id(t, "payment_id", p.payment_id)?;
    positive_id(t, "order_id", p.order_id)?;
    if p.card_last_four.len() != 4 || !p.card_last_four.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::impossible(
            t,
            "card_last_four",
            format!("must be 4 digits, got {:?}", p.card_last_four),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(topic: Topic, json: &str) -> RawMessage {
        RawMessage {
            message_id: "m1".into(),
            topic,
            publish_time_us: 1,
            data: json.as_bytes().to_vec(),
            attributes: Default::default(),
        }
    }

    const ORDER: &str = r#"{"order_id": 7, "customer_id": 3, "item": "Laptop", "quantity": 2,
        "price": 734.2183, "shipping_address": "1 Main St", "order_status": "Shipped",
        "creation_date": "2024-01-21"}"#;

    #[test]
    fn todays_order_decodes_with_unrounded_price() {
        let Event::Order(o) = decode(&raw(Topic::Orders, ORDER)).unwrap() else {
            panic!("not an order")
        };
        assert_eq!(o.content.price, 734.2183);
        assert_eq!(o.content.version, None);
    }

    #[test]
    fn todays_invalid_payment_datetime_is_kept_as_text() {
        let json = r#"{"payment_id": 1007, "order_id": 7, "payment_method": "PayPal",
            "card_last_four": "0042", "payment_status": "Completed",
            "payment_datetime": "2024-01-21T25:01:30Z", "extra": [1,2]}"#;
        let Event::Payment(p) = decode(&raw(Topic::Payments, json)).unwrap() else {
            panic!("not a payment")
        };
        assert_eq!(p.content.payment_datetime, "2024-01-21T25:01:30Z");
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        let cases = [
            (Topic::Orders, "not json", "malformed"),
            (Topic::Orders, r#"{"order_id": 1}"#, "missing field"),
            (
                Topic::Orders,
                &ORDER.replace("\"quantity\": 2", "\"quantity\": \"2\""),
                "invalid type",
            ),
            (
                Topic::Orders,
                &ORDER.replace("\"quantity\": 2", "\"quantity\": -1"),
                "quantity",
            ),
            (
                Topic::Orders,
                &ORDER.replace("\"order_id\": 7", "\"order_id\": 0"),
                "order_id",
            ),
            (
                Topic::Orders,
                &ORDER.replace("734.2183", "1e400"),
                "malformed",
            ),
        ];
        for (topic, json, needle) in cases {
            let err = decode(&raw(topic, json)).unwrap_err().to_string();
            assert!(err.contains(needle), "{json:?}: {err}");
        }
    }

    #[test]
    fn an_array_with_the_fields_in_order_is_rejected() {
        // serde's derived Deserialize takes a sequence for a struct.
        let order = r#"[7, 3, "Laptop", 2, 734.2183, "1 Main St", "Shipped", "2024-01-21"]"#;
        let err = decode(&raw(Topic::Orders, order)).unwrap_err().to_string();
        assert!(err.contains("must be a JSON object, got an array"), "{err}");
        let payment = r#" [1007, 7, "PayPal", "0042", "Completed", "x"]"#;
        let err = decode(&raw(Topic::Payments, payment))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        // Leading whitespace before an object is fine.
        assert!(decode(&raw(Topic::Orders, &format!("\n {ORDER}"))).is_ok());
    }

    #[test]
    fn event_id_defines_identity() {
        let mut a: Order = serde_json::from_str(ORDER).unwrap();
        a.event_id = Some("e-1".into());
        let mut b = a.clone();
        b.order_status = "Delivered".into();
        use crate::event::Content;
        assert_eq!(a.fingerprint(), b.fingerprint());
        a.event_id = None;
        b.event_id = None;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
