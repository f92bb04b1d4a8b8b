//! A TCP proxy between the pipeline and a server that can take the server
//! away and, for Cassandra, lose the answers to conditional writes.
//!
//! Why a proxy of our own: the faults the outage and lost-response tests
//! need are narrow. "Pub/Sub is down" is every connection cut and new ones
//! refused, then the same server back; stopping pstest would lose its
//! in-memory topics and messages, which the real service never does. "An
//! LWT's response is lost" must hit the conditional writes themselves, after
//! Cassandra executed them, so the proxy reads the CQL frames (protocol v4,
//! the only one the scylla driver speaks; uncompressed, as ecom-cassandra
//! connects): it learns which prepared statement ids are conditional (their
//! `PREPARE` text has ` IF `), notes the stream id of each `EXECUTE` of one,
//! and when the server's `RESULT` for that stream comes back, forwards it,
//! withholds it, or withholds it and cuts the connection. The driver then
//! sees a request timeout or a broken connection with the write applied:
//! the unknown-outcome path of `CassandraStore::lwt`, for real.
//!
//! The driver connects to every node on the port it was given (it keeps
//! the contact point's port for the addresses in `system.local` and
//! `system.peers`), so a single-node cluster behind the proxy is reached
//! only through it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the proxy treats the bytes it carries.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Copies bytes both ways (gRPC to the Pub/Sub server).
    Bytes,
    /// Reads CQL v4 frames and loses conditional-write responses.
    Cql(LwtFaults),
}

/// Which conditional-write responses to lose, by a seeded draw per
/// response, until `max_lost` are lost.
#[derive(Debug, Clone)]
pub struct LwtFaults {
    /// Chance, per conditional-write response, that it is lost.
    pub ratio: f64,
    pub max_lost: u64,
    /// Every n-th lost response is withheld with the connection kept, and
    /// the client times out (10 s); the others are withheld and their
    /// connection cut, which the client sees at once.
    pub withhold_every: u64,
    /// Every response is held back up to this long (seeded), so that
    /// answers overtake each other.
    pub max_delay: Duration,
    pub seed: u64,
}

/// What the proxy did, for the test's summary and assertions.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub lwt_responses: AtomicU64,
    /// Withheld, the connection kept: the client times out.
    pub withheld: AtomicU64,
    /// Withheld and the connection cut.
    pub cut: AtomicU64,
}

pub struct Proxy {
    /// Runs the proxy's tasks; dropping it stops them.
    _rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    up: watch::Sender<bool>,
    pub stats: Arc<Stats>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub fn start(upstream: &str, kind: Kind) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let upstream: SocketAddr = upstream
            .parse()
            .unwrap_or_else(|e| panic!("proxy upstream {upstream:?}: {e}"));
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = watch::channel(true);
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            kind,
            stats: stats.clone(),
            lwt_ids: Mutex::new(HashSet::new()),
            draws: AtomicU64::new(0),
        });
        rt.spawn(serve(Some(listener), addr, upstream, up_rx, shared));
        Proxy {
            _rt: rt,
            addr,
            up,
            stats,
        }
    }

    /// `host:port` to give the client.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Down: every connection is cut and new ones are refused (the port is
    /// closed). Up: the same port accepts again.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
        // Let the accept loop close or reopen the port before returning.
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Shared {
    kind: Kind,
    stats: Arc<Stats>,
    /// Prepared statement ids of conditional writes.
    lwt_ids: Mutex<HashSet<Vec<u8>>>,
    /// Counter for the seeded draws.
    draws: AtomicU64,
}

impl Shared {
    /// A uniform draw in [0, 1), seeded and deterministic in draw order.
    fn draw(&self, seed: u64) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // splitmix64
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut up: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Some(l) = &listener else {
            // Down: wait to come back up, then reopen the same port.
            if up.changed().await.is_err() {
                return;
            }
            if *up.borrow() {
                listener = Some(rebind(addr).await);
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                conns.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        connection(client, server, shared).await;
                    }
                });
            }
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*up.borrow() {
                    listener = None;
                    conns.abort_all();
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    // The old listener is closed; the port may take a moment to be free.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy could not listen on {addr} again");
}

