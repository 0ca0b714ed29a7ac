//! One supervised broker (a consuming and a publishing connection): connect, declare,
//! publish, consume, reconnect.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use tokio::sync::{Semaphore, watch};

use super::Topology;
use crate::error::{DeliveryError, DeliveryErrorKind};

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// Everything the routes on this broker need.
    pub topology: Topology,
    /// First wait before reconnecting; doubles up to `reconnect_max`, with jitter.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// A live broker: the connection consumers and declarations use, and the publishers'.
///
/// Two connections because RabbitMQ blocks every connection that publishes while a memory
/// or disk alarm is on, and stops reading it: acks sent on a shared connection would wait
/// too, and the queues that consumers would drain (which is what ends the alarm) could not
/// drain. Measured: with one connection, a queue of 300 stalled at the prefetch while a
/// publish waited (`a_memory_alarm_blocks_publishing_but_not_consuming`).
#[derive(Clone)]
pub struct Live {
    /// Consumers, acks and topology declarations.
    pub connection: Arc<Connection>,
    publishers: Arc<Publishers>,
    /// Increases with each successful connection, so a consumer can tell a new one.
    pub generation: u64,
}

/// Publishes in flight at once on one connection; more wait for a free slot (within their
/// confirm timeout).
const MAX_PUBLISHING: usize = 512;

/// Publishes in flight at once on one publisher channel. Few channels carrying many
/// publishes each let the broker confirm them together (one `basic.ack` for many), and cost
/// it far less than a channel per publish (broker CPU per message: 159 µs with one publish
/// per channel, 117–121 with 64 per channel, 105–113 with 256; docs/performance.md).
const PER_CHANNEL: usize = 256;

/// Idle publisher channels kept per exchange, so that a load around a multiple of
/// `PER_CHANNEL` does not open and close a channel every few publishes.
const IDLE_PER_EXCHANGE: usize = 2;

/// The publisher channels, in lanes by exchange. Several publishes share a channel: a
/// `basic.return` carries no delivery tag, and upstream lapin handed a returned message to
/// whichever confirm of the channel completed next (seen: 83 of 2,000 of each way, on one
/// channel); the lapin in third_party/ pairs it with its own publish (README there).
///
/// By exchange because a publish to a missing exchange closes its channel with every publish
/// in flight on it: those are then only publishes to the same missing exchange. A channel
/// whose confirm did not come is retired: it takes no new publish and is closed (by dropping
/// it) when its last one ends.
struct Publishers {
    connection: Connection,
    lanes: std::sync::Mutex<Lanes>,
    /// Held while a channel is opened, so that a burst opens one, not one per publish.
    opening: tokio::sync::Mutex<()>,
    slots: Semaphore,
}

#[derive(Default)]
struct Lanes {
    by_exchange: std::collections::HashMap<String, Vec<Lane>>,
    /// The channel opened at connect, until an exchange needs one.
    spare: Option<Channel>,
}

struct Lane {
    channel: Channel,
    id: u64,
    in_flight: usize,
    retired: bool,
}

impl Lanes {
    /// A lane of `exchange` with room for one more publish, counted in.
    fn take(&mut self, exchange: &str) -> Option<(Channel, u64)> {
        let lanes = self.by_exchange.get_mut(exchange)?;
        lanes.retain(|l| l.channel.status().connected() && !(l.retired && l.in_flight == 0));
        // The first with room: filling one channel before the next lets the broker confirm
        // more publishes per `basic.ack`.
        let lane = lanes.iter_mut().find(|l| !l.retired && l.in_flight < PER_CHANNEL)?;
        lane.in_flight += 1;
        Some((lane.channel.clone(), lane.id))
    }

    /// One publish of lane `id` ended; `retire` when its confirm did not come.
    fn give_back(&mut self, exchange: &str, id: u64, retire: bool) {
        let Some(lanes) = self.by_exchange.get_mut(exchange) else { return };
        let Some(at) = lanes.iter().position(|l| l.id == id) else { return };
        let lane = &mut lanes[at];
        lane.in_flight -= 1;
        lane.retired |= retire;
        let idle = lanes.iter().filter(|l| l.in_flight == 0).count();
        let lane = &lanes[at];
        if lane.in_flight == 0 && (lane.retired || !lane.channel.status().connected() || idle > IDLE_PER_EXCHANGE) {
            // Dropping the last handle closes the channel.
            lanes.swap_remove(at);
        }
        if lanes.is_empty() {
            self.by_exchange.remove(exchange);
        }
    }

