//! A Rust client for `alknet/call` on the engine's client endpoint.
//!
//! A [`CallClient`] owns one bidirectional stream of a connection and multiplexes any
//! number of calls, streaming calls and subscriptions on it by id. Open several clients on
//! one connection for several streams. When the stream or the connection ends, every
//! call still waiting fails with `INTERNAL "connection closed"`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use alknet_proto::call::{EventEnvelope, EventType, Frame, FrameDecoder};
use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{Connection, RecvStream};
use rustc_hash::FxHashMap;
use serde_json::{json, Map, Value};

use crate::error::CallError;
use crate::limits::{DEFAULT_MAX_FRAME_SIZE, DEFAULT_WRITE_QUEUE_BYTES};
use crate::response::ResponseEnvelope;
use crate::writer::StreamWriter;

/// Messages buffered per streaming call or subscription before the client stops reading
/// the stream (and so, by flow control, the server stops sending).
pub const CLIENT_STREAM_BUFFER: usize = 1024;
const READ_CHUNK: usize = 64 * 1024;

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Runs the call as this token's identity instead of the connection's.
    pub auth_token: Option<String>,
    /// Asks for a deadline shorter than the server's default.
    pub timeout: Option<Duration>,
    /// Who this call is made for (metadata for the server; never authority).
    pub forwarded_for: Option<Value>,
}

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMessage {
    pub topic: String,
    pub seq: u64,
    pub data: Value,
}

enum Incoming {
    Ack,
    Item(Value),
    Event(TopicMessage),
    End,
}

enum Waiter {
    Unary(async_channel::Sender<Result<Value, CallError>>),
    Stream(async_channel::Sender<Result<Incoming, CallError>>),
}

struct Shared {
    conn: Connection,
    writer: StreamWriter,
    waiters: RefCell<FxHashMap<String, Waiter>>,
    stream_tag: u64,
    next: Cell<u64>,
    /// Why the stream ended, once it has.
    ended: RefCell<Option<CallError>>,
    default_token: RefCell<Option<String>>,
}

/// A call client on one stream.
#[derive(Clone)]
pub struct CallClient {
    shared: Rc<Shared>,
}

/// Removes a call's waiter if its future is dropped before the answer, and tells the
/// server to stop working on it.
struct CancelOnDrop<'a> {
    shared: &'a Rc<Shared>,
    id: String,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed || self.shared.waiters.borrow_mut().remove(&self.id).is_none() {
            return;
        }
        let shared = self.shared.clone();
        let id = std::mem::take(&mut self.id);
        spawn_guarded("call cancel", async move {
            let env = EventEnvelope::new(EventType::CallCancel, Some(id), Value::Null);
            let _ = shared.writer.send_envelope(&env).await;
        });
    }
}

impl CallClient {
    /// Opens a stream on `conn` for calls.
    pub async fn new(conn: &Connection) -> Result<Self, CallError> {
        let stream = conn
            .open_bi()
            .await
            .map_err(|e| CallError::unavailable(format!("opening a call stream: {e}")))?;
        let tag = stream.id().index();
        let (send, recv) = stream.split();
        let shared = Rc::new(Shared {
            conn: conn.clone(),
            writer: StreamWriter::spawn(send, DEFAULT_WRITE_QUEUE_BYTES),
            waiters: RefCell::default(),
            stream_tag: tag,
            next: Cell::new(0),
            ended: RefCell::new(None),
            default_token: RefCell::new(None),
        });
        let reader = Rc::downgrade(&shared);
        spawn_guarded("call client reader", read_loop(reader, recv));
        Ok(Self { shared })
    }

    /// Sends `token` with every call that does not set its own.
    pub fn set_default_token(&self, token: Option<String>) {
        *self.shared.default_token.borrow_mut() = token;
    }

    pub fn connection(&self) -> &Connection {
        &self.shared.conn
    }

