//! Column mapping between the domain types and the three tables.
//!
//! `orders_payments_facts`: the order's content columns, then
//! `order_event_id`, `order_version`, `order_fingerprint` (the stored
//! [`Fingerprint`], not recomputed), `order_message_id`,
//! `order_publish_time_us`; the payment's content columns and `payment_*`
//! provenance likewise, all null while no payment joined. A payment's
//! `order_id` is the row's key.
//!
//! `duplicate_orders` / `dlq_payments`: `payload` is the version's content as
//! serde_json; the other columns (key, provenance, version, event id, ...) are
//! denormalized for humans and queries. On reading, content comes from
//! `payload` and fingerprint/provenance from their columns.
//!
//! Prices: the workspace enables serde_json's `float_roundtrip`, so a
//! payload's price decodes to the exact `f64` that was encoded (the default
//! parser is not correctly rounded). The facts table stores price as a
//! `double`, exact.
//!
//! `order_state`: `revision` and `state`, the [`OrderState`] as JSON with its
//! format version.

use ecom_core::state::STATE_FORMAT;
use ecom_core::{
    Entry, FactRow, Fingerprint, Kind, Order, OrderState, OrderVersion, Payment, PaymentVersion,
    Provenance, StoredState,
};
use ecom_store::{Parked, StoreError};
use scylla::value::CqlTimestamp;
use scylla::value::MaybeUnset;
use scylla::{DeserializeRow, SerializeRow};

use crate::error::corrupt;

pub(crate) const FACTS: &str = "orders_payments_facts";
pub(crate) const AUDIT: &str = "duplicate_orders";
pub(crate) const PARKED: &str = "dlq_payments";
pub(crate) const STATE: &str = "order_state";

/// Order columns of the facts table, in the order of the bind structs.
pub(crate) const ORDER_COLUMNS: &[&str] = &[
    "customer_id",
    "item",
    "quantity",
    "price",
    "shipping_address",
    "order_status",
    "creation_date",
    "order_event_id",
    "order_version",
    "order_fingerprint",
    "order_message_id",
    "order_publish_time_us",
];

pub(crate) const PAYMENT_COLUMNS: &[&str] = &[
    "payment_id",
    "payment_method",
    "card_last_four",
    "payment_status",
    "payment_datetime",
    "payment_event_id",
    "payment_version",
    "payment_fingerprint",
    "payment_message_id",
    "payment_publish_time_us",
];

pub(crate) const AUDIT_COLUMNS: &[&str] = &[
    "order_id",
    "kind",
    "fingerprint",
    "message_id",
    "publish_time_us",
    "version",
    "event_id",
    "payload",
];

pub(crate) const PARKED_COLUMNS: &[&str] = &[
    "order_id",
    "fingerprint",
    "payment_id",
    "message_id",
    "publish_time_us",
    "version",
    "event_id",
    "payload",
    "parked_at",
    "attempts",
];

/// What is read back from `duplicate_orders` (content comes from `payload`).
pub(crate) const AUDIT_READ_COLUMNS: &[&str] = &[
    "order_id",
    "kind",
    "fingerprint",
    "message_id",
    "publish_time_us",
    "payload",
];

/// What is read back from `dlq_payments`.
pub(crate) const PARKED_READ_COLUMNS: &[&str] = &[
    "order_id",
    "fingerprint",
    "message_id",
    "publish_time_us",
    "payload",
    "parked_at",
    "attempts",
];

// --- bind values (named bind markers, matched by name) ----------------------

/// An optional column's bind value. Binding NULL writes a tombstone cell, so
/// on a fresh row (`fresh`: INSERT, or columns known to be empty) an absent
/// value is left unset instead; when replacing values it must be NULL so the
/// old value is cleared.
fn nullable<T>(v: Option<T>, fresh: bool) -> MaybeUnset<Option<T>> {
    match (v, fresh) {
        (None, true) => MaybeUnset::Unset,
        (v, _) => MaybeUnset::Set(v),
    }
}

#[derive(SerializeRow)]
pub(crate) struct OrderCols<'a> {
    customer_id: i64,
    item: &'a str,
    quantity: i64,
    price: f64,
    shipping_address: &'a str,
    order_status: &'a str,
    creation_date: &'a str,
    order_event_id: MaybeUnset<Option<&'a str>>,
    order_version: MaybeUnset<Option<i64>>,
    order_fingerprint: i64,
    order_message_id: &'a str,
    order_publish_time_us: i64,
}