    fn idle(&self) -> usize {
        self.by_exchange.values().flatten().filter(|l| l.in_flight == 0).count() + usize::from(self.spare.is_some())
    }
}

/// A publish's place on a lane; given back when dropped, also when its future is dropped
/// at a confirm timeout (then the lane is retired: lapin keeps a dropped confirm until the
/// channel closes).
struct LaneSeat<'a> {
    publishers: &'a Publishers,
    exchange: &'a str,
    id: u64,
    done: bool,
}

impl Drop for LaneSeat<'_> {
    fn drop(&mut self) {
        self.publishers.lanes.lock().expect("publishers lock").give_back(self.exchange, self.id, !self.done);
    }
}

impl Live {
    fn new(connection: Connection, publishing: Connection, first: Channel, generation: u64) -> Self {
        // Within the channels the broker allows on a connection (0: no limit).
        let channel_max = usize::from(publishing.configuration().channel_max());
        let slots = if channel_max == 0 { MAX_PUBLISHING } else { MAX_PUBLISHING.min(channel_max * PER_CHANNEL) };
        let publishers = Publishers {
            connection: publishing,
            lanes: std::sync::Mutex::new(Lanes { spare: Some(first), ..Lanes::default() }),
            opening: tokio::sync::Mutex::new(()),
            slots: Semaphore::new(slots),
        };
        Live { connection: Arc::new(connection), publishers: Arc::new(publishers), generation }
    }

    /// Both connections are up.
    fn connected(&self) -> bool {
        self.connection.status().connected() && self.publishers.connection.status().connected()
    }

    async fn close(&self, reason: &str) {
        let _ = self.publishers.connection.close(200, reason.into()).await;
        let _ = self.connection.close(200, reason.into()).await;
    }

    /// A seat on a publisher channel for `exchange`, opening a channel when every one is
    /// full.
    async fn seat<'a>(&'a self, exchange: &'a str) -> Result<(Channel, LaneSeat<'a>), lapin::Error> {
        let publishers = &*self.publishers;
        let seat = |(channel, id)| (channel, LaneSeat { publishers, exchange, id, done: false });
        let take = || publishers.lanes.lock().expect("publishers lock").take(exchange);
        if let Some(found) = take() {
            return Ok(seat(found));
        }
        let _opening = publishers.opening.lock().await;
        // Another publish may have opened one meanwhile.
        if let Some(found) = take() {
            return Ok(seat(found));
        }
        let spare = publishers.lanes.lock().expect("publishers lock").spare.take();
        let channel = match spare {
            Some(channel) if channel.status().connected() => channel,
            _ => {
                let channel = publishers.connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                channel
            }
        };
        static LANE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = LANE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lane = Lane { channel: channel.clone(), id, in_flight: 1, retired: false };
        let mut lanes = publishers.lanes.lock().expect("publishers lock");
        lanes.by_exchange.entry(exchange.to_string()).or_default().push(lane);
        drop(lanes);
        Ok(seat((channel, id)))
    }

    fn idle_publishers(&self) -> usize {
        self.publishers.lanes.lock().expect("publishers lock").idle()
    }
}

/// A handle on a supervised broker connection; cheap to clone.
#[derive(Clone)]
pub struct Broker(Arc<Inner>);