    /// Calls `operation` with `input` and waits for its output.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        self.call_with(operation, input, &CallOptions::default())
            .await
    }

    pub async fn call_with(
        &self,
        operation: &str,
        input: Value,
        opts: &CallOptions,
    ) -> Result<Value, CallError> {
        let (tx, rx) = async_channel::bounded(1);
        let id = self.register(Waiter::Unary(tx))?;
        let mut guard = CancelOnDrop {
            shared: &self.shared,
            id: id.clone(),
            armed: true,
        };
        self.send_request(
            EventType::CallRequested,
            &id,
            self.request_payload(operation, input, opts),
        )
        .await?;
        let r = rx.recv().await.unwrap_or_else(|_| Err(self.end_error()));
        guard.armed = false;
        r
    }

    /// Calls a streaming operation; its items arrive on the returned stream.
    pub async fn call_stream(
        &self,
        operation: &str,
        input: Value,
    ) -> Result<ItemStream, CallError> {
        let (tx, rx) = async_channel::bounded(CLIENT_STREAM_BUFFER);
        let id = self.register(Waiter::Stream(tx))?;
        let payload = self.request_payload(operation, input, &CallOptions::default());
        self.send_request(EventType::CallRequested, &id, payload)
            .await?;
        Ok(ItemStream {
            rx,
            done: false,
            client: self.clone(),
        })
    }

    /// Subscribes to a topic; returns once the server accepted the subscription.
    pub async fn subscribe(&self, topic: &str) -> Result<SubscriptionStream, CallError> {
        let (tx, rx) = async_channel::bounded(CLIENT_STREAM_BUFFER);
        let id = self.register(Waiter::Stream(tx))?;
        let mut payload = Map::new();
        payload.insert("topic".into(), json!(topic));
        if let Some(t) = self.shared.default_token.borrow().clone() {
            payload.insert("auth_token".into(), json!(t));
        }
        self.send_request(EventType::Subscribe, &id, Value::Object(payload))
            .await?;
        match rx.recv().await {
            Ok(Ok(Incoming::Ack)) => Ok(SubscriptionStream {
                rx,
                id,
                done: false,
                client: self.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(CallError::internal(
                "subscription answered before its acknowledgement",
            )),
            Err(_) => Err(self.end_error()),
        }
    }

    /// Calls still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.shared.waiters.borrow().len()
    }

    fn request_payload(&self, operation: &str, input: Value, opts: &CallOptions) -> Value {
        let mut m = Map::new();
        m.insert("operationId".into(), json!(operation));
        m.insert("input".into(), input);
        let token = opts
            .auth_token
            .clone()
            .or_else(|| self.shared.default_token.borrow().clone());
        if let Some(t) = token {
            m.insert("auth_token".into(), json!(t));
        }
        if let Some(t) = opts.timeout {
            m.insert("timeout_ms".into(), json!(t.as_millis() as u64));
        }
        if let Some(f) = &opts.forwarded_for {
            m.insert("forwarded_for".into(), f.clone());
        }
        Value::Object(m)
    }

    fn register(&self, waiter: Waiter) -> Result<String, CallError> {
        if let Some(e) = self.shared.ended.borrow().clone() {
            return Err(e);
        }
        let n = self.shared.next.get();
        self.shared.next.set(n + 1);
        // unique per connection: stream index, then a counter
        let id = format!("{}.{}", self.shared.stream_tag, n);
        self.shared.waiters.borrow_mut().insert(id.clone(), waiter);
        Ok(id)
    }

    async fn send_request(
        &self,
        kind: EventType,
        id: &str,
        payload: Value,
    ) -> Result<(), CallError> {
        let env = EventEnvelope::new(kind, Some(id.to_string()), payload);
        if self.shared.writer.send_envelope(&env).await.is_err() {
            self.shared.waiters.borrow_mut().remove(id);
            return Err(self.end_error());
        }
        Ok(())
    }

    fn end_error(&self) -> CallError {
        self.shared
            .ended
            .borrow()
            .clone()
            .unwrap_or_else(|| CallError::internal("connection closed"))
    }
}

/// Items of a streaming call.
pub struct ItemStream {
    rx: async_channel::Receiver<Result<Incoming, CallError>>,
    done: bool,
    client: CallClient,
}

impl ItemStream {
    /// The next item; `None` after the end (or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<Value, CallError>> {
        if self.done {
            return None;
        }
        let r = match self.rx.recv().await {
            Ok(Ok(Incoming::Item(v))) => return Some(Ok(v)),
            Ok(Ok(Incoming::End)) => None,
            Ok(Ok(_)) => Some(Err(CallError::internal(
                "unexpected frame in an item stream",
            ))),
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(self.client.end_error())),
        };
        self.done = true;
        r
    }
}

/// Events of a subscription.
pub struct SubscriptionStream {
    rx: async_channel::Receiver<Result<Incoming, CallError>>,
    id: String,
    done: bool,
    client: CallClient,
}

