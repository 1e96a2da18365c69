//! `doq`: DNS over QUIC (RFC 9250) queries per second against any DoQ server (alknet's
//! `doq` handler, or hickory-dns's DoQ server, started by `loadtest/dns-measure.sh`).
//!
//! `connections` connection loops per run, each running `streams` closed-loop query slots:
//! one query per new bidirectional stream (2-byte length, message ID 0, FIN), the answer
//! read to FIN and checked (ID 0, a response, NOERROR with an answer). A connection
//! carries at most `queries_per_connection` queries, then is closed and replaced by a new
//! one (the handshake is part of the load), as a DoQ client must do against a server that
//! ends connections after a fixed number of queries (hickory-dns ends each one after 100).
//!
//! With `--doq-rate` set the load is offered at that many queries per second instead (to
//! compare latency at the same load, where a closed loop compares it at each server's own
//! rate): each connection loop hands out send times `connections / rate` apart, a slot
//! waits for its time before it asks, and a query whose slot was still busy at its send
//! time counts its latency from that time, not from when the slot got to it, so a server
//! that falls behind is charged for the queue it caused (no coordinated omission); a slot
//! that waited counts from when the query left (the timer's lateness is the client's, not
//! the server's). `streams` still bounds the queries in flight per connection; a run that
//! cannot keep up shows it as queries/s below the rate.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::{Connection, ReadToEndError, VarInt};
use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::harness::{cpu_over_window, wait_for_start, ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

/// A query slower than this counts as an error (rather than stalling its slot).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (the DoQ message limit plus its length prefix).
const MAX_ANSWER: usize = 2 + 65_535;
/// DNS header: ID (2), flags (2), QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (2 each).
const HEADER: usize = 12;

#[derive(Debug, Clone)]
pub struct Doq {
    /// Connection loops of each client thread.
    pub connections: Vec<usize>,
    /// Queries in flight per connection.
    pub streams: usize,
    /// Queries a connection carries before it is replaced (0: until the run ends).
    pub queries_per_connection: u64,
    /// Framed queries (length prefix included), sent round robin.
    pub queries: Arc<Vec<Bytes>>,
    /// Paced mode: time between two send times of one connection loop (`None`: closed
    /// loop).
    pub pace: Option<Duration>,
}

impl Doq {
    /// Queries for `host0.<zone>` … `host<names-1>.<zone>` (A), the names
    /// `dns-measure.sh` puts in its zone.
    pub fn new(
        connections: usize,
        threads: usize,
        streams: usize,
        queries_per_connection: u64,
        zone: &str,
        names: u32,
        rate: u64,
    ) -> Result<Self, String> {
        let queries = (0..names.max(1))
            .map(|i| framed_query(&format!("host{i}.{zone}")))
            .collect::<Result<Vec<_>, _>>()?;
        // every connection loop offers rate / connections queries per second
        let pace =
            (rate > 0).then(|| Duration::from_secs_f64(connections.max(1) as f64 / rate as f64));
        Ok(Self {
            connections: split(connections, threads),
            streams,
            queries_per_connection,
            queries: Arc::new(queries),
            pace,
        })
    }
}

/// A standard A query for `name` with message ID 0 (RFC 9250 §4.2.1), length-prefixed.
fn framed_query(name: &str) -> Result<Bytes, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("query name {name:?}: {e}"))?;
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name, RecordType::A));
    let wire = m.to_vec().map_err(|e| format!("encoding a query: {e}"))?;
    let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_string())?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&wire);
    Ok(out.into())
}

/// Checks a framed answer: the length prefix covers the rest, ID 0, QR set, RCODE NOERROR,
/// at least one answer record.
fn check_answer(framed: &[u8]) -> Result<(), &'static str> {
    let (len, msg) = framed.split_at_checked(2).ok_or("short answer")?;
    if usize::from(u16::from_be_bytes([len[0], len[1]])) != msg.len() || msg.len() < HEADER {
        return Err("bad answer framing");
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let (flags, rcode) = (msg[2], msg[3] & 0x0f);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    if id != 0 || flags & 0x80 == 0 || rcode != 0 || answers == 0 {
        return Err("wrong answer");
    }
    Ok(())
}

