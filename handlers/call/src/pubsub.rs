//! Node-wide topics. Publishing (from an operation or from the node) reaches subscribers on
//! every worker; each subscriber has its own bounded queue, and one that falls behind by a
//! whole queue is dropped with an error event instead of growing memory or slowing the
//! publisher or the other subscribers.
//!
//! This is the one place the call handler crosses cores in steady state: a publish locks
//! the topic's subscriber list (never on the packet path) and wakes each subscriber's task
//! on its own worker.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;
use rustc_hash::FxHashMap;
use serde_json::Value;

/// One published event, shared by all its subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicEvent {
    pub topic: Arc<str>,
    /// Per-topic publish sequence number, so a subscriber can tell it missed nothing.
    pub seq: u64,
    pub data: Arc<Value>,
}

/// A subscriber's receiving end.
pub struct SubscriberQueue {
    queue: ArrayQueue<TopicEvent>,
    waker: AtomicWaker,
    /// Set when an event did not fit: the subscription is over.
    overflowed: AtomicBool,
    /// Set when unsubscribed or the bus dropped it.
    closed: AtomicBool,
    id: u64,
}

/// What a subscriber gets next.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    Event(TopicEvent),
    /// The queue overflowed; `capacity` events were waiting.
    TooSlow {
        capacity: usize,
    },
    Closed,
}

impl SubscriberQueue {
    /// Waits for the next event.
    pub async fn next(&self) -> Delivery {
        poll_fn(|cx| {
            if let Some(e) = self.queue.pop() {
                return Poll::Ready(Delivery::Event(e));
            }
            self.waker.register(cx.waker());
            if let Some(e) = self.queue.pop() {
                return Poll::Ready(Delivery::Event(e));
            }
            if self.overflowed.load(Ordering::Acquire) {
                return Poll::Ready(Delivery::TooSlow {
                    capacity: self.queue.capacity(),
                });
            }
            if self.closed.load(Ordering::Acquire) {
                return Poll::Ready(Delivery::Closed);
            }
            Poll::Pending
        })
        .await
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

struct TopicSubscribers {
    name: Arc<str>,
    next_seq: u64,
    subscribers: Vec<Arc<SubscriberQueue>>,
}

/// The node's topics and their subscribers.
#[derive(Default)]
pub struct TopicBus {
    topics: Mutex<FxHashMap<Arc<str>, TopicSubscribers>>,
    next_id: AtomicU64,
    published: AtomicU64,
    dropped_subscribers: AtomicU64,
}

/// Keeps a subscription alive; dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<TopicBus>,
    topic: Arc<str>,
    pub queue: Arc<SubscriberQueue>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.remove(&self.topic, self.queue.id);
        self.queue.close();
    }
}

impl TopicBus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Subscribes to `topic` with a queue of `capacity` events.
    pub fn subscribe(self: &Arc<Self>, topic: &str, capacity: usize) -> Subscription {
        let queue = Arc::new(SubscriberQueue {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        });
        let topic: Arc<str> = Arc::from(topic);
        self.lock()
            .entry(topic.clone())
            .or_insert_with(|| TopicSubscribers {
                name: topic.clone(),
                next_seq: 0,
                subscribers: Vec::new(),
            })
            .subscribers
            .push(queue.clone());
        Subscription {
            bus: self.clone(),
            topic,
            queue,
        }
    }

    /// Publishes `data` on `topic`; returns how many subscribers got it. Subscribers whose
    /// queue is full are dropped (they see [`Delivery::TooSlow`]).
    pub fn publish(&self, topic: &str, data: Value) -> usize {
        let data = Arc::new(data);
        let mut topics = self.lock();
        let Some(subs) = topics.get_mut(topic) else {
            return 0;
        };
        let event = TopicEvent {
            topic: subs.name.clone(),
            seq: subs.next_seq,
            data,
        };
        subs.next_seq += 1;
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut delivered = 0;
        subs.subscribers.retain(|s| {
            if s.queue.push(event.clone()).is_ok() {
                delivered += 1;
                s.waker.wake();
                true
            } else {
                s.overflowed.store(true, Ordering::Release);
                s.waker.wake();
                self.dropped_subscribers.fetch_add(1, Ordering::Relaxed);
                false
            }
        });
        delivered
    }

    /// Current subscriber count of `topic`.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.lock().get(topic).map_or(0, |s| s.subscribers.len())
    }

    /// (events published, subscribers dropped for being slow) since start.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.dropped_subscribers.load(Ordering::Relaxed),
        )
    }

    fn remove(&self, topic: &str, id: u64) {
        let mut topics = self.lock();
        if let Some(subs) = topics.get_mut(topic) {
            subs.subscribers.retain(|s| s.id != id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<Arc<str>, TopicSubscribers>> {
        // a panic while holding this lock leaves the map consistent (no partial updates)
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn events_reach_every_subscriber_in_order() {
        let bus = TopicBus::new();
        let a = bus.subscribe("t", 8);
        let b = bus.subscribe("t", 8);
        assert_eq!(bus.publish("t", json!(1)), 2);
        assert_eq!(bus.publish("t", json!(2)), 2);
        assert_eq!(bus.publish("other", json!(3)), 0);
        block_on(async {
            for sub in [&a, &b] {
                for (seq, v) in [(0, 1), (1, 2)] {
                    match sub.queue.next().await {
                        Delivery::Event(e) => {
                            assert_eq!((e.seq, &*e.data), (seq, &json!(v)));
                            assert_eq!(&*e.topic, "t");
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        });
        drop(a);
        assert_eq!(bus.subscribers("t"), 1);
    }

    #[test]
    fn a_slow_subscriber_is_dropped_not_grown() {
        let bus = TopicBus::new();
        let slow = bus.subscribe("t", 2);
        let fast = bus.subscribe("t", 16);
        for i in 0..5 {
            bus.publish("t", json!(i));
        }
        assert_eq!(bus.subscribers("t"), 1, "the slow one was dropped");
        assert_eq!(bus.counters(), (5, 1));
        block_on(async {
            // the two queued events are still delivered, then the overflow
            assert!(matches!(slow.queue.next().await, Delivery::Event(_)));
            assert!(matches!(slow.queue.next().await, Delivery::Event(_)));
            assert_eq!(slow.queue.next().await, Delivery::TooSlow { capacity: 2 });
            for i in 0..5 {
                match fast.queue.next().await {
                    Delivery::Event(e) => assert_eq!(*e.data, json!(i)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
    }
}
