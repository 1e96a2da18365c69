//! One connection of the call protocol: its streams, its pending requests and their
//! sweeper, its subscriptions.
//!
//! Every bidirectional stream the client opens is a channel of frames; requests on it are
//! multiplexed by id and each runs as its own task, so a slow operation holds up neither
//! the stream nor the connection. Ids are unique per connection while in flight.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use alknet_proto::call::{DecodeError, EventEnvelope, EventType, Frame, FrameDecoder};
use alknet_runtime::rt::{catch_panic, panic_message, run_or_spawn_guarded, spawn_guarded};
use alknet_runtime::{
    AccessControl, AuthContext, BiStream, Connection, Identity, RecvStream, VarInt,
};
use futures_util::future::{AbortHandle, Abortable};
use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use crate::context::{build_root_context, ItemSink, RootRequest, SinkOut};
use crate::env::OperationEnv;
use crate::error::CallError;
use crate::node::CallNode;
use crate::pubsub::Delivery;
use crate::registry::OperationHandler;
use crate::response::ResponseEnvelope;
use crate::writer::StreamWriter;

/// Stream error code: the peer sent bytes that are not frames (malformed, oversized or
/// truncated, with no readable id to answer to). Sent as RESET_STREAM and STOP_SENDING.
pub const STREAM_FRAMING_ERROR: u32 = 0x10;
/// Stream error code for unidirectional streams, which the call protocol does not use.
pub const STREAM_UNSUPPORTED: u32 = 0x11;
/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;
/// How far past its deadline a request may be before the sweeper evicts it: its own
/// timeout normally answers first.
const SWEEP_GRACE: Duration = Duration::from_secs(1);

/// Picks the identity a request runs as: the identity of its `auth_token` if it has one
/// that resolves, else the connection's (a token that does not resolve is logged and
/// ignored, never an escalation: the connection identity is what the caller has anyway).
pub fn resolve_identity(auth: &AuthContext, token: Option<&str>) -> Option<Identity> {
    let Some(token) = token else {
        return auth.identity.clone();
    };
    auth.provider.resolve_from_token(token).or_else(|| {
        tracing::warn!(
            remote = %auth.remote,
            connection_identity = ?auth.identity.as_ref().map(|i| &i.name),
            "auth_token did not resolve; the request runs as the connection identity"
        );
        auth.identity.clone()
    })
}

enum EntryKind {
    Request,
    Subscription,
}

struct PendingEntry {
    generation: u64,
    deadline: Option<Instant>,
    abort: AbortHandle,
    writer: StreamWriter,
    kind: EntryKind,
}

/// Requests and subscriptions in flight on a connection, by id.
#[derive(Default)]
pub struct PendingRequestMap {
    entries: FxHashMap<Arc<str>, PendingEntry>,
    next_generation: u64,
    requests: usize,
    subscriptions: usize,
}