impl Workload for Doq {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let _ = ready.send(());
        let Some(sched) = wait_for_start(&schedule).await else {
            return Tally::default();
        };
        let cpu = monoio::spawn(cpu_over_window(sched));
        let thread = Rc::new(thread);
        let tally = Rc::new(RefCell::new(Tally::default()));
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        // this thread's loops in the run's numbering of all loops
        let before: usize = self.connections.iter().take(thread.index).sum();
        let all: usize = self.connections.iter().sum();
        let this = Rc::new(self);
        // each loop starts at a different query, so the threads do not ask in lock-step
        let loops: Vec<_> = (0..n)
            .map(|i| {
                let start = (thread.index * 7919 + i * 104_729) % this.queries.len();
                // paced loops start spread evenly over one interval, not all at once
                let offset = this.pace.map_or(Duration::ZERO, |p| {
                    p.mul_f64((before + i) as f64 / all.max(1) as f64)
                });
                monoio::spawn(connection_loop(
                    thread.clone(),
                    this.clone(),
                    sched,
                    tally.clone(),
                    start,
                    offset,
                ))
            })
            .collect();
        for l in loops {
            l.await;
        }
        let mut out = tally.replace(Tally::default());
        out.cpu_s = cpu.await;
        let _ =
            monoio::time::timeout(crate::harness::CLOSE_TIMEOUT, thread.endpoint.wait_idle()).await;
        out.client = thread.endpoint.stats();
        out
    }
}

/// Connect, run the query slots until the connection's budget or the run ends, close,
/// and again.
async fn connection_loop(
    thread: Rc<ClientThread>,
    doq: Rc<Doq>,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
    mut next: usize,
    offset: Duration,
) {
    // paced mode: the next send time, carried over to the replacement connection
    let tickets = Rc::new(Cell::new(Instant::now() + offset));
    while Instant::now() < sched.end {
        let mut scratch = Tally::default();
        let Some(conn) = thread.connect(&mut scratch).await else {
            if sched.measuring(Instant::now()) {
                let why = scratch.first_error.unwrap_or_default();
                tally.borrow_mut().error("connect", || why);
            }
            continue;
        };
        if sched.measuring(Instant::now()) {
            tally.borrow_mut().connected += 1;
        }
        let budget = match doq.queries_per_connection {
            0 => u64::MAX,
            n => n,
        };
        let quota = Rc::new(Quota {
            issued: Cell::new(0),
            budget,
            tickets: tickets.clone(),
        });
        let slots: Vec<_> = (0..doq.streams)
            .map(|_| {
                let first = next;
                next = (next + 1) % doq.queries.len();
                monoio::spawn(slot(
                    conn.clone(),
                    doq.clone(),
                    sched,
                    tally.clone(),
                    quota.clone(),
                    first,
                ))
            })
            .collect();
        for s in slots {
            s.await;
        }
        next = (next + quota.issued.get() as usize) % doq.queries.len();
        conn.close(VarInt::from_u32(0), b"");
    }
}

/// What the slots of one connection share.
struct Quota {
    /// Queries asked on this connection so far.
    issued: Cell<u64>,
    /// Queries the connection may carry.
    budget: u64,
    /// Paced mode: the connection loop's next send time.
    tickets: Rc<Cell<Instant>>,
}

