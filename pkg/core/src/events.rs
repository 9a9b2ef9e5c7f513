//! One event bus for every front door: the core publishes what happened to
//! its objects (containers, sandboxes, images, volumes, networks) once, and
//! each front door (CRI's GetContainerEvents, Docker's `/events`) subscribes
//! and renders the events its own way.
//!
//! - [`EventBus::publish`] is synchronous and never waits: it assigns the
//!   sequence number and time under one short lock, keeps the event in a
//!   bounded history (the last `history` events, for "events since T") and
//!   hands it to every subscriber's own bounded queue.
//! - A subscriber too slow to keep up loses events instead of holding up
//!   publishers; the loss is counted on the bus ([`EventBus::dropped`]) and
//!   reported to the subscriber in place, as [`Received::Lagged`] where the
//!   missing events would have been.
//! - [`EventBus::subscribe`] replays the history since a time and registers
//!   the subscriber under the same lock as publishing, so nothing published
//!   in between is missed or seen twice.
//!
//! Times are nanoseconds since the Unix epoch and never go back along the
//! sequence (a clock stepped backwards repeats the last time), so "since T"
//! always selects a suffix of the history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// How many past events a bus keeps by default.
pub const DEFAULT_HISTORY: usize = 1024;
/// How many undelivered events a subscriber may have by default before it
/// starts losing them.
pub const DEFAULT_QUEUE: usize = 1024;

/// What kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Container,
    Sandbox,
    Image,
    Volume,
    Network,
}

impl ObjectKind {
    /// Docker's `Type` (`"sandbox"` is berth's own).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Container => "container",
            ObjectKind::Sandbox => "sandbox",
            ObjectKind::Image => "image",
            ObjectKind::Volume => "volume",
            ObjectKind::Network => "network",
        }
    }
}

/// What happened. The names follow Docker's `/events` actions; the data an
/// action carries is also put into the event's attributes under Docker's
/// keys (see [`attr`]) when it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    // Any object.
    Create,
    Destroy,
    // Containers (and sandboxes).
    Start,
    Die { exit_code: i32 },
    Oom,
    Kill { signal: i32 },
    Stop,
    Restart,
    Pause,
    Unpause,
    Rename,
    Update,
    Attach,
    Detach,
    Resize,
    ExecCreate,
    ExecStart,
    ExecDie { exit_code: i32 },
    Commit,
    Export,
    // Images.
    Pull,
    Push,
    Tag,
    Untag,
    Delete,
    Import,
    Load,
    Save,
    // Volumes.
    Mount,
    Unmount,
    // Networks.
    Connect,
    Disconnect,
}