impl<'a> OrderCols<'a> {
    pub(crate) fn new(v: &'a OrderVersion, fresh: bool) -> Self {
        let o = &v.content;
        OrderCols {
            customer_id: o.customer_id,
            item: &o.item,
            quantity: o.quantity,
            price: o.price,
            shipping_address: &o.shipping_address,
            order_status: &o.order_status,
            creation_date: &o.creation_date,
            order_event_id: nullable(o.event_id.as_deref(), fresh),
            order_version: nullable(o.version, fresh),
            order_fingerprint: v.fingerprint.0,
            order_message_id: &v.provenance.message_id,
            order_publish_time_us: v.provenance.publish_time_us,
        }
    }
}

#[derive(SerializeRow)]
pub(crate) struct PaymentCols<'a> {
    payment_id: i64,
    payment_method: &'a str,
    card_last_four: &'a str,
    payment_status: &'a str,
    payment_datetime: &'a str,
    payment_event_id: MaybeUnset<Option<&'a str>>,
    payment_version: MaybeUnset<Option<i64>>,
    payment_fingerprint: i64,
    payment_message_id: &'a str,
    payment_publish_time_us: i64,
}

impl<'a> PaymentCols<'a> {
    pub(crate) fn new(v: &'a PaymentVersion, fresh: bool) -> Self {
        let p = &v.content;
        PaymentCols {
            payment_id: p.payment_id,
            payment_method: &p.payment_method,
            card_last_four: &p.card_last_four,
            payment_status: &p.payment_status,
            payment_datetime: &p.payment_datetime,
            payment_event_id: nullable(p.event_id.as_deref(), fresh),
            payment_version: nullable(p.version, fresh),
            payment_fingerprint: v.fingerprint.0,
            payment_message_id: &v.provenance.message_id,
            payment_publish_time_us: v.provenance.publish_time_us,
        }
    }
}

/// `INSERT` of a fact row's order columns (no payment yet).
#[derive(SerializeRow)]
pub(crate) struct InsertOrder<'a> {
    pub order_id: i64,
    #[scylla(flatten)]
    pub order: OrderCols<'a>,
}

/// `INSERT` of a complete fact row.
#[derive(SerializeRow)]
pub(crate) struct InsertFull<'a> {
    pub order_id: i64,
    #[scylla(flatten)]
    pub order: OrderCols<'a>,
    #[scylla(flatten)]
    pub payment: PaymentCols<'a>,
}

/// A view write's bind values with its `USING TIMESTAMP :ts`.
macro_rules! timestamped {
    ($name:ident<'a>, $inner:ty) => {
        #[derive(SerializeRow)]
        pub(crate) struct $name<'a> {
            #[scylla(flatten)]
            pub cols: $inner,
            pub ts: i64,
        }
    };
    ($name:ident, $inner:ty) => {
        #[derive(SerializeRow)]
        pub(crate) struct $name {
            #[scylla(flatten)]
            pub cols: $inner,
            pub ts: i64,
        }
    };
}

timestamped!(OrderAt<'a>, InsertOrder<'a>);
timestamped!(FullAt<'a>, InsertFull<'a>);
timestamped!(AuditAt<'a>, AuditCols<'a>);
timestamped!(AuditKeyAt, AuditKey<'static>);
timestamped!(ParkedAt<'a>, ParkedCols<'a>);
timestamped!(ParkedKeyAt, ParkedKey);
timestamped!(ParkedAttemptsAt, ParkedAttempts);

#[derive(SerializeRow)]
pub(crate) struct AuditKey<'a> {
    pub order_id: i64,
    pub kind: &'a str,
    pub fingerprint: i64,
}

impl AuditKey<'static> {
    pub(crate) fn new(order_id: i64, kind: Kind, fp: Fingerprint) -> Self {
        AuditKey {
            order_id,
            kind: kind.as_str(),
            fingerprint: fp.0,
        }
    }
}

#[derive(SerializeRow)]
pub(crate) struct AuditCols<'a> {
    pub order_id: i64,
    pub kind: &'static str,
    pub fingerprint: i64,
    pub message_id: &'a str,
    pub publish_time_us: i64,
    pub version: MaybeUnset<Option<i64>>,
    pub event_id: MaybeUnset<Option<&'a str>>,
    pub payload: String,
}

