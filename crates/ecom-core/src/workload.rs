//! Deterministic generation of producer traffic, shaped like today's
//! producers: orders with random items and unrounded prices, payments with
//! `payment_id = order_id + 1000` and invalid-but-kept datetimes.
//!
//! Used by `demo`, `produce` and tests; a seed reproduces a stream exactly.

use crate::event::{Order, Payment, Topic};

/// SplitMix64: tiny, fast, and stable across versions (unlike a crate's
/// default RNG), which keeps seeds reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

pub const ITEMS: &[&str] = &["Laptop", "Phone", "Book", "Tablet", "Monitor"];
pub const STATUSES: &[&str] = &["Shipped", "Pending", "Delivered", "Cancelled"];
pub const METHODS: &[&str] = &[
    "Credit Card",
    "Debit Card",
    "PayPal",
    "Google Pay",
    "Apple Pay",
];

pub fn random_order(rng: &mut Rng, order_id: i64) -> Order {
    let day = 1 + rng.below(28);
    Order {
        order_id,
        customer_id: 1 + rng.below(1000) as i64,
        item: rng.pick(ITEMS).to_string(),
        quantity: 1 + rng.below(10) as i64,
        price: 10.0 + rng.below(99_000_000) as f64 / 10_000.0,
        shipping_address: format!("{} Market St, Springfield", 1 + rng.below(9999)),
        order_status: rng.pick(STATUSES).to_string(),
        creation_date: format!("2024-01-{day:02}"),
        event_id: None,
        version: None,
    }
}

pub fn random_payment(rng: &mut Rng, order_id: i64) -> Payment {
    Payment {
        payment_id: order_id + 1000,
        order_id,
        payment_method: rng.pick(METHODS).to_string(),
        card_last_four: format!("{:04}", rng.below(10_000)),
        payment_status: "Completed".to_string(),
        // Today's producer draws the hour from 0..=25, so some are invalid.
        payment_datetime: format!(
            "2024-01-{:02}T{:02}:{:02}:{:02}Z",
            1 + rng.below(28),
            rng.below(26),
            rng.below(60),
            rng.below(60)
        ),
        event_id: None,
        version: None,
    }
}

/// The shape of a generated stream.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub seed: u64,
    /// Distinct orders (ids `1..=orders`).
    pub orders: u64,
    /// Share of orders that get a payment.
    pub payment_ratio: f64,
    /// Share of payments published before their order.
    pub payments_first_ratio: f64,
    /// Share of messages re-published with identical content (a producer
    /// retry: a business duplicate with a new message id).
    pub business_duplicate_ratio: f64,
    /// Share of orders re-published with the same id and new content (like
    /// today's producer cycling ids): a conflicting duplicate.
    pub conflict_ratio: f64,
    /// Payments for orders that never arrive (stay parked).
    pub orphan_payments: u64,
    /// Messages that are not valid (rejected to the quarantine).
    pub invalid: u64,
}

impl WorkloadSpec {
    pub fn demo(orders: u64, seed: u64) -> Self {
        WorkloadSpec {
            seed,
            orders,
            payment_ratio: 0.9,
            payments_first_ratio: 0.2,
            business_duplicate_ratio: 0.02,
            conflict_ratio: 0.02,
            orphan_payments: (orders / 100).max(1),
            invalid: (orders / 500).max(1),
        }
    }
}

/// One message to publish: topic and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: Topic,
    pub data: Vec<u8>,
}

/// JSON as today's producers write it: optional fields that are unset are
/// left out rather than sent as null.
fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(v).expect("plain structs serialize");
    if let serde_json::Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// Generates the stream, in publish order.
pub fn generate(spec: &WorkloadSpec) -> Vec<Publish> {
    let mut rng = Rng::new(spec.seed);
    let mut out = Vec::new();
    let push = |out: &mut Vec<Publish>, rng: &mut Rng, topic: Topic, data: Vec<u8>| {
        let dup = rng.chance(spec.business_duplicate_ratio);
        out.push(Publish {
            topic,
            data: data.clone(),
        });
        if dup {
            out.push(Publish { topic, data });
        }
    };
    for id in 1..=spec.orders as i64 {
        let order = json(&random_order(&mut rng, id));
        let payment = rng
            .chance(spec.payment_ratio)
            .then(|| json(&random_payment(&mut rng, id)));
        let payment_first = rng.chance(spec.payments_first_ratio);
        if let (Some(p), true) = (&payment, payment_first) {
            push(&mut out, &mut rng, Topic::Payments, p.clone());
        }
        push(&mut out, &mut rng, Topic::Orders, order);
        if rng.chance(spec.conflict_ratio) {
            let other = json(&random_order(&mut rng, id));
            push(&mut out, &mut rng, Topic::Orders, other);
        }
        if let (Some(p), false) = (payment, payment_first) {
            push(&mut out, &mut rng, Topic::Payments, p);
        }
    }
    let base = spec.orders as i64 + 1_000_000;
    for i in 0..spec.orphan_payments as i64 {
        let p = json(&random_payment(&mut rng, base + i));
        push(&mut out, &mut rng, Topic::Payments, p);
    }
    for i in 0..spec.invalid {
        let data = match i % 3 {
            0 => b"not json at all".to_vec(),
            1 => br#"{"order_id": 5}"#.to_vec(),
            _ => {
                let mut o = random_order(&mut rng, 1 + i as i64);
                o.quantity = -3;
                json(&o)
            }
        };
        out.push(Publish {
            topic: Topic::Orders,
            data,
        });
    }
    out
}