struct Inner {
    config: BrokerConfig,
    /// What to declare on each connection: the config's, plus what routes add.
    topology: std::sync::Mutex<Topology>,
    display: String,
    live: watch::Sender<Option<Live>>,
    /// Why the last connection attempt failed, for readiness.
    last_error: std::sync::Mutex<Option<String>>,
    /// Why the broker blocks the publishing connection (a memory or disk alarm), while it does.
    blocked: std::sync::Mutex<Option<String>>,
    /// Whether a connection was ever made: readiness tells a broker not reached yet (a new
    /// replica waits) from one lost later (every replica meets it).
    ever_connected: std::sync::atomic::AtomicBool,
    /// When the attempt to connect under way began. lapin bounds neither the TCP connect (its
    /// async connect ignores the URL's `connection_timeout`) nor the AMQP handshake, so a peer
    /// that accepts and never answers holds an attempt for good: readiness says so instead of
    /// "connecting".
    connecting_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("url", &self.0.display).field("connected", &self.is_connected()).finish()
    }
}

/// One message to publish.
#[derive(Debug)]
pub struct Publish<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
    /// Unroutable messages come back as [`DeliveryErrorKind::Unroutable`] when set.
    pub mandatory: bool,
    pub timeout: Duration,
    /// The system it is for, for errors.
    pub system: &'a str,
}

/// What one consumer takes from which queue.
#[derive(Clone, Debug)]
pub struct ConsumeSpec {
    pub queue: String,
    /// Unacknowledged deliveries the broker may send ahead (`basic.qos`).
    pub prefetch: u16,
    /// Deliveries handled at once.
    pub concurrency: usize,
    pub tag: String,
    /// How long shutdown waits for deliveries in progress.
    pub drain: Duration,
}

type EventStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

enum Stop {
    Shutdown,
    Ended(String),
}

/// How often an idle publishing connection is probed for a resource alarm.
const ALARM_PROBE: Duration = Duration::from_secs(3);