impl Action {
    /// Docker's action string.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Destroy => "destroy",
            Action::Start => "start",
            Action::Die { .. } => "die",
            Action::Oom => "oom",
            Action::Kill { .. } => "kill",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Rename => "rename",
            Action::Update => "update",
            Action::Attach => "attach",
            Action::Detach => "detach",
            Action::Resize => "resize",
            Action::ExecCreate => "exec_create",
            Action::ExecStart => "exec_start",
            Action::ExecDie { .. } => "exec_die",
            Action::Commit => "commit",
            Action::Export => "export",
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Tag => "tag",
            Action::Untag => "untag",
            Action::Delete => "delete",
            Action::Import => "import",
            Action::Load => "load",
            Action::Save => "save",
            Action::Mount => "mount",
            Action::Unmount => "unmount",
            Action::Connect => "connect",
            Action::Disconnect => "disconnect",
        }
    }

    /// The attribute the action's own data goes into.
    fn attribute(self) -> Option<(&'static str, String)> {
        match self {
            Action::Die { exit_code } | Action::ExecDie { exit_code } => {
                Some((attr::EXIT_CODE, exit_code.to_string()))
            }
            Action::Kill { signal } => Some((attr::SIGNAL, signal.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attribute keys (Docker's, where Docker has one).
pub mod attr {
    pub const NAME: &str = "name";
    pub const IMAGE: &str = "image";
    /// A container's pod sandbox.
    pub const SANDBOX_ID: &str = "sandboxId";
    /// Set from [`super::Action::Die`] and [`super::Action::ExecDie`].
    pub const EXIT_CODE: &str = "exitCode";
    /// Set from [`super::Action::Kill`].
    pub const SIGNAL: &str = "signal";
    /// A renamed object's previous name.
    pub const OLD_NAME: &str = "oldName";
    pub const EXEC_ID: &str = "execID";
    pub const CONTAINER: &str = "container";
    pub const DRIVER: &str = "driver";
    pub const TYPE: &str = "type";
    /// Which front door's object (`kubernetes`, `docker`): CRI streams
    /// only Kubernetes ones, even after the object is gone.
    pub const OWNER: &str = "io.berth.owner";
}

/// An event's attributes, built in one line:
/// `Attrs::new().name(&n).image(&img).sandbox_id(&pod).labels(&labels)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(BTreeMap<String, String>);

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing a label of that name).
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn name(self, name: impl Into<String>) -> Self {
        self.set(attr::NAME, name)
    }

    pub fn image(self, image: impl Into<String>) -> Self {
        self.set(attr::IMAGE, image)
    }

    pub fn sandbox_id(self, id: impl Into<String>) -> Self {
        self.set(attr::SANDBOX_ID, id)
    }

    /// Adds the object's labels as attributes, as Docker does; a label
    /// never replaces an attribute berth sets (name, image, ...), in
    /// either order of calls.
    pub fn labels<'a>(
        mut self,
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        for (k, v) in labels {
            self.0.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self
    }
}

impl From<Attrs> for BTreeMap<String, String> {
    fn from(a: Attrs) -> Self {
        a.0
    }
}

/// One thing that happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3, ... in publishing order, per bus.
    pub seq: u64,
    /// Nanoseconds since the Unix epoch; never decreases along `seq`.
    pub at_ns: i64,
    pub kind: ObjectKind,
    pub id: String,
    pub action: Action,
    pub attributes: BTreeMap<String, String>,
}

/// What a subscriber gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Arc<Event>),
    /// The subscriber's queue was full and this many events, published at
    /// this point of the sequence, were not delivered to it.
    Lagged(u64),
}

/// The bus. Share it as `Arc<EventBus>`; dropping it ends every
/// subscription once its queued events are read.
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    dropped: AtomicU64,
    queue: usize,
}

struct State {
    seq: u64,
    last_ns: i64,
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    next_sub: u64,
    subs: HashMap<u64, Arc<Subscriber>>,
}

struct Subscriber {
    queue: Mutex<Queue>,
    notify: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Received>,
    /// Events in `items` (the `Lagged` markers are not counted).
    events: usize,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic in
    // one must not take the bus down for everyone else.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY, DEFAULT_QUEUE)
    }
}

impl EventBus {
    /// A bus that keeps the last `history` events and lets each subscriber
    /// fall `queue` events behind before it loses any (both at least 1).
    pub fn new(history: usize, queue: usize) -> Self {
        let capacity = history.max(1);
        EventBus {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    seq: 0,
                    last_ns: i64::MIN,
                    history: VecDeque::with_capacity(capacity),
                    capacity,
                    next_sub: 0,
                    subs: HashMap::new(),
                }),
                dropped: AtomicU64::new(0),
                queue: queue.max(1),
            }),
        }
    }

    /// Records an event and delivers it to every subscriber; never blocks
    /// on a subscriber. The action's data is added to the attributes
    /// (e.g. `exitCode` for [`Action::Die`]).
    pub fn publish(
        &self,
        kind: ObjectKind,
        id: &str,
        action: Action,
        attributes: impl Into<BTreeMap<String, String>>,
    ) -> Arc<Event> {
        let mut attributes = attributes.into();
        if let Some((k, v)) = action.attribute() {
            attributes.insert(k.to_string(), v);
        }
        let mut state = lock(&self.inner.state);
        state.seq += 1;
        state.last_ns = state.last_ns.max(now_ns());
        let event = Arc::new(Event {
            seq: state.seq,
            at_ns: state.last_ns,
            kind,
            id: id.to_string(),
            action,
            attributes,
        });
        if state.history.len() == state.capacity {
            state.history.pop_front();
        }
        state.history.push_back(event.clone());
        for sub in state.subs.values() {
            if !sub.offer(&event, self.inner.queue) {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        event
    }

    /// Subscribes: first the kept events with `at_ns >= since` (none if
    /// `since` is `None`), in order, then every event published after.
    /// The replay may exceed the subscriber's queue bound; live events
    /// are only queued below it.
    pub fn subscribe(&self, since: Option<i64>) -> Subscription {
        let sub = Arc::new(Subscriber {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        });
        // Replay and registration under the one lock publish takes: no
        // event falls between them or lands in both.
        let mut state = lock(&self.inner.state);
        if let Some(since) = since {
            let mut q = lock(&sub.queue);
            for e in state.history.iter().filter(|e| e.at_ns >= since) {
                q.items.push_back(Received::Event(e.clone()));
                q.events += 1;
            }
        }
        state.next_sub += 1;
        let id = state.next_sub;
        state.subs.insert(id, sub.clone());
        Subscription {
            id,
            sub,
            bus: Arc::downgrade(&self.inner),
        }
    }

    /// The kept events with `at_ns >= since`, in order.
    pub fn history(&self, since: i64) -> Vec<Arc<Event>> {
        lock(&self.inner.state)
            .history
            .iter()
            .filter(|e| e.at_ns >= since)
            .cloned()
            .collect()
    }

    /// The sequence number of the last event published (0 before any).
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner.state).seq
    }

    /// Events not delivered to some subscriber because its queue was full,
    /// summed over all subscribers since the bus was made.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How many subscriptions are live.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.state).subs.len()
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        for sub in lock(&self.inner.state).subs.drain().map(|(_, s)| s) {
            lock(&sub.queue).closed = true;
            sub.notify.notify_one();
        }
    }
}

