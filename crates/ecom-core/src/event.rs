//! Plain data types shared by every crate: raw transport messages, decoded
//! business events, versions with provenance, and the rows of the fact store.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The topic a message came from. Decides how its payload is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    Orders,
    Payments,
}

impl Topic {
    /// The Pub/Sub topic name today's producers publish to.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Orders => "orders_data",
            Topic::Payments => "payments_data",
        }
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        match name {
            "orders_data" => Some(Topic::Orders),
            "payments_data" => Some(Topic::Payments),
            _ => None,
        }
    }
}

/// A message as the transport delivered it, before any decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMessage {
    /// Transport message id (Pub/Sub's `message_id`): the log's dedup key.
    pub message_id: String,
    pub topic: Topic,
    /// Publish time in microseconds since the Unix epoch, as the broker stamped it.
    pub publish_time_us: i64,
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
}

/// Which message a version's values came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Provenance {
    pub message_id: String,
    pub publish_time_us: i64,
}

/// Identity of a business event's content: a hash of its `event_id` when the
/// producer sends one, otherwise of all its fields (version included). Two
/// messages with equal fingerprints are the same business event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint(pub i64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0 as u64)
    }
}

/// An order exactly as today's producer sends it (plus the optional fields a
/// newer producer may add).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: i64,
    pub customer_id: i64,
    pub item: String,
    pub quantity: i64,
    pub price: f64,
    pub shipping_address: String,
    pub order_status: String,
    pub creation_date: String,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// A payment exactly as today's producer sends it. `payment_datetime` stays
/// text: today's producer emits values like "2024-01-21T25:01:30Z".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: i64,
    pub order_id: i64,
    pub payment_method: String,
    pub card_last_four: String,
    pub payment_status: String,
    pub payment_datetime: String,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// Content that can be versioned: it knows its business version and fingerprint.
pub trait Content {
    fn business_version(&self) -> Option<i64>;
    fn fingerprint(&self) -> Fingerprint;
}

/// One version of an order or payment together with the message it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub content: T,
    pub fingerprint: Fingerprint,
    pub provenance: Provenance,
}

impl<T: Content> Versioned<T> {
    pub fn new(content: T, provenance: Provenance) -> Self {
        let fingerprint = content.fingerprint();
        Versioned {
            content,
            fingerprint,
            provenance,
        }
    }
}

pub type OrderVersion = Versioned<Order>;
pub type PaymentVersion = Versioned<Payment>;

/// A decoded, valid business event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Order(OrderVersion),
    Payment(PaymentVersion),
}

impl Event {
    /// The partition key of everything this event touches in the store.
    pub fn order_id(&self) -> i64 {
        match self {
            Event::Order(o) => o.content.order_id,
            Event::Payment(p) => p.content.order_id,
        }
    }

    pub fn provenance(&self) -> &Provenance {
        match self {
            Event::Order(o) => &o.provenance,
            Event::Payment(p) => &p.provenance,
        }
    }
}

/// Whether an audit entry is about an order or a payment version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Order,
    Payment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Payment => "payment",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "order" => Some(Kind::Order),
            "payment" => Some(Kind::Payment),
            _ => None,
        }
    }
}

/// A losing version recorded in the `duplicate_orders` audit table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    Order(OrderVersion),
    Payment(PaymentVersion),
}

impl Entry {
    pub fn kind(&self) -> Kind {
        match self {
            Entry::Order(_) => Kind::Order,
            Entry::Payment(_) => Kind::Payment,
        }
    }

    pub fn order_id(&self) -> i64 {
        match self {
            Entry::Order(o) => o.content.order_id,
            Entry::Payment(p) => p.content.order_id,
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            Entry::Order(o) => o.fingerprint,
            Entry::Payment(p) => p.fingerprint,
        }
    }

    pub fn provenance(&self) -> &Provenance {
        match self {
            Entry::Order(o) => &o.provenance,
            Entry::Payment(p) => &p.provenance,
        }
    }

    pub fn business_version(&self) -> Option<i64> {
        match self {
            Entry::Order(o) => o.content.version,
            Entry::Payment(p) => p.content.version,
        }
    }
}

/// One row of `orders_payments_facts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactRow {
    pub order: OrderVersion,
    pub payment: Option<PaymentVersion>,
}

impl FactRow {
    pub fn order_id(&self) -> i64 {
        self.order.content.order_id
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`,
/// which matters because fingerprints are stored.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A field separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        self
    }
    fn int(&mut self, v: i64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.bytes(b"S").int(v),
            None => self.bytes(b"N"),
        }
    }
    fn finish(&self) -> Fingerprint {
        Fingerprint(self.0 as i64)
    }
}

fn event_id_fingerprint(domain: &[u8], event_id: &str) -> Fingerprint {
    Fnv::new()
        .bytes(domain)
        .bytes(b"event_id")
        .bytes(event_id.as_bytes())
        .finish()
}

impl Content for Order {
    fn business_version(&self) -> Option<i64> {
        self.version
    }

    fn fingerprint(&self) -> Fingerprint {
        if let Some(id) = &self.event_id {
            return event_id_fingerprint(b"order", id);
        }
        Fnv::new()
            .bytes(b"order")
            .int(self.order_id)
            .int(self.customer_id)
            .bytes(self.item.as_bytes())
            .int(self.quantity)
            .int(self.price.to_bits() as i64)
            .bytes(self.shipping_address.as_bytes())
            .bytes(self.order_status.as_bytes())
            .bytes(self.creation_date.as_bytes())
            .opt_int(self.version)
            .finish()
    }
}

impl Content for Payment {
    fn business_version(&self) -> Option<i64> {
        self.version
    }

    fn fingerprint(&self) -> Fingerprint {
        if let Some(id) = &self.event_id {
            return event_id_fingerprint(b"payment", id);
        }
        Fnv::new()
            .bytes(b"payment")
            .int(self.payment_id)
            .int(self.order_id)
            .bytes(self.payment_method.as_bytes())
            .bytes(self.card_last_four.as_bytes())
            .bytes(self.payment_status.as_bytes())
            .bytes(self.payment_datetime.as_bytes())
            .opt_int(self.version)
            .finish()
    }
}
