use ecom_core::{Entry, Order, OrderVersion, Payment, PaymentVersion, Provenance, Versioned};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("ecom_cassandra=debug,warn")
            }),
        )
        .try_init();
}

pub fn prov(message_id: &str, publish_time_us: i64) -> Provenance {
    Provenance {
        message_id: message_id.to_owned(),
        publish_time_us,
    }
}

pub fn order_with(order_id: i64, message_id: &str, price: f64, address: &str) -> OrderVersion {
    Versioned::new(
        Order {
            order_id,
            customer_id: order_id.wrapping_add(1000),
            item: "Laptop".into(),
            quantity: 2,
            price,
            shipping_address: address.into(),
            order_status: "Shipped".into(),
            creation_date: "2024-01-21".into(),
            event_id: None,
            version: None,
        },
        prov(message_id, order_id.wrapping_add(1_700_000_000_000_000)),
    )
}

pub fn order(order_id: i64, message_id: &str) -> OrderVersion {
    order_with(order_id, message_id, 734.2183, "1 Main St")
}

pub fn payment(order_id: i64, message_id: &str, status: &str) -> PaymentVersion {
    Versioned::new(
        Payment {
            payment_id: order_id.wrapping_add(5000),
            order_id,
            payment_method: "Credit Card".into(),
            card_last_four: "1234".into(),
            payment_status: status.into(),
            payment_datetime: "2024-01-21T25:01:30Z".into(),
            event_id: None,
            version: None,
        },
        prov(message_id, order_id.wrapping_add(1_700_000_000_500_000)),
    )
}

/// A copy of `v` delivered by another message (same content and fingerprint).
pub fn redelivered<T: Clone>(v: &Versioned<T>, message_id: &str) -> Versioned<T> {
    Versioned {
        provenance: prov(message_id, v.provenance.publish_time_us.wrapping_add(1)),
        ..v.clone()
    }
}

pub fn audit_order(order_id: i64, message_id: &str) -> Entry {
    Entry::Order(order(order_id, message_id))
}