impl SubscriptionStream {
    /// The next event; `Some(Err(UNAVAILABLE))` if the server dropped this subscriber for
    /// being too slow; `None` after unsubscribing or an error.
    pub async fn next(&mut self) -> Option<Result<TopicMessage, CallError>> {
        if self.done {
            return None;
        }
        let r = match self.rx.recv().await {
            Ok(Ok(Incoming::Event(m))) => return Some(Ok(m)),
            Ok(Ok(Incoming::End)) => None,
            Ok(Ok(_)) => Some(Err(CallError::internal(
                "unexpected frame in a subscription",
            ))),
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(self.client.end_error())),
        };
        self.done = true;
        r
    }

    /// Ends the subscription; events already in flight are discarded.
    pub async fn unsubscribe(mut self) -> Result<(), CallError> {
        let env = EventEnvelope::new(EventType::Unsubscribe, Some(self.id.clone()), Value::Null);
        self.client
            .shared
            .writer
            .send_envelope(&env)
            .await
            .map_err(|_| self.client.end_error())?;
        while let Some(r) = self.next().await {
            r?;
        }
        Ok(())
    }
}

async fn read_loop(shared: std::rc::Weak<Shared>, mut recv: RecvStream) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let why = loop {
        let chunk = match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(c)) => c,
            Ok(None) => break CallError::internal("connection closed"),
            Err(e) => break CallError::internal(format!("connection closed ({e})")),
        };
        decoder.push(chunk);
        let mut fault = None;
        while let Some(frame) = decoder.next_frame() {
            let env = match frame {
                Frame::Body(mut body) => match EventEnvelope::decode(&mut body) {
                    Ok(env) => env,
                    Err(e) => {
                        fault = Some(CallError::internal(format!(
                            "malformed frame from the server: {e}"
                        )));
                        break;
                    }
                },
                Frame::Oversized { len, .. } => {
                    fault = Some(CallError::internal(format!(
                        "server frame of {len} bytes exceeds the client limit"
                    )));
                    break;
                }
            };
            let Some(shared) = shared.upgrade() else {
                return;
            };
            deliver(&shared, env).await;
        }
        if let Some(f) = fault {
            break f;
        }
    };
    let Some(shared) = shared.upgrade() else {
        return;
    };
    *shared.ended.borrow_mut() = Some(why.clone());
    let waiters: Vec<Waiter> = shared
        .waiters
        .borrow_mut()
        .drain()
        .map(|(_, w)| w)
        .collect();
    for w in waiters {
        match w {
            Waiter::Unary(tx) => {
                let _ = tx.try_send(Err(why.clone()));
            }
            Waiter::Stream(tx) => {
                let _ = tx.try_send(Err(why.clone()));
            }
        }
    }
}

/// Hands one server frame to whoever waits for its id.
async fn deliver(shared: &Rc<Shared>, env: EventEnvelope) {
    let Some(id) = env.id.clone() else {
        tracing::debug!(kind = ?env.kind, "server frame without id ignored");
        return;
    };
    let kind = env.kind;
    let terminal = matches!(kind, EventType::CallError | EventType::StreamEnd)
        || (kind == EventType::CallResponded
            && matches!(shared.waiters.borrow().get(&id), Some(Waiter::Unary(_))));
    let waiter = if terminal {
        shared.waiters.borrow_mut().remove(&id)
    } else {
        match shared.waiters.borrow().get(&id) {
            Some(Waiter::Stream(tx)) => Some(Waiter::Stream(tx.clone())),
            _ => None,
        }
    };
    let Some(waiter) = waiter else {
        return; // cancelled or unknown: dropped
    };
    match waiter {
        Waiter::Unary(tx) => {
            if let Ok(r) = ResponseEnvelope::try_from(env) {
                let _ = tx.try_send(r.result);
            }
        }
        Waiter::Stream(tx) => {
            let msg = match kind {
                EventType::CallResponded => Ok(Incoming::Ack),
                EventType::StreamEnd => Ok(Incoming::End),
                EventType::CallError => Err(CallError::from_payload(&env.payload)),
                EventType::StreamItem => Ok(Incoming::Item(take(env.payload, "item"))),
                EventType::Event => {
                    let mut p = env.payload;
                    Ok(Incoming::Event(TopicMessage {
                        topic: p["topic"].as_str().unwrap_or_default().to_string(),
                        seq: p["seq"].as_u64().unwrap_or_default(),
                        data: p.get_mut("data").map(Value::take).unwrap_or(Value::Null),
                    }))
                }
                _ => return,
            };
            // waits while the consumer is behind: back-pressure onto the stream
            let _ = tx.send(msg).await;
        }
    }
}

fn take(mut v: Value, key: &str) -> Value {
    v.get_mut(key).map(Value::take).unwrap_or(Value::Null)
}
