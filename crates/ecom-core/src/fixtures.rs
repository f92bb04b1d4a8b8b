//! Small events for the unit tests of the model and the state fold.

use crate::event::{Event, Order, Payment, Provenance, Versioned};

pub fn order(id: i64, status: &str, msg: &str, t: i64) -> Event {
    Event::Order(Versioned::new(
        Order {
            order_id: id,
            customer_id: 1,
            item: "Book".into(),
            quantity: 1,
            price: 9.5,
            shipping_address: "x".into(),
            order_status: status.into(),
            creation_date: "2024-01-21".into(),
            event_id: None,
            version: None,
        },
        Provenance {
            message_id: msg.into(),
            publish_time_us: t,
        },
    ))
}

pub fn payment(order_id: i64, method: &str, msg: &str, t: i64) -> Event {
    Event::Payment(Versioned::new(
        Payment {
            payment_id: order_id + 1000,
            order_id,
            payment_method: method.into(),
            card_last_four: "1234".into(),
            payment_status: "Completed".into(),
            payment_datetime: "2024-01-21T25:01:30Z".into(),
            event_id: None,
            version: None,
        },
        Provenance {
            message_id: msg.into(),
            publish_time_us: t,
        },
    ))
}