/// One query slot on `conn`, while the connection's budget lasts.
async fn slot(
    conn: Connection,
    doq: Rc<Doq>,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
    quota: Rc<Quota>,
    mut q: usize,
) {
    let Quota {
        issued,
        budget,
        tickets,
    } = &*quota;
    while Instant::now() < sched.end && issued.get() < *budget && conn.close_reason().is_none() {
        // counted before any wait, so the slots waiting together never pass the budget
        issued.set(issued.get() + 1);
        let started = match doq.pace {
            None => Instant::now(),
            Some(pace) => {
                let at = tickets.get();
                if at >= sched.end {
                    break;
                }
                tickets.set(at + pace);
                if Instant::now() >= at {
                    // late because this slot's previous query was still out: the server's
                    // backlog, charged from the send time
                    at
                } else {
                    // early: wait, and count from when it really leaves (monoio's timer
                    // fires up to a millisecond late; that delay is the client's)
                    monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
                    Instant::now()
                }
            }
        };
        let deadline = (started + QUERY_TIMEOUT).min(sched.end);
        let query = doq.queries[q].clone();
        q = (q + doq.streams) % doq.queries.len();
        let res =
            monoio::time::timeout_at(monoio::time::Instant::from_std(deadline), ask(&conn, query))
                .await;
        let done = Instant::now();
        if sched.measuring(done) {
            let mut t = tally.borrow_mut();
            match res {
                Ok(Ok(bytes)) => t.record(done - started, bytes),
                Ok(Err(kind)) => t.error(kind, || format!("query on {conn:?}")),
                Err(_) if deadline < sched.end => t.error("timeout", || "timed out".into()),
                Err(_) => {}
            }
        }
    }
}

/// One query on a new stream; `Ok(bytes moved)`.
async fn ask(conn: &Connection, query: Bytes) -> Result<u64, &'static str> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
    let sent = query.len() as u64;
    send.write_chunk(query).await.map_err(|_| "write")?;
    send.finish().map_err(|_| "write")?;
    match recv.read_to_end(MAX_ANSWER).await {
        Ok(answer) => check_answer(&answer).map(|()| sent + answer.len() as u64),
        Err(ReadToEndError::TooLong(_)) => Err("answer too long"),
        Err(ReadToEndError::Read(_)) => Err("read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offered_rate_is_split_over_the_connections() {
        let closed = Doq::new(32, 2, 8, 100, "bench.test", 10, 0).expect("closed loop");
        assert_eq!(closed.pace, None);
        assert_eq!(closed.connections, vec![16, 16]);
        let paced = Doq::new(32, 2, 8, 100, "bench.test", 10, 64_000).expect("paced");
        // 32 loops at 2 000 queries/s each
        assert_eq!(paced.pace, Some(Duration::from_micros(500)));
    }

    #[test]
    fn query_is_framed_with_id_zero() {
        let q = framed_query("host1.bench.test").expect("query");
        assert_eq!(usize::from(u16::from_be_bytes([q[0], q[1]])), q.len() - 2);
        let m = Message::from_vec(&q[2..]).expect("decodes");
        assert_eq!(m.id, 0);
        assert_eq!(m.queries.len(), 1);
    }

    #[test]
    fn answers_are_checked() {
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("host1.bench.test").expect("name");
        m.add_query(Query::query(name.clone(), RecordType::A));
        let empty = m.to_vec().expect("encode");
        let frame = |wire: &[u8]| {
            let mut f = (wire.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(wire);
            f
        };
        // no answer record: NODATA is not what the load asks for
        assert_eq!(check_answer(&frame(&empty)), Err("wrong answer"));
        m.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            60,
            hickory_proto::rr::RData::A("10.0.0.1".parse().expect("ip")),
        ));
        let good = m.to_vec().expect("encode");
        assert_eq!(check_answer(&frame(&good)), Ok(()));
        let mut bad_len = frame(&good);
        bad_len.pop();
        assert_eq!(check_answer(&bad_len), Err("bad answer framing"));
        let mut nonzero_id = frame(&good);
        nonzero_id[3] = 1;
        assert_eq!(check_answer(&nonzero_id), Err("wrong answer"));
        assert_eq!(check_answer(&[0]), Err("short answer"));
    }
}