impl Subscriber {
    /// Queues `event`, or records it as lost if the queue is full: `false`.
    fn offer(&self, event: &Arc<Event>, bound: usize) -> bool {
        let delivered = {
            let mut q = lock(&self.queue);
            if q.events < bound {
                q.items.push_back(Received::Event(event.clone()));
                q.events += 1;
                true
            } else {
                // Consecutive losses share one marker, at the place they
                // happened in the sequence.
                match q.items.back_mut() {
                    Some(Received::Lagged(n)) => *n += 1,
                    _ => q.items.push_back(Received::Lagged(1)),
                }
                false
            }
        };
        // A permit is stored if the subscriber is not waiting yet, so a
        // wake-up between its check and its wait is not lost.
        self.notify.notify_one();
        delivered
    }

    fn pop(&self) -> Option<Received> {
        let mut q = lock(&self.queue);
        let item = q.items.pop_front()?;
        if matches!(item, Received::Event(_)) {
            q.events -= 1;
        }
        Some(item)
    }
}

/// One subscriber's stream of events; unsubscribes when dropped.
pub struct Subscription {
    id: u64,
    sub: Arc<Subscriber>,
    bus: Weak<Inner>,
}

impl Subscription {
    /// The next event or loss report; `None` once the bus is gone and
    /// everything queued has been read.
    pub async fn next(&mut self) -> Option<Received> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            if lock(&self.sub.queue).closed {
                return None;
            }
            self.sub.notify.notified().await;
        }
    }

    /// What is queued now, without waiting.
    pub fn try_next(&mut self) -> Option<Received> {
        self.sub.pop()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.bus.upgrade() {
            lock(&inner.state).subs.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread;
    use std::time::{Duration, Instant};

    fn publish_n(bus: &EventBus, n: usize, tag: &str) {
        for i in 0..n {
            bus.publish(
                ObjectKind::Container,
                tag,
                Action::Start,
                Attrs::new().set("i", i.to_string()),
            );
        }
    }

    fn event(r: Option<Received>) -> Arc<Event> {
        match r {
            Some(Received::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Reads `n` events with a deadline; any loss report fails the test.
    async fn read_events(sub: &mut Subscription, n: usize) -> Vec<Arc<Event>> {
        let mut out = Vec::with_capacity(n);
        let deadline = Duration::from_secs(20);
        while out.len() < n {
            match tokio::time::timeout(deadline, sub.next()).await {
                Ok(r) => out.push(event(r)),
                Err(_) => panic!("only {} of {n} events arrived", out.len()),
            }
        }
        out
    }

    fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// `events` are exactly `from..=to`, each once, in order; a failure
    /// names the first place that differs rather than printing them all.
    fn assert_seqs(events: &[Arc<Event>], from: u64, to: u64) {
        for (i, e) in events.iter().enumerate() {
            let want = from + i as u64;
            assert_eq!(e.seq, want, "event {i}: got seq {}, want {want}", e.seq);
        }
        assert_eq!(events.len() as u64, to + 1 - from, "events {from}..={to}");
    }

    #[test]
    fn action_strings_and_attributes_are_dockers() {
        assert_eq!(Action::Die { exit_code: 3 }.as_str(), "die");
        assert_eq!(Action::ExecCreate.as_str(), "exec_create");
        assert_eq!(Action::Untag.to_string(), "untag");
        assert_eq!(ObjectKind::Network.as_str(), "network");

        let bus = EventBus::default();
        let labels = BTreeMap::from([
            ("name".to_string(), "from-label".to_string()),
            ("app".to_string(), "web".to_string()),
        ]);
        let e = bus.publish(
            ObjectKind::Container,
            "c1",
            Action::Die { exit_code: 137 },
            Attrs::new().labels(&labels).name("web-1").image("busybox"),
        );
        assert_eq!(e.seq, 1);
        assert_eq!(e.attributes["exitCode"], "137");
        assert_eq!(
            e.attributes["name"], "web-1",
            "a label must not replace the name"
        );
        assert_eq!(e.attributes["app"], "web");
        assert_eq!(e.attributes["image"], "busybox");
        let k = bus.publish(
            ObjectKind::Container,
            "c1",
            Action::Kill { signal: 9 },
            BTreeMap::new(),
        );
        assert_eq!(k.attributes["signal"], "9");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn order_is_preserved_across_publishers() {
        const THREADS: usize = 4;
        const EACH: usize = 500;
        let bus = Arc::new(EventBus::new(16, THREADS * EACH));
        let mut sub = bus.subscribe(None);
        let publishers: Vec<_> = (0..THREADS)
            .map(|t| {
                let bus = bus.clone();
                thread::spawn(move || publish_n(&bus, EACH, &format!("p{t}")))
            })
            .collect();
        let got = read_events(&mut sub, THREADS * EACH).await;
        for p in publishers {
            p.join().unwrap();
        }
        assert_seqs(&got, 1, (THREADS * EACH) as u64);
        assert!(got.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        // Each publisher's own events arrive in the order it published them.
        for t in 0..THREADS {
            let own: Vec<usize> = got
                .iter()
                .filter(|e| e.id == format!("p{t}"))
                .map(|e| e.attributes["i"].parse().unwrap())
                .collect();
            assert_eq!(own, (0..EACH).collect::<Vec<_>>());
        }
        assert_eq!(bus.dropped(), 0);
    }

    #[test]
    fn replay_since_then_live_has_no_gap_or_duplicate() {
        const ROUNDS: usize = 100;
        const CHUNK: usize = 200;
        const TOTAL: usize = ROUNDS * CHUNK;
        let bus = Arc::new(EventBus::new(TOTAL, TOTAL));
        let made = Arc::new(AtomicUsize::new(0));
        // The publisher goes on to its next chunk only once another
        // subscription was made, and each subscription waits for the
        // chunk of its round to begin: subscriptions land all through
        // publishing (mid-chunk where scheduling allows) however the
        // threads are scheduled.
        let publisher = {
            let (bus, made) = (bus.clone(), made.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                for round in 0..ROUNDS {
                    publish_n(&bus, CHUNK, "p");
                    while made.load(Ordering::SeqCst) <= round {
                        assert!(Instant::now() < deadline, "the subscriber stalled");
                        thread::yield_now();
                    }
                }
            })
        };
        let mut subs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while subs.len() < ROUNDS {
            while bus.last_seq() <= (subs.len() * CHUNK) as u64 {
                assert!(Instant::now() < deadline, "the publisher stalled");
                thread::yield_now();
            }
            // Since a moment ago: part replay, part live.
            let since = now_ns() - 100_000;
            let sub = bus.subscribe(Some(since));
            subs.push((since, bus.last_seq(), sub));
            made.fetch_add(1, Ordering::SeqCst);
            thread::yield_now();
        }
        publisher.join().unwrap();
        assert!(
            subs.iter().any(|(_, at, _)| *at > 0 && *at < TOTAL as u64),
            "no subscription fell in the middle of publishing"
        );
        let history = bus.history(i64::MIN);
        for (since, _, mut sub) in subs {
            let got: Vec<Arc<Event>> = std::iter::from_fn(|| sub.try_next())
                .map(|r| event(Some(r)))
                .collect();
            let Some(first) = got.first() else {
                // Subscribed after the last event and since after it.
                assert!(history.last().unwrap().at_ns < since);
                continue;
            };
            assert!(first.at_ns >= since);
            if first.seq > 1 {
                // Nothing at or after `since` was left out of the replay.
                assert!(history[first.seq as usize - 2].at_ns < since);
            }
            assert_seqs(&got, first.seq, TOTAL as u64);
        }
        assert_eq!(bus.dropped(), 0);
    }

    #[test]
    fn history_keeps_only_the_last_n() {
        let bus = EventBus::new(3, 16);
        publish_n(&bus, 5, "x");
        assert_eq!(seqs(&bus.history(i64::MIN)), vec![3, 4, 5]);
        let mut sub = bus.subscribe(Some(i64::MIN));
        let replay: Vec<u64> = std::iter::from_fn(|| sub.try_next())
            .map(|r| event(Some(r)).seq)
            .collect();
        assert_eq!(replay, vec![3, 4, 5]);
        // Live only: nothing replayed.
        let mut live = bus.subscribe(None);
        assert!(live.try_next().is_none());
        publish_n(&bus, 1, "x");
        assert_eq!(event(live.try_next()).seq, 6);
        assert_eq!(event(sub.try_next()).seq, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_subscribers_each_get_every_event() {
        let bus = Arc::new(EventBus::new(8, 256));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let mut sub = bus.subscribe(None);
                tokio::spawn(async move { read_events(&mut sub, 200).await })
            })
            .collect();
        let publisher = {
            let bus = bus.clone();
            thread::spawn(move || publish_n(&bus, 200, "x"))
        };
        for r in readers {
            assert_seqs(&r.await.unwrap(), 1, 200);
        }
        publisher.join().unwrap();
        assert_eq!(bus.dropped(), 0);
    }

    #[test]
    fn a_slow_subscriber_loses_events_counted_and_reported_in_place() {
        let bus = EventBus::new(4, 4);
        let mut slow = bus.subscribe(None);
        let mut fast = bus.subscribe(None);
        for i in 1..=10 {
            publish_n(&bus, 1, "x");
            // The fast one keeps up and loses nothing.
            assert_eq!(event(fast.try_next()).seq, i);
        }
        assert_eq!(bus.dropped(), 6);
        let got: Vec<u64> = (0..4).map(|_| event(slow.try_next()).seq).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(slow.try_next(), Some(Received::Lagged(6)));
        assert!(slow.try_next().is_none());
        // Having caught up, it gets live events again.
        publish_n(&bus, 1, "x");
        assert_eq!(event(slow.try_next()).seq, 11);
        assert_eq!(event(fast.try_next()).seq, 11);
        assert_eq!(bus.dropped(), 6);
    }

    #[test]
    fn dropping_a_subscription_frees_its_slot() {
        let bus = EventBus::new(4, 1);
        let sub = bus.subscribe(None);
        let kept = bus.subscribe(None);
        assert_eq!(bus.subscribers(), 2);
        drop(sub);
        assert_eq!(bus.subscribers(), 1);
        drop(kept);
        assert_eq!(bus.subscribers(), 0);
        // Nobody left to lose events: publishing past every queue bound
        // counts no drops.
        publish_n(&bus, 10, "x");
        assert_eq!(bus.dropped(), 0);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish_and_ends_with_the_bus() {
        let bus = Arc::new(EventBus::new(4, 4));
        let mut sub = bus.subscribe(None);
        let waiter = tokio::spawn(async move {
            let first = event(sub.next().await);
            (first.seq, sub.next().await)
        });
        // Let the waiter park first: the wake-up must reach a waiting task.
        tokio::task::yield_now().await;
        publish_n(&bus, 1, "x");
        let bus = Arc::try_unwrap(bus)
            .ok()
            .expect("only the test holds the bus");
        drop(bus);
        let (seq, end) = tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("the subscriber was not woken")
            .unwrap();
        assert_eq!(seq, 1);
        assert_eq!(end, None);
    }
}