async fn connection(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    match shared.kind.clone() {
        Kind::Bytes => {
            tokio::select! {
                _ = tokio::io::copy(&mut cr, &mut sw) => {}
                _ = tokio::io::copy(&mut sr, &mut cw) => {}
            }
        }
        Kind::Cql(faults) => {
            // Stream ids of this connection's requests in flight: a
            // `PREPARE` of a conditional statement, or an `EXECUTE` of one.
            let pending: Mutex<HashMap<i16, Pending>> = Mutex::new(HashMap::new());
            let requests = async {
                while let Some(frame) = read_frame(&mut cr).await {
                    if let Some(p) = classify_request(&frame, &shared) {
                        pending.lock().unwrap().insert(frame.stream(), p);
                    }
                    if sw.write_all(&frame.0).await.is_err() {
                        return;
                    }
                }
            };
            let responses = async {
                while let Some(frame) = read_frame(&mut sr).await {
                    let p = pending.lock().unwrap().remove(&frame.stream());
                    if faults.max_delay > Duration::ZERO {
                        let d = shared.draw(faults.seed) * faults.max_delay.as_secs_f64();
                        tokio::time::sleep(Duration::from_secs_f64(d)).await;
                    }
                    match p {
                        Some(Pending::Prepare) => {
                            if let Some(id) = prepared_id(&frame) {
                                shared.lwt_ids.lock().unwrap().insert(id);
                            }
                        }
                        Some(Pending::Lwt) => {
                            let s = &shared.stats;
                            s.lwt_responses.fetch_add(1, Ordering::Relaxed);
                            let lost =
                                s.withheld.load(Ordering::Relaxed) + s.cut.load(Ordering::Relaxed);
                            if lost < faults.max_lost && shared.draw(faults.seed) < faults.ratio {
                                if !(lost + 1).is_multiple_of(faults.withhold_every.max(1)) {
                                    s.cut.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                                s.withheld.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        None => {}
                    }
                    if cw.write_all(&frame.0).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = requests => {}
                _ = responses => {}
            }
        }
    }
    // Dropping both halves of both sockets closes them.
}

/// A request whose response the proxy looks at.
enum Pending {
    /// `PREPARE` of a conditional statement: the response names its id.
    Prepare,
    /// `EXECUTE` of a conditional statement.
    Lwt,
}

const OP_RESULT: u8 = 0x08;
const OP_PREPARE: u8 = 0x09;
const OP_EXECUTE: u8 = 0x0A;
const RESULT_PREPARED: i32 = 0x0004;
const HEADER: usize = 9;

/// One whole CQL v4 frame: the 9-byte header and the body.
struct Frame(Vec<u8>);

impl Frame {
    fn stream(&self) -> i16 {
        i16::from_be_bytes([self.0[2], self.0[3]])
    }
    fn opcode(&self) -> u8 {
        self.0[4]
    }
    fn body(&self) -> &[u8] {
        &self.0[HEADER..]
    }
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut buf = vec![0u8; HEADER];
    r.read_exact(&mut buf).await.ok()?;
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    buf.resize(HEADER + len, 0);
    r.read_exact(&mut buf[HEADER..]).await.ok()?;
    Some(Frame(buf))
}

fn classify_request(frame: &Frame, shared: &Shared) -> Option<Pending> {
    let body = frame.body();
    match frame.opcode() {
        OP_PREPARE => {
            // [long string] query
            let len = i32::from_be_bytes(body.get(0..4)?.try_into().ok()?) as usize;
            let query = std::str::from_utf8(body.get(4..4 + len)?).ok()?;
            query
                .to_ascii_uppercase()
                .contains(" IF ")
                .then_some(Pending::Prepare)
        }
        OP_EXECUTE => {
            // [short bytes] id
            let len = u16::from_be_bytes(body.get(0..2)?.try_into().ok()?) as usize;
            let id = body.get(2..2 + len)?;
            shared
                .lwt_ids
                .lock()
                .unwrap()
                .contains(id)
                .then_some(Pending::Lwt)
        }
        _ => None,
    }
}

/// The statement id of a `RESULT` of kind `Prepared`.
fn prepared_id(frame: &Frame) -> Option<Vec<u8>> {
    if frame.opcode() != OP_RESULT {
        return None;
    }
    let body = frame.body();
    let kind = i32::from_be_bytes(body.get(0..4)?.try_into().ok()?);
    if kind != RESULT_PREPARED {
        return None;
    }
    let len = u16::from_be_bytes(body.get(4..6)?.try_into().ok()?) as usize;
    Some(body.get(6..6 + len)?.to_vec())
}