impl<'a> AuditCols<'a> {
    pub(crate) fn new(e: &'a Entry, fresh: bool) -> Self {
        let (event_id, payload) = match e {
            Entry::Order(o) => (o.content.event_id.as_deref(), to_json(&o.content)),
            Entry::Payment(p) => (p.content.event_id.as_deref(), to_json(&p.content)),
        };
        AuditCols {
            order_id: e.order_id(),
            kind: e.kind().as_str(),
            fingerprint: e.fingerprint().0,
            message_id: &e.provenance().message_id,
            publish_time_us: e.provenance().publish_time_us,
            version: nullable(e.business_version(), fresh),
            event_id: nullable(event_id, fresh),
            payload,
        }
    }
}

#[derive(SerializeRow)]
pub(crate) struct ParkedKey {
    pub order_id: i64,
    pub fingerprint: i64,
}

#[derive(SerializeRow)]
pub(crate) struct ParkedCols<'a> {
    pub order_id: i64,
    pub fingerprint: i64,
    pub payment_id: i64,
    pub message_id: &'a str,
    pub publish_time_us: i64,
    pub version: MaybeUnset<Option<i64>>,
    pub event_id: MaybeUnset<Option<&'a str>>,
    pub payload: String,
    pub parked_at: CqlTimestamp,
    pub attempts: i32,
}

impl<'a> ParkedCols<'a> {
    pub(crate) fn new(p: &'a Parked, fresh: bool) -> Self {
        let v = &p.payment;
        ParkedCols {
            order_id: v.content.order_id,
            fingerprint: v.fingerprint.0,
            payment_id: v.content.payment_id,
            message_id: &v.provenance.message_id,
            publish_time_us: v.provenance.publish_time_us,
            version: nullable(v.content.version, fresh),
            event_id: nullable(v.content.event_id.as_deref(), fresh),
            payload: to_json(&v.content),
            parked_at: CqlTimestamp(p.parked_at_ms),
            attempts: p.attempts,
        }
    }
}

#[derive(SerializeRow)]
pub(crate) struct ParkedAttempts {
    pub order_id: i64,
    pub fingerprint: i64,
    pub attempts: i32,
}

/// An `order_state` row to insert.
#[derive(SerializeRow)]
pub(crate) struct StateCols<'a> {
    pub order_id: i64,
    pub revision: i64,
    pub state: &'a str,
}

/// An `order_state` update conditional on the revision.
#[derive(SerializeRow)]
pub(crate) struct StateUpdate<'a> {
    pub order_id: i64,
    pub revision: i64,
    pub state: &'a str,
    pub expected_revision: i64,
}

/// `order_state` as read back (also the columns of a rejected LWT).
#[derive(DeserializeRow)]
pub(crate) struct StateRowCols {
    pub revision: Option<i64>,
    pub state: Option<String>,
}