/// Publishes nothing anyone receives: an empty message to the default exchange with an empty
/// routing key (no queue has that name), unconfirmed, on a channel of its own.
async fn probe_alarm(connection: &Connection) {
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel
            .basic_publish("".into(), "".into(), BasicPublishOptions::default(), b"", lapin::BasicProperties::default())
            .await;
        let _ = channel.close(200, "probe".into()).await;
    }
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        let display = super::redact_url(&config.url);
        let (live, _) = watch::channel(None);
        let topology = std::sync::Mutex::new(config.topology.clone());
        Broker(Arc::new(Inner {
            config,
            topology,
            display,
            live,
            last_error: std::sync::Mutex::new(None),
            blocked: std::sync::Mutex::new(None),
            ever_connected: std::sync::atomic::AtomicBool::new(false),
            connecting_since: std::sync::Mutex::new(None),
        }))
    }

    /// Adds exchanges, queues and bindings to declare; takes effect on the next connection.
    pub fn extend_topology(&self, more: Topology) {
        self.0.topology.lock().expect("lock").merge(more);
    }

    /// Declares (or verifies) the whole topology on the live connection now, for what a
    /// reload added; a broker that is not connected declares it when it connects.
    pub async fn apply_topology(&self) -> Result<(), String> {
        let live = self.0.live.borrow().clone();
        match live {
            Some(live) => self.topology().apply(&live.connection).await,
            None => Ok(()),
        }
    }

    pub fn topology(&self) -> Topology {
        self.0.topology.lock().expect("lock").clone()
    }

    /// Whether both are the same broker (one pair of connections), not two built alike.
    pub fn same_broker(&self, other: &Broker) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The URL without its password.
    pub fn display(&self) -> &str {
        &self.0.display
    }

    pub fn is_connected(&self) -> bool {
        self.0.live.borrow().is_some()
    }

    /// Publisher channels kept idle for reuse now (none while disconnected); for tests and
    /// diagnostics.
    pub fn idle_publisher_channels(&self) -> usize {
        self.0.live.borrow().as_ref().map_or(0, Live::idle_publishers)
    }

    /// Why the broker blocks Qiao's publishing (a memory or disk alarm), while it does.
    pub fn publishing_blocked(&self) -> Option<String> {
        self.0.blocked.lock().ok().and_then(|b| b.clone())
    }

    /// Whether this broker was connected at some time since it was created.
    pub fn has_connected(&self) -> bool {
        self.0.ever_connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the attempt to connect under way has taken, while one is.
    pub fn connecting_for(&self) -> Option<Duration> {
        self.0.connecting_since.lock().ok().and_then(|s| s.map(|t| t.elapsed()))
    }

    pub fn last_error(&self) -> Option<String> {
        self.0.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Live>> {
        self.0.live.subscribe()
    }

    /// Waits until connected (or `timeout`); tests and startup use it.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if rx.borrow_and_update().is_some() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && self.is_connected()
    }

    /// Waits until `queue` exists on the broker (a passive declare succeeds), polling every
    /// 250 ms, and says so once when it takes more than 10 s. For a consumer that starts
    /// before whoever declares the queue (a stub system beside Qiao). `false` when `stop`
    /// turned true first.
    pub async fn wait_for_queue(&self, queue: &str, mut stop: watch::Receiver<bool>) -> bool {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            let live = self.0.live.borrow().clone();
            let found = async {
                let Some(live) = live else { return false };
                let Ok(channel) = live.connection.create_channel().await else { return false };
                // A missing queue closes the channel (a channel error, logged at debug).
                let ok = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok();
                if ok {
                    let _ = channel.close(200, "queue found".into()).await;
                }
                ok
            };
            tokio::select! {
                ok = found => if ok { return true },
                _ = stop.changed() => return false,
            }
            if !said && started.elapsed() > Duration::from_secs(10) {
                said = true;
                tracing::warn!(queue, broker = %self.0.display, "still waiting for the queue to exist");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    /// Keeps the connection up until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let cfg = &self.0.config;
        let mut backoff = cfg.reconnect_initial;
        let mut generation = 0u64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            *self.0.connecting_since.lock().expect("lock") = Some(std::time::Instant::now());
            // An attempt may never end (see `connecting_since`): shutdown does not wait for it.
            let attempt = tokio::select! {
                attempt = self.connect(generation + 1) => Some(attempt),
                _ = shutdown.changed() => None,
            };
            *self.0.connecting_since.lock().expect("lock") = None;
            let Some(attempt) = attempt else { break };
            match attempt {
                Ok((live, mut events)) => {
                    generation += 1;
                    backoff = cfg.reconnect_initial;
                    *self.0.last_error.lock().expect("lock") = None;
                    tracing::info!(broker = %self.0.display, generation, "connected to the AMQP broker");
                    self.0.ever_connected.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.0.live.send_replace(Some(live.clone()));
                    // RabbitMQ blocks a publishing connection during a resource alarm only once it
                    // publishes, and says so then: a tiny publish every few seconds (to the default
                    // exchange, no queue, dropped) makes readiness tell an alarm before the first
                    // real publish waits on it.
                    let mut probe = tokio::time::interval(ALARM_PROBE);
                    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let lost = loop {
                        tokio::select! {
                            _ = probe.tick() => {
                                if self.0.blocked.lock().expect("lock").is_none() {
                                    let publishers = live.publishers.clone();
                                    tokio::spawn(async move {
                                        let probe = probe_alarm(&publishers.connection);
                                        let _ = tokio::time::timeout(Duration::from_secs(2), probe).await;
                                    });
                                }
                            }
                            event = events.next() => match event {
                                // Channel errors (a consumer on a missing queue, a failed
                                // passive declare) arrive here too; they close that channel,
                                // not the connection, and must not take publishers down.
                                Some(Event::Error(e)) if live.connected() => {
                                    tracing::debug!(broker = %self.0.display, error = %e, "channel error");
                                }
                                Some(Event::Error(e)) => break Some(e.to_string()),
                                Some(Event::ConnectionBlocked(reason)) => {
                                    *self.0.blocked.lock().expect("lock") = Some(reason.to_string());
                                    tracing::warn!(broker = %self.0.display, %reason, "the broker blocked publishing (resource alarm)");
                                }
                                Some(Event::ConnectionUnblocked) => {
                                    *self.0.blocked.lock().expect("lock") = None;
                                    tracing::info!(broker = %self.0.display, "the broker unblocked publishing");
                                }
                                Some(_) => {}
                                None => break Some("the connection's event stream ended".to_string()),
                            },
                            _ = shutdown.changed() => break None,
                        }
                    };
                    self.0.live.send_replace(None);
                    // A new connection starts unblocked; the broker says again if it is not.
                    *self.0.blocked.lock().expect("lock") = None;
                    match lost {
                        Some(reason) => {
                            tracing::warn!(broker = %self.0.display, %reason, "lost the AMQP connection; reconnecting");
                            *self.0.last_error.lock().expect("lock") = Some(reason);
                            // The other connection of the pair may still be up: close it, so
                            // that its consumers end and subscribe again on the new pair.
                            let _ = tokio::time::timeout(Duration::from_secs(2), live.close("reconnecting")).await;
                        }
                        None => {
                            // Bounded: during a resource alarm the broker does not read the
                            // publishing connection, and its close would never be answered.
                            let _ =
                                tokio::time::timeout(Duration::from_secs(2), live.close("qiao is shutting down")).await;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(broker = %self.0.display, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot connect to the AMQP broker");
                    *self.0.last_error.lock().expect("lock") = Some(e);
                }
            }
            let wait = backoff / 2 + Duration::from_millis(fastrand::u64(0..=(backoff.as_millis() as u64 / 2)));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(cfg.reconnect_max);
        }
        self.0.live.send_replace(None);
    }

    async fn connect(&self, generation: u64) -> Result<(Live, EventStream), String> {
        let url = &self.0.config.url;
        let props = ConnectionProperties::default().with_connection_name("qiao".into());
        let connection = Connection::connect(url, props).await.map_err(|e| e.to_string())?;
        let consuming_events = connection.events_listener();
        let topology = self.topology();
        topology.apply(&connection).await?;
        let props = ConnectionProperties::default().with_connection_name("qiao-publish".into());
        let publishing = Connection::connect(url, props).await.map_err(|e| e.to_string())?;
        let publishing_events = publishing.events_listener();
        // One publisher channel up front, so that a broker refusing channels in confirm
        // mode is found at connect time.
        let publisher = publishing.create_channel().await.map_err(|e| e.to_string())?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
        // Either connection's end is the end of this live broker: both are made anew.
        let events: EventStream = Box::pin(futures_util::stream::select(consuming_events, publishing_events));
        Ok((Live::new(connection, publishing, publisher, generation), events))
    }

    /// Publishes one message and waits for the broker's confirm. Fails at once when there
    /// is no connection: the caller decides whether to answer 503 or retry later.
    pub async fn publish(&self, p: Publish<'_>) -> Result<(), DeliveryError> {
        let err = |kind, detail: String| DeliveryError::new(kind, p.system, detail);
        let Some(live) = self.0.live.borrow().clone() else {
            let why = self.last_error().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(err(
                DeliveryErrorKind::BrokerUnavailable,
                format!("no connection to the broker {}{why}", self.0.display),
            ));
        };
        let options = BasicPublishOptions { mandatory: p.mandatory, immediate: false };
        let exchange = p.exchange;
        let key = p.routing_key;
        // Whether the message was handed to the connection (its frames queued: the patched
        // lapin does not wait for them to be written), for the timeout's detail.
        let sent = std::sync::atomic::AtomicBool::new(false);
        let confirm = tokio::time::timeout(p.timeout, async {
            let _slot = live.publishers.slots.acquire().await.expect("the semaphore is never closed");
            let (publisher, mut seat) = live.seat(exchange).await?;
            let pending = publisher.basic_publish(exchange.into(), key.into(), options, p.body, p.properties).await?;
            sent.store(true, std::sync::atomic::Ordering::Relaxed);
            let confirmation = pending.await;
            // On a timeout this future is dropped before here, and the seat retires its lane.
            seat.done = true;
            confirmation
        })
        .await;
        match confirm {
            Err(_) if sent.load(std::sync::atomic::Ordering::Relaxed) => Err(err(
                DeliveryErrorKind::ConfirmTimeout,
                format!("the broker did not confirm within {} ms", p.timeout.as_millis()),
            )),
            Err(_) => Err(err(
                DeliveryErrorKind::ConfirmTimeout,
                format!(
                    "not sent: no publisher channel within {} ms (every one busy, or the broker does not answer)",
                    p.timeout.as_millis()
                ),
            )),
            Ok(Err(e)) => Err(err(DeliveryErrorKind::BrokerUnavailable, format!("publishing failed: {e}"))),
            Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(err(
                DeliveryErrorKind::Unroutable,
                format!(
                    "no queue is bound to exchange `{exchange}` for routing key `{key}`; the broker returned the message"
                ),
            )),
            Ok(Ok(Confirmation::Nack(_))) => Err(err(
                DeliveryErrorKind::Nacked,
                format!("the broker refused the message (nack) on exchange `{exchange}`"),
            )),
        }
    }

    /// Consumes `spec.queue` until shutdown, across reconnections: when the connection
    /// drops, the consumer waits for the next one and subscribes again. `handler` must ack
    /// or nack each delivery itself.
    pub async fn consume<H, F>(&self, spec: ConsumeSpec, handler: H, mut shutdown: watch::Receiver<bool>)
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let permits = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let mut live_rx = self.subscribe();
        let mut last_generation = 0;
        loop {
            let live = loop {
                if let Some(l) = live_rx.borrow_and_update().clone() {
                    break l;
                }
                tokio::select! {
                    changed = live_rx.changed() => if changed.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            };
            if live.generation == last_generation {
                // Same connection as before: the consumer ended on its own (queue deleted,
                // channel error). Do not spin.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
            last_generation = live.generation;
            match self.consume_on(&live, &spec, &handler, &permits, &mut shutdown).await {
                Ok(Stop::Shutdown) => return,
                Ok(Stop::Ended(why)) | Err(why) => {
                    tracing::warn!(queue = %spec.queue, reason = %why, "consumer stopped; subscribing again");
                    // A queue deleted behind Qiao's back is declared again (or, for
                    // `declare: false`, reported again) before the next subscription.
                    if live.connection.status().connected()
                        && let Err(e) = self.topology().apply(&live.connection).await
                    {
                        tracing::warn!(queue = %spec.queue, error = %e, "the topology is incomplete");
                    }
                }
            }
        }
    }

    async fn consume_on<H, F>(
        &self,
        live: &Live,
        spec: &ConsumeSpec,
        handler: &Arc<H>,
        permits: &Arc<Semaphore>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Stop, String>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let channel = live.connection.create_channel().await.map_err(|e| e.to_string())?;
        channel.basic_qos(spec.prefetch, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
        let mut consumer = channel
            .basic_consume(
                spec.queue.as_str().into(),
                spec.tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot consume from `{}`: {e}", spec.queue))?;
        tracing::info!(queue = %spec.queue, prefetch = spec.prefetch, concurrency = spec.concurrency, generation = live.generation, "consuming");
        loop {
            // A free handler slot first, then the next delivery; shutdown is watched in both
            // waits (first, `biased`), so a full consumer still stops at once.
            let permit = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                permit = permits.clone().acquire_owned() => permit.map_err(|e| e.to_string())?,
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                next = consumer.next() => match next {
                    // Deliveries prefetched before the channel closed are back in the queue:
                    // starting them would deliver copies whose acks must fail.
                    Some(Ok(_)) if !channel.status().connected() => {
                        return Ok(Stop::Ended("the channel closed; prefetched deliveries go back to the queue".into()));
                    }
                    Some(Ok(delivery)) => {
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            handler(delivery).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => return Ok(Stop::Ended(e.to_string())),
                    None => return Ok(Stop::Ended("the broker cancelled the consumer".into())),
                },
            }
        }
        let _ = channel.basic_cancel(spec.tag.as_str().into(), BasicCancelOptions::default()).await;
        // Deliveries in progress finish and settle on this channel, which must stay open
        // until then: closing it (dropping the last handle does) hands them back to the
        // queue while their handlers still deliver them.
        let all = spec.concurrency.max(1) as u32;
        if tokio::time::timeout(spec.drain, permits.acquire_many(all)).await.is_err() {
            tracing::warn!(queue = %spec.queue, drain_ms = spec.drain.as_millis() as u64,
                "deliveries still in progress at shutdown; the broker will deliver them again");
        }
        let _ = channel.close(200, "qiao is shutting down".into()).await;
        Ok(Stop::Shutdown)
    }
}