impl PendingRequestMap {
    fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    fn insert(
        &mut self,
        id: Arc<str>,
        deadline: Option<Instant>,
        abort: AbortHandle,
        writer: StreamWriter,
        kind: EntryKind,
    ) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        match kind {
            EntryKind::Request => self.requests += 1,
            EntryKind::Subscription => self.subscriptions += 1,
        }
        self.entries.insert(
            id,
            PendingEntry {
                generation,
                deadline,
                abort,
                writer,
                kind,
            },
        );
        generation
    }

    /// Removes the entry for `id` if it is still the one registered as `generation`.
    fn finish(&mut self, id: &str, generation: u64) -> bool {
        if self
            .entries
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            self.remove(id);
            return true;
        }
        false
    }

    fn remove(&mut self, id: &str) -> Option<PendingEntry> {
        let e = self.entries.remove(id)?;
        match e.kind {
            EntryKind::Request => self.requests -= 1,
            EntryKind::Subscription => self.subscriptions -= 1,
        }
        Some(e)
    }

    /// Removes and returns the requests whose deadline is more than `grace` past `now`.
    fn expired(&mut self, now: Instant, grace: Duration) -> Vec<(Arc<str>, PendingEntry)> {
        let ids: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline.is_some_and(|d| d + grace <= now))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.remove(&id).map(|e| (id, e)))
            .collect()
    }

    /// Aborts and removes everything; returns how many requests were pending.
    fn fail_all(&mut self) -> usize {
        let n = self.requests;
        for (_, e) in self.entries.drain() {
            e.abort.abort();
        }
        self.requests = 0;
        self.subscriptions = 0;
        n
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a stream is being closed with [`STREAM_FRAMING_ERROR`].
#[derive(Debug, thiserror::Error)]
enum StreamFault {
    #[error("malformed frame without a readable id: {0}")]
    Malformed(DecodeError),
    #[error("frame of {len} bytes exceeds max_frame_size {max} and has no readable id")]
    Oversized { len: u64, max: usize },
    #[error("stream ended inside a frame: {0}")]
    Truncated(alknet_proto::call::TruncatedFrame),
    #[error("{0:?} frame without an id")]
    MissingId(EventType),
}

pub(crate) struct Session {
    node: Arc<CallNode>,
    auth: AuthContext,
    conn: Connection,
    pending: RefCell<PendingRequestMap>,
    /// Readers waiting for the in-flight count to drop below the limit.
    capacity_waiters: RefCell<Vec<Waker>>,
    connection_overlay: Arc<dyn OperationEnv>,
    closed: Cell<bool>,
}

impl Session {
    pub(crate) fn new(node: Arc<CallNode>, conn: Connection, auth: AuthContext) -> Rc<Self> {
        let mut overlay = BTreeMap::new();
        overlay.insert("ALKNET_PEER_ADDR".to_string(), auth.remote.to_string());
        overlay.insert(
            "ALKNET_ALPN".to_string(),
            String::from_utf8_lossy(&auth.alpn).into_owned(),
        );
        overlay.insert("ALKNET_WORKER".to_string(), conn.worker().to_string());
        if let Some(id) = &auth.identity {
            overlay.insert("ALKNET_IDENTITY".to_string(), id.name.clone());
        }
        if let Some(fp) = &auth.peer_fingerprint {
            overlay.insert("ALKNET_PEER_FINGERPRINT".to_string(), fp.to_string());
        }
        Rc::new(Self {
            node,
            auth,
            conn,
            pending: RefCell::default(),
            capacity_waiters: RefCell::default(),
            connection_overlay: Arc::new(overlay),
            closed: Cell::new(false),
        })
    }

    /// Serves the connection until it closes; then fails whatever is still pending.
    pub(crate) async fn run(self: Rc<Self>) {
        let stats = &self.node.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.active_connections.fetch_add(1, Ordering::Relaxed);
        let sweeper = self.clone();
        spawn_guarded("call sweeper", async move { sweeper.sweep_loop().await });
        let uni = self.conn.clone();
        spawn_guarded("call uni refuser", async move {
            while let Ok(mut recv) = uni.accept_uni().await {
                let _ = recv.stop(VarInt::from_u32(STREAM_UNSUPPORTED));
            }
        });
        while let Ok(stream) = self.conn.accept_bi().await {
            let session = self.clone();
            run_or_spawn_guarded(
                "call stream",
                async move { session.serve_stream(stream).await },
            );
        }
        self.closed.set(true);
        let failed = self.pending.borrow_mut().fail_all();
        self.wake_capacity_waiters();
        if failed > 0 {
            stats
                .failed_on_close
                .fetch_add(failed as u64, Ordering::Relaxed);
            tracing::debug!(
                remote = %self.auth.remote,
                failed,
                "connection closed: pending requests failed (INTERNAL \"connection closed\")"
            );
        }
        stats.active_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Evicts requests whose task outlived its deadline (say, blocked writing to a peer
    /// that stopped reading), answering `DEADLINE_EXCEEDED` where the stream still takes it.
    async fn sweep_loop(self: Rc<Self>) {
        let interval = self.node.limits.sweep_interval();
        loop {
            monoio::select! {
                _ = monoio::time::sleep(interval) => {}
                _ = self.conn.closed() => return,
            }
            if self.closed.get() {
                return;
            }
            let expired = self
                .pending
                .borrow_mut()
                .expired(Instant::now(), SWEEP_GRACE);
            if expired.is_empty() {
                continue;
            }
            self.node
                .stats
                .swept
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            self.wake_capacity_waiters();
            for (id, entry) in expired {
                entry.abort.abort();
                tracing::debug!(request = %id, "sweeper evicted a request past its deadline");
                let stats_node = self.node.clone();
                spawn_guarded("call sweep answer", async move {
                    let err = CallError::deadline_exceeded("deadline passed (evicted)");
                    stats_node.stats.error(err.code);
                    let _ = entry.writer.send_envelope(&error_envelope(&id, &err)).await;
                });
            }
        }
    }

    async fn serve_stream(self: Rc<Self>, stream: BiStream) {
        let BiStream { send, mut recv } = stream;
        let writer = StreamWriter::spawn(send, self.node.limits.write_queue_bytes);
        let max = self.node.limits.max_frame_size;
        let mut decoder = FrameDecoder::new(max);
        loop {
            while let Some(frame) = decoder.next_frame() {
                let outcome = match frame {
                    Frame::Body(mut body) => match EventEnvelope::decode(&mut body) {
                        Ok(env) => self.dispatch(env, &writer).await,
                        Err(e) => match e.id() {
                            Some(id) => {
                                let err =
                                    CallError::invalid_argument(format!("malformed frame: {e}"));
                                self.answer_error(&writer, id, err).await;
                                Ok(())
                            }
                            None => Err(StreamFault::Malformed(e)),
                        },
                    },
                    Frame::Oversized { len, id } => match id {
                        Some(id) => {
                            let err = CallError::invalid_argument(format!(
                                "frame of {len} bytes exceeds max_frame_size {max}"
                            ));
                            self.answer_error(&writer, &id, err).await;
                            Ok(())
                        }
                        None => Err(StreamFault::Oversized { len, max }),
                    },
                };
                if let Err(fault) = outcome {
                    self.close_stream(&mut recv, &writer, fault);
                    return;
                }
            }
            match recv.read_chunk(READ_CHUNK).await {
                Ok(Some(chunk)) => decoder.push(chunk),
                Ok(None) => {
                    if let Err(t) = decoder.finish() {
                        self.close_stream(&mut recv, &writer, StreamFault::Truncated(t));
                    }
                    // the stream finishes once every request on it has answered
                    return;
                }
                Err(e) => {
                    tracing::debug!("call stream read ended: {e}");
                    return;
                }
            }
        }
    }

    fn close_stream(&self, recv: &mut RecvStream, writer: &StreamWriter, fault: StreamFault) {
        self.node
            .stats
            .stream_framing_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(remote = %self.auth.remote, stream = %recv.id(), "closing call stream: {fault}");
        let code = VarInt::from_u32(STREAM_FRAMING_ERROR);
        let _ = recv.stop(code);
        writer.reset(code);
    }

    async fn answer_error(&self, writer: &StreamWriter, id: &str, err: CallError) {
        self.node.stats.error(err.code);
        let _ = writer.send_envelope(&error_envelope(id, &err)).await;
    }

    async fn dispatch(
        self: &Rc<Self>,
        env: EventEnvelope,
        writer: &StreamWriter,
    ) -> Result<(), StreamFault> {
        let kind = env.kind;
        let Some(id) = env.id.as_deref() else {
            return Err(StreamFault::MissingId(kind));
        };
        let id: Arc<str> = Arc::from(id);
        match kind {
            EventType::CallRequested => self.request(id, env.payload, writer).await,
            EventType::CallCancel => {
                if let Some(e) = self.pending.borrow_mut().remove(&id) {
                    e.abort.abort();
                    tracing::debug!(request = %id, "cancelled by the caller");
                }
                self.wake_capacity_waiters();
            }
            EventType::Subscribe => self.subscribe(id, env.payload, writer).await,
            EventType::Unsubscribe => {
                let is_subscription = self
                    .pending
                    .borrow()
                    .entries
                    .get(&*id)
                    .map(|e| matches!(e.kind, EntryKind::Subscription));
                match is_subscription {
                    Some(true) => {
                        if let Some(e) = self.pending.borrow_mut().remove(&id) {
                            e.abort.abort();
                        }
                        let end = EventEnvelope::new(
                            EventType::StreamEnd,
                            Some(id.to_string()),
                            json!({}),
                        );
                        let _ = writer.send_envelope(&end).await;
                    }
                    Some(false) => {
                        let e = CallError::invalid_argument(
                            "unsubscribe names a request, not a subscription",
                        );
                        self.answer_error(writer, &id, e).await;
                    }
                    None => {
                        let e = CallError::not_found("no such subscription");
                        self.answer_error(writer, &id, e).await;
                    }
                }
            }
            other => {
                let err = CallError::invalid_argument(format!(
                    "{} frames are sent by servers, not clients",
                    other.as_str()
                ));
                self.answer_error(writer, &id, err).await;
            }
        }
        Ok(())
    }

    /// Waits until fewer than the limit of requests are in flight, so a client that
    /// pipelines more is held back by flow control rather than queued in memory.
    async fn wait_for_capacity(&self) {
        let max = self.node.limits.max_in_flight_per_connection;
        poll_fn(|cx| {
            if self.closed.get() || self.pending.borrow().requests < max {
                return Poll::Ready(());
            }
            self.capacity_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn wake_capacity_waiters(&self) {
        for w in self.capacity_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn finish(&self, id: &str, generation: u64) {
        if self.pending.borrow_mut().finish(id, generation) {
            self.wake_capacity_waiters();
        }
    }

    async fn request(self: &Rc<Self>, id: Arc<str>, payload: Value, writer: &StreamWriter) {
        let node = &self.node;
        node.stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = match parse_request(payload) {
            Ok(r) => r,
            Err(e) => return self.answer_error(writer, &id, e).await,
        };
        if self.pending.borrow().contains(&id) {
            let e = CallError::invalid_argument(format!(
                "request id {id:?} is already in flight on this connection"
            ));
            return self.answer_error(writer, &id, e).await;
        }
        let identity = resolve_identity(&self.auth, req.auth_token.as_deref());
        let Some(reg) = node
            .registry
            .lookup(&req.operation_id)
            .filter(|r| !r.op.internal)
        else {
            let e = CallError::not_found(format!("unknown operation {:?}", req.operation_id));
            return self.answer_error(writer, &id, e).await;
        };
        if let Err(denied) = AccessControl::check(identity.as_ref(), &reg.op.id, &reg.op.access) {
            return self
                .answer_error(writer, &id, CallError::forbidden(denied.to_string()))
                .await;
        }
        if let Err(e) = reg.check_input(&req.input) {
            return self.answer_error(writer, &id, e).await;
        }
        self.wait_for_capacity().await;
        if self.closed.get() {
            return;
        }
        let ctx = build_root_context(
            node,
            &reg.op,
            RootRequest {
                request_id: id.clone(),
                identity,
                connection_identity: self.auth.identity.clone(),
                forwarded_for: req.forwarded_for,
                timeout: req.timeout,
                remote: self.auth.remote,
                connection_overlay: self.connection_overlay.clone(),
            },
            Instant::now(),
        );
        let (abort, registration) = AbortHandle::new_pair();
        let generation = self.pending.borrow_mut().insert(
            id.clone(),
            Some(ctx.deadline),
            abort,
            writer.clone(),
            EntryKind::Request,
        );
        let session = self.clone();
        let writer = writer.clone();
        let input = req.input;
        spawn_guarded("call request", async move {
            let run = Abortable::new(
                run_request(&session.node, ctx, input, &writer),
                registration,
            );
            let _ = run.await; // Err(Aborted): cancelled, evicted or the connection closed
            session.finish(&id, generation);
        });
    }

    async fn subscribe(self: &Rc<Self>, id: Arc<str>, payload: Value, writer: &StreamWriter) {
        let node = &self.node;
        let topic = match payload.get("topic").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => {
                return self
                    .answer_error(
                        writer,
                        &id,
                        CallError::invalid_argument("subscribe needs a string \"topic\""),
                    )
                    .await
            }
        };
        let token = match payload.get("auth_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => {
                return self
                    .answer_error(
                        writer,
                        &id,
                        CallError::invalid_argument("auth_token must be a string"),
                    )
                    .await
            }
        };
        if self.pending.borrow().contains(&id) {
            let e = CallError::invalid_argument(format!(
                "id {id:?} is already in flight on this connection"
            ));
            return self.answer_error(writer, &id, e).await;
        }
        let identity = resolve_identity(&self.auth, token);
        let Some(spec) = node.registry.topic(&topic) else {
            return self
                .answer_error(
                    writer,
                    &id,
                    CallError::not_found(format!("unknown topic {topic:?}")),
                )
                .await;
        };
        if let Err(denied) = AccessControl::check(identity.as_ref(), &spec.name, &spec.access) {
            return self
                .answer_error(writer, &id, CallError::forbidden(denied.to_string()))
                .await;
        }
        let max = node.limits.max_subscriptions_per_connection;
        if self.pending.borrow().subscriptions >= max {
            let e =
                CallError::unavailable(format!("max_subscriptions_per_connection ({max}) reached"));
            return self.answer_error(writer, &id, e).await;
        }
        let sub = node.bus.subscribe(&topic, node.limits.subscriber_queue);
        node.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        let (abort, registration) = AbortHandle::new_pair();
        let generation = self.pending.borrow_mut().insert(
            id.clone(),
            None,
            abort,
            writer.clone(),
            EntryKind::Subscription,
        );
        let ack: EventEnvelope = ResponseEnvelope {
            id: id.to_string(),
            result: Ok(json!({ "topic": topic })),
        }
        .into();
        let _ = writer.send_envelope(&ack).await;
        let session = self.clone();
        let writer = writer.clone();
        spawn_guarded("call subscription", async move {
            let pump = async {
                loop {
                    let frame = match sub.queue.next().await {
                        Delivery::Event(e) => EventEnvelope::new(
                            EventType::Event,
                            Some(id.to_string()),
                            json!({ "topic": &*e.topic, "seq": e.seq, "data": &*e.data }),
                        ),
                        Delivery::TooSlow { capacity } => {
                            let err = CallError::unavailable(format!(
                                "subscriber too slow: {capacity} events queued; subscription dropped"
                            ));
                            session.node.stats.error(err.code);
                            let _ = writer.send_envelope(&error_envelope(&id, &err)).await;
                            break;
                        }
                        Delivery::Closed => break,
                    };
                    if writer.send_envelope(&frame).await.is_err() {
                        break;
                    }
                }
            };
            let _ = Abortable::new(pump, registration).await;
            drop(sub);
            session.finish(&id, generation);
        });
    }
}

/// A `call.requested` payload, checked.
struct ParsedRequest {
    operation_id: String,
    input: Value,
    auth_token: Option<String>,
    timeout: Option<Duration>,
    forwarded_for: Option<Value>,
}

fn parse_request(payload: Value) -> Result<ParsedRequest, CallError> {
    let Value::Object(mut m) = payload else {
        return Err(CallError::invalid_argument(
            "call.requested payload must be an object",
        ));
    };
    let operation_id = match m.remove("operationId") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(CallError::invalid_argument(
                "call.requested needs a string \"operationId\"",
            ))
        }
    };
    let auth_token = match m.remove("auth_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(CallError::invalid_argument("auth_token must be a string")),
    };
    let timeout = match m.remove("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(ms) => Some(Duration::from_millis(ms)),
            None => {
                return Err(CallError::invalid_argument(
                    "timeout_ms must be a non-negative integer",
                ))
            }
        },
    };
    Ok(ParsedRequest {
        operation_id,
        input: m.remove("input").unwrap_or(Value::Null),
        auth_token,
        timeout,
        forwarded_for: m.remove("forwarded_for"),
    })
}

fn error_envelope(id: &str, err: &CallError) -> EventEnvelope {
    EventEnvelope::new(EventType::CallError, Some(id.to_string()), err.to_payload())
}

/// Runs one request to its answer: deadline, panic isolation, output schema, then the
/// frame(s) back.
async fn run_request(
    node: &Arc<CallNode>,
    ctx: crate::context::CallContext,
    input: Value,
    writer: &StreamWriter,
) {
    let id = ctx.request_id.clone();
    let remaining = ctx.remaining();
    let Some(reg) = node.registry.lookup(&ctx.operation_id) else {
        return; // looked up before spawning; the registry is immutable
    };
    let (result, streaming) = match &reg.op.handler {
        OperationHandler::Unary(f) => {
            let outcome = monoio::time::timeout(remaining, catch_panic(f(ctx, input))).await;
            let r = settle(&reg.op.id, outcome).and_then(|v| reg.check_output(&v).map(|_| v));
            (r, false)
        }
        OperationHandler::Stream(f) => {
            let sink = ItemSink {
                out: SinkOut::Wire {
                    writer: writer.clone(),
                    id: id.clone(),
                },
                seq: 0,
            };
            let outcome = monoio::time::timeout(remaining, catch_panic(f(ctx, input, sink))).await;
            (settle(&reg.op.id, outcome).map(|()| Value::Null), true)
        }
    };
    match &result {
        Ok(_) => node.stats.responses.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            node.stats.error(e.code);
            0
        }
    };
    let env: EventEnvelope = match result {
        Ok(_) if streaming => {
            EventEnvelope::new(EventType::StreamEnd, Some(id.to_string()), json!({}))
        }
        result => ResponseEnvelope {
            id: id.to_string(),
            result,
        }
        .into(),
    };
    let _ = writer.send_envelope(&env).await;
}

/// An operation's result inside its panic guard inside its deadline.
type Guarded<T> = Result<
    Result<Result<T, CallError>, Box<dyn std::any::Any + Send>>,
    monoio::time::error::Elapsed,
>;

/// Folds the deadline and panic layers around an operation's result into one.
pub(crate) fn settle<T>(op: &str, outcome: Guarded<T>) -> Result<T, CallError> {
    match outcome {
        Err(_) => Err(CallError::deadline_exceeded(format!(
            "{op} did not finish before its deadline"
        ))),
        Ok(Err(panic)) => {
            tracing::error!(op, panic = %panic_message(&*panic), "operation panicked");
            Err(CallError::internal(format!("{op} failed (panicked)")))
        }
        Ok(Ok(r)) => r,
    }
}