/// Encodes a state for the `state` column: JSON, so an operator can read it
/// with cqlsh, carrying its format version.
pub(crate) fn encode_state(state: &OrderState) -> String {
    to_json(&VersionedState {
        format: STATE_FORMAT,
        state: std::borrow::Cow::Borrowed(state),
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct VersionedState<'a> {
    format: u32,
    state: std::borrow::Cow<'a, OrderState>,
}

pub(crate) fn decode_state(order_id: i64, row: StateRowCols) -> Result<StoredState, StoreError> {
    let key = format!("order_id={order_id}");
    let key: &dyn std::fmt::Display = &key;
    let revision = req(row.revision, STATE, key, "revision")?;
    let text = req(row.state, STATE, key, "state")?;
    let v: VersionedState<'static> =
        serde_json::from_str(&text).map_err(|e| corrupt(STATE, key, format_args!("state: {e}")))?;
    if v.format != STATE_FORMAT {
        return Err(corrupt(
            STATE,
            key,
            format_args!(
                "state format {} is not {STATE_FORMAT}, the one this binary reads",
                v.format
            ),
        ));
    }
    Ok(StoredState {
        revision,
        state: v.state.into_owned(),
    })
}

#[derive(SerializeRow)]
pub(crate) struct OrderIdKey {
    pub order_id: i64,
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializing plain data to JSON cannot fail")
}

// --- rows read back ----------------------------------------------------------

#[derive(DeserializeRow)]
pub(crate) struct FactRowCols {
    order_id: i64,
    customer_id: Option<i64>,
    item: Option<String>,
    quantity: Option<i64>,
    price: Option<f64>,
    shipping_address: Option<String>,
    order_status: Option<String>,
    creation_date: Option<String>,
    order_event_id: Option<String>,
    order_version: Option<i64>,
    order_fingerprint: Option<i64>,
    order_message_id: Option<String>,
    order_publish_time_us: Option<i64>,
    payment_id: Option<i64>,
    payment_method: Option<String>,
    card_last_four: Option<String>,
    payment_status: Option<String>,
    payment_datetime: Option<String>,
    payment_event_id: Option<String>,
    payment_version: Option<i64>,
    payment_fingerprint: Option<i64>,
    payment_message_id: Option<String>,
    payment_publish_time_us: Option<i64>,
}

/// A required column, or a `Corrupt` error naming the row and column.
fn req<T>(
    v: Option<T>,
    table: &str,
    key: &dyn std::fmt::Display,
    col: &str,
) -> Result<T, StoreError> {
    v.ok_or_else(|| corrupt(table, key, format_args!("column {col} is null")))
}

impl FactRowCols {
    pub(crate) fn into_fact(self) -> Result<FactRow, StoreError> {
        let id = self.order_id;
        let key = format!("order_id={id}");
        let key: &dyn std::fmt::Display = &key;
        let r = |v, col| req(v, FACTS, key, col);
        let rs = |v, col| req(v, FACTS, key, col);
        let order = OrderVersion {
            content: Order {
                order_id: id,
                customer_id: r(self.customer_id, "customer_id")?,
                item: rs(self.item, "item")?,
                quantity: r(self.quantity, "quantity")?,
                price: req(self.price, FACTS, key, "price")?,
                shipping_address: rs(self.shipping_address, "shipping_address")?,
                order_status: rs(self.order_status, "order_status")?,
                creation_date: rs(self.creation_date, "creation_date")?,
                event_id: self.order_event_id,
                version: self.order_version,
            },
            fingerprint: Fingerprint(r(self.order_fingerprint, "order_fingerprint")?),
            provenance: Provenance {
                message_id: rs(self.order_message_id, "order_message_id")?,
                publish_time_us: r(self.order_publish_time_us, "order_publish_time_us")?,
            },
        };
        let payment = match self.payment_message_id {
            None => {
                let stray = self.payment_id.is_some()
                    || self.payment_method.is_some()
                    || self.card_last_four.is_some()
                    || self.payment_status.is_some()
                    || self.payment_datetime.is_some()
                    || self.payment_fingerprint.is_some()
                    || self.payment_publish_time_us.is_some();
                if stray {
                    return Err(corrupt(
                        FACTS,
                        key,
                        "payment columns are set but payment_message_id is null",
                    ));
                }
                None
            }
            Some(message_id) => Some(PaymentVersion {
                content: Payment {
                    payment_id: r(self.payment_id, "payment_id")?,
                    order_id: id,
                    payment_method: rs(self.payment_method, "payment_method")?,
                    card_last_four: rs(self.card_last_four, "card_last_four")?,
                    payment_status: rs(self.payment_status, "payment_status")?,
                    payment_datetime: rs(self.payment_datetime, "payment_datetime")?,
                    event_id: self.payment_event_id,
                    version: self.payment_version,
                },
                fingerprint: Fingerprint(r(self.payment_fingerprint, "payment_fingerprint")?),
                provenance: Provenance {
                    message_id,
                    publish_time_us: r(self.payment_publish_time_us, "payment_publish_time_us")?,
                },
            }),
        };
        Ok(FactRow { order, payment })
    }
}

#[derive(DeserializeRow)]
pub(crate) struct AuditRowCols {
    order_id: i64,
    kind: String,
    fingerprint: i64,
    message_id: Option<String>,
    publish_time_us: Option<i64>,
    payload: Option<String>,
}

impl AuditRowCols {
    pub(crate) fn into_entry(self) -> Result<Entry, StoreError> {
        let key = format!(
            "(order_id={}, kind={}, fingerprint={})",
            self.order_id,
            self.kind,
            Fingerprint(self.fingerprint)
        );
        let key: &dyn std::fmt::Display = &key;
        let kind = Kind::parse(&self.kind)
            .ok_or_else(|| corrupt(AUDIT, key, "kind is neither 'order' nor 'payment'"))?;
        let payload = req(self.payload, AUDIT, key, "payload")?;
        let fingerprint = Fingerprint(self.fingerprint);
        let provenance = Provenance {
            message_id: req(self.message_id, AUDIT, key, "message_id")?,
            publish_time_us: req(self.publish_time_us, AUDIT, key, "publish_time_us")?,
        };
        let entry = match kind {
            Kind::Order => {
                let content = order_from_json(&payload).map_err(|e| corrupt(AUDIT, key, e))?;
                check_order_id(content.order_id, self.order_id, AUDIT, key)?;
                Entry::Order(OrderVersion {
                    content,
                    fingerprint,
                    provenance,
                })
            }
            Kind::Payment => {
                let content: Payment = serde_json::from_str(&payload)
                    .map_err(|e| corrupt(AUDIT, key, format_args!("payload: {e}")))?;
                check_order_id(content.order_id, self.order_id, AUDIT, key)?;
                Entry::Payment(PaymentVersion {
                    content,
                    fingerprint,
                    provenance,
                })
            }
        };
        Ok(entry)
    }
}

#[derive(DeserializeRow)]
pub(crate) struct ParkedRowCols {
    order_id: i64,
    fingerprint: i64,
    message_id: Option<String>,
    publish_time_us: Option<i64>,
    payload: Option<String>,
    parked_at: Option<CqlTimestamp>,
    attempts: Option<i32>,
}

impl ParkedRowCols {
    pub(crate) fn into_parked(self) -> Result<Parked, StoreError> {
        let key = format!(
            "(order_id={}, fingerprint={})",
            self.order_id,
            Fingerprint(self.fingerprint)
        );
        let key: &dyn std::fmt::Display = &key;
        let payload = req(self.payload, PARKED, key, "payload")?;
        let content: Payment = serde_json::from_str(&payload)
            .map_err(|e| corrupt(PARKED, key, format_args!("payload: {e}")))?;
        check_order_id(content.order_id, self.order_id, PARKED, key)?;
        Ok(Parked {
            payment: PaymentVersion {
                content,
                fingerprint: Fingerprint(self.fingerprint),
                provenance: Provenance {
                    message_id: req(self.message_id, PARKED, key, "message_id")?,
                    publish_time_us: req(self.publish_time_us, PARKED, key, "publish_time_us")?,
                },
            },
            parked_at_ms: req(self.parked_at, PARKED, key, "parked_at")?.0,
            attempts: req(self.attempts, PARKED, key, "attempts")?,
        })
    }
}

fn check_order_id(
    in_payload: i64,
    in_key: i64,
    table: &str,
    key: &dyn std::fmt::Display,
) -> Result<(), StoreError> {
    if in_payload == in_key {
        Ok(())
    } else {
        Err(corrupt(
            table,
            key,
            format_args!("payload has order_id {in_payload}"),
        ))
    }
}

/// Decodes an order payload. Prices round-trip exactly: the workspace
/// enables serde_json's `float_roundtrip`, whose parser is correctly rounded.
pub(crate) fn order_from_json(payload: &str) -> Result<Order, String> {
    serde_json::from_str(payload).map_err(|e| format!("payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(price: f64) -> Order {
        Order {
            order_id: 7,
            customer_id: 1,
            item: "x\",\"price\":1".into(),
            quantity: 2,
            price,
            shipping_address: "Straße 1, 東京".into(),
            order_status: "Shipped".into(),
            creation_date: "2024-01-21".into(),
            event_id: None,
            version: Some(3),
        }
    }

    #[test]
    fn order_payload_round_trips_every_finite_price_exactly() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut prices = vec![
            734.2183,
            0.1 + 0.2,
            5e-324,
            f64::MAX,
            -0.0,
            0.0,
            1e21,
            123.0,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f.is_finite() {
                prices.push(f);
            }
        }
        for p in prices {
            let o = order(p);
            let json = serde_json::to_string(&o).unwrap();
            let back = order_from_json(&json).unwrap();
            assert_eq!(back.price.to_bits(), p.to_bits(), "{json}");
            assert_eq!(back, o);
        }
    }
}
