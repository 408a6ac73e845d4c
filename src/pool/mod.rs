//! Connection pools per (backend, user) with a cap per backend across all users. A lease
//! returns its connection only through `release` after a clean response; dropped in any
//! other state (an error, a client gone mid-response) the connection is closed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::backend::{BackendConn, BackendError, ConnectParams};
use crate::protocol::ConnClass;

/// Limits shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    pub max_per_user: usize,
    pub max_per_backend: usize,
    pub min_idle: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

/// How often a waiting lease looks again for a place another class's pool could give up.
const RECHECK: Duration = Duration::from_millis(10);

/// The limits every pool reads, swapped whole by a reload.
type SharedLimits = Arc<arc_swap::ArcSwap<PoolLimits>>;

/// Moves a semaphore's capacity from `from` to `to` places. Growing is immediate;
/// shrinking takes free places now and the rest as connections give theirs back.
/// Returns how many places are still to be taken back.
fn resize(sem: &Arc<Semaphore>, from: usize, to: usize) -> usize {
    if to >= from {
        sem.add_permits(to - from);
        return 0;
    }
    let want = from - to;
    let left = want - sem.forget_permits(want);
    if left > 0 {
        let sem = sem.clone();
        tokio::spawn(async move {
            if let Ok(p) = sem.acquire_many_owned(left as u32).await {
                p.forget();
            }
        });
    }
    left
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out after {0:?} waiting for a pooled connection")]
    Timeout(Duration),
    #[error(transparent)]
    Connect(#[from] BackendError),
    #[error("no pool for user {0}")]
    UnknownUser(String),
}

/// Counters of one pool, for /status and /metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub opened: AtomicU64,
    /// Closed, by `Closed` reason.
    pub closed: [AtomicU64; Closed::ALL.len()],
    pub leases: AtomicU64,
    /// Leases that found no idle connection and no free place, and waited.
    pub waits: AtomicU64,
    pub timeouts: AtomicU64,
    pub in_use: AtomicUsize,
}

impl PoolStats {
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Why a backend connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Idle past `idle_timeout_s`, or older than `max_lifetime_s`, while idle.
    Idle = 0,
    /// Found dead or too old when about to be lent.
    Stale = 1,
    /// Gave its place up to another user, class or schema; or opened over the user's
    /// limit (a replay's) and found no free place when it came back.
    Evicted = 2,
    /// Its pool was retired: drain, a removed backend, a changed password, SET GLOBAL,
    /// a smaller pool.
    Retired = 3,
    /// Not returned clean: an error, a lost client, state that could not be reset.
    Broken = 4,
}

impl Closed {
    pub const ALL: [Closed; 5] = [
        Closed::Idle,
        Closed::Stale,
        Closed::Evicted,
        Closed::Retired,
        Closed::Broken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Stale => "stale",
            Closed::Evicted => "evicted",
            Closed::Retired => "retired",
            Closed::Broken => "broken",
        }
    }
}

/// A connection that holds its places in the per-user and per-backend limits.
struct Pooled {
    conn: BackendConn,
    /// The pool's generation when it was opened: older ones are not lent again.
    generation: u64,
    /// None: a connection over the user's limit (see [`NodePools::lease_where`]'s
    /// `overflow`), pooled only if a place is free when it comes back.
    user_place: Option<OwnedSemaphorePermit>,
    _backend: OwnedSemaphorePermit,
}

/// The pools of one backend.
pub struct NodePools {
    pub name: String,
    address: String,
    base: ConnectParams,
    limits: SharedLimits,
    /// Each configured user: password and the places all its pools share.
    users: RwLock<HashMap<String, (String, Places)>>,
    /// By (user, connection class): the class is fixed at connect, so each is its own
    /// pool. Created on first use.
    pools: RwLock<HashMap<(String, ConnClass), Arc<UserPool>>>,
    backend_slots: Arc<Semaphore>,
    /// Requests running on this backend now (least-outstanding balancing).
    pub outstanding: Arc<AtomicUsize>,
}

/// A user's places on one backend (max_per_user), shared by its pools of every class.
#[derive(Clone)]
struct Places {
    slots: Arc<Semaphore>,
    /// Leases of the user waiting for a place, of every class.
    waiting: Arc<AtomicUsize>,
}

impl Places {
    fn new(max_per_user: usize) -> Self {
        Places {
            slots: Arc::new(Semaphore::new(max_per_user)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }
}

pub struct UserPool {
    pub user: String,
    pub class: ConnClass,
    params: ConnectParams,
    limits: SharedLimits,
    idle: Mutex<VecDeque<Pooled>>,
    slots: Arc<Semaphore>,
    /// The user's waiting leases, of every class ([`Places::waiting`]).
    user_waiting: Arc<AtomicUsize>,
    /// This pool's own waiting leases.
    waiting: AtomicUsize,
    released: Notify,
    /// Bumped when the server's global defaults changed: connections opened before carry
    /// stale session values and are closed instead of lent again.
    generation: AtomicU64,
    pub stats: PoolStats,
}

/// Every backend's pools, owned by the pool layer. A backend's pools are made on first
/// use; the wiring (`app`) drains and retires them as topology snapshots demote, fail or
/// drop backends. Pools know nothing of roles.
pub struct Pools {
    users: RwLock<Vec<(String, String)>>,
    limits: SharedLimits,
    base: ConnectParams,
    nodes: RwLock<HashMap<usize, Arc<NodePools>>>,
}

impl Pools {
    /// `users`: (name, password) of every configured user.
    pub fn new(users: &[(String, String)], limits: &PoolLimits, base: &ConnectParams) -> Self {
        Pools {
            users: RwLock::new(users.to_vec()),
            limits: Arc::new(arc_swap::ArcSwap::from_pointee(limits.clone())),
            base: base.clone(),
            nodes: RwLock::new(HashMap::new()),
        }
    }

    /// The pools of backend `id` (made on first use). `outstanding` counts its requests in
    /// flight for the topology's least-busy choice.
    pub fn node(
        &self,
        id: usize,
        name: &str,
        address: &str,
        outstanding: &Arc<AtomicUsize>,
    ) -> Arc<NodePools> {
        if let Some(n) = self.get(id) {
            return n;
        }
        let mut nodes = self.nodes.write();
        nodes
            .entry(id)
            .or_insert_with(|| {
                let users = self.users.read().clone();
                let mut n = NodePools::new(name, address, &users, &self.limits, &self.base);
                n.outstanding = outstanding.clone();
                Arc::new(n)
            })
            .clone()
    }

    /// The pools of backend `id`, if any were made.
    pub fn get(&self, id: usize) -> Option<Arc<NodePools>> {
        self.nodes.read().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<NodePools>> {
        self.nodes.read().values().cloned().collect()
    }

    /// Closes the idle connections of backend `id` (demoted or failed: not reused).
    pub fn drain(&self, id: usize) {
        if let Some(n) = self.get(id) {
            n.drain_idle();
        }
    }

    /// Backend `id` left the topology: its idle connections close now, leased ones when
    /// their sessions let them go.
    pub fn retire(&self, id: usize) {
        if let Some(n) = self.nodes.write().remove(&id) {
            n.drain_idle();
        }
    }

    /// The configured users changed: every backend's pools follow.
    pub fn set_users(&self, users: &[(String, String)]) {
        *self.users.write() = users.to_vec();
        self.all().iter().for_each(|n| n.set_users(users));
    }

    /// After SET GLOBAL: every backend's connections are renewed.
    pub fn renew(&self) {
        self.all().iter().for_each(|n| n.renew());
    }

    /// New limits (a reload): places grow at once; when they shrink, connections in use
    /// keep working and give their places back as they return (idle ones beyond the new
    /// limits close now). Timeouts and min_idle apply from the next check.
    pub fn set_limits(&self, limits: &PoolLimits) {
        let old = self.limits.swap(Arc::new(limits.clone()));
        for n in self.all() {
            n.resize(&old, limits);
        }
    }
}

impl NodePools {
    /// `users`: (name, password) of every configured user.
    fn new(
        name: &str,
        address: &str,
        users: &[(String, String)],
        limits: &SharedLimits,
        base: &ConnectParams,
    ) -> Self {
        let now = limits.load();
        let users = users
            .iter()
            .map(|(u, pw)| (u.clone(), (pw.clone(), Places::new(now.max_per_user))))
            .collect();
        NodePools {
            name: name.to_string(),
            address: address.to_string(),
            base: base.clone(),
            limits: limits.clone(),
            users: RwLock::new(users),
            pools: RwLock::new(HashMap::new()),
            backend_slots: Arc::new(Semaphore::new(now.max_per_backend)),
            outstanding: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configured users changed (a reload): new users get pools on first use; the
    /// pools of a user whose password changed are retired (idle connections close now,
    /// leased ones when they come back). A removed user keeps its pools for the sessions
    /// already logged in (new logins are refused before they reach a pool).
    pub fn set_users(&self, users: &[(String, String)]) {
        let mut map = self.users.write();
        let mut gone = Vec::new();
        for (u, pw) in users {
            let same = map.get(u).is_some_and(|(old, _)| old == pw);
            if same {
                continue;
            }
            if map.contains_key(u) {
                gone.push(u.clone());
            }
            let places = Places::new(self.limits.load().max_per_user);
            map.insert(u.clone(), (pw.clone(), places));
        }
        drop(map);
        let mut pools = self.pools.write();
        let retired: Vec<Arc<UserPool>> = pools
            .iter()
            .filter(|((u, _), _)| gone.contains(u))
            .map(|(_, p)| p.clone())
            .collect();
        pools.retain(|(u, _), _| !gone.contains(u));
        drop(pools);
        for p in retired {
            let idle: Vec<_> = p.idle.lock().drain(..).collect();
            idle.into_iter().for_each(|c| p.discard(c, Closed::Retired));
        }
    }

    /// Every pool created so far.
    pub fn user_pools(&self) -> Vec<Arc<UserPool>> {
        self.pools.read().values().cloned().collect()
    }

    fn pool(&self, user: &str, class: ConnClass) -> Option<Arc<UserPool>> {
        if let Some(p) = self.pools.read().get(&(user.to_string(), class)) {
            return Some(p.clone());
        }
        let (password, places) = self.users.read().get(user).cloned()?;
        let mut pools = self.pools.write();
        let pool = pools.entry((user.to_string(), class)).or_insert_with(|| {
            Arc::new(UserPool {
                user: user.to_string(),
                class,
                params: ConnectParams {
                    address: self.address.clone(),
                    user: user.to_string(),
                    password: password.clone(),
                    class,
                    ..self.base.clone()
                },
                limits: self.limits.clone(),
                idle: Mutex::new(VecDeque::new()),
                slots: places.slots.clone(),
                user_waiting: places.waiting.clone(),
                waiting: AtomicUsize::new(0),
                released: Notify::new(),
                generation: AtomicU64::new(0),
                stats: PoolStats::default(),
            })
        });
        Some(pool.clone())
    }

    /// Leases a connection of `class` for `user`, waiting at most
    /// `timeout`.
    pub async fn lease(
        &self,
        user: &str,
        class: ConnClass,
        timeout: Duration,
    ) -> Result<Lease, PoolError> {
        self.lease_where(user, class, timeout, &|_| true, false)
            .await
    }

    /// Leases a connection that `fits` (one that never had a schema, for a client without
    /// one: a schema cannot be unset); idle ones that do not fit make room when needed.
    ///
    /// `overflow`: when the user's places are all taken, a connection is opened over the
    /// limit if the backend has room (a transaction replayed after a failover stands in for
    /// the connection it had on the old primary; waiting for a place there would wait for
    /// COMMITs that wait for the replay).
    pub async fn lease_where(
        &self,
        user: &str,
        class: ConnClass,
        timeout: Duration,
        fits: &(dyn Fn(&BackendConn) -> bool + Sync),
        overflow: bool,
    ) -> Result<Lease, PoolError> {
        let pool = self
            .pool(user, class)
            .ok_or_else(|| PoolError::UnknownUser(user.to_string()))?;
        let pooled = self.find_or_wait(&pool, timeout, fits, overflow).await?;
        Ok(self.make_lease(pool, pooled))
    }

    /// An idle connection that fits, else a new one in a free place, else the first place
    /// freed (or an idle connection released) within `timeout`.
    async fn find_or_wait(
        &self,
        pool: &UserPool,
        timeout: Duration,
        fits: &(dyn Fn(&BackendConn) -> bool + Sync),
        overflow: bool,
    ) -> Result<Pooled, PoolError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waited = false;
        // one place in the user's queue for the whole wait, whatever wakes it meanwhile:
        // places freed go to the user's leases in the order they started waiting
        let slots = self.wait_slots(pool);
        tokio::pin!(slots);
        loop {
            if let Some(p) = pool.pop_idle(fits) {
                return Ok(p);
            }
            if let Some((u, b)) = self.try_slots(pool) {
                return pool.open((Some(u), b)).await;
            }
            if let Some(b) = overflow.then(|| self.try_backend_slot(pool)).flatten() {
                return pool.open((None, b)).await;
            }
            if pool.discard_unfit(fits) {
                continue;
            }
            let notified = pool.released.notified();
            if !std::mem::replace(&mut waited, true) {
                pool.stats.waits.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                _ = notified => continue,
                // another class's pool of this user may hold places with idle connections
                // (its releases notify only its own waiters): look again, and evict one
                _ = tokio::time::sleep(RECHECK), if self.other_class(pool) => continue,
                (u, b) = &mut slots => return pool.open((Some(u), b)).await,
                _ = tokio::time::sleep_until(deadline) => {
                    pool.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Timeout(timeout));
                }
            }
        }
    }

    fn make_lease(&self, pool: Arc<UserPool>, mut pooled: Pooled) -> Lease {
        pooled.conn.leases += 1;
        pool.stats.leases.fetch_add(1, Ordering::Relaxed);
        pool.stats.in_use.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Lease {
            pooled: Some(pooled),
            pool,
            outstanding: self.outstanding.clone(),
        }
    }

    /// Leases one particular idle connection if nobody used it since `leases`
    /// (same-connection statements such as FOUND_ROWS()).
    pub fn take_idle(
        &self,
        user: &str,
        class: ConnClass,
        thread_id: u32,
        leases: u64,
    ) -> Option<Lease> {
        let pool = self.pool(user, class)?;
        let pooled = {
            let mut idle = pool.idle.lock();
            let i = idle
                .iter()
                .position(|p| p.conn.thread_id == thread_id && p.conn.leases == leases)?;
            idle.remove(i)?
        };
        if !pooled.conn.looks_alive() {
            pool.discard(pooled, Closed::Stale);
            return None;
        }
        Some(self.make_lease(pool, pooled))
    }

    fn try_slots(&self, pool: &UserPool) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let u = match pool.slots.clone().try_acquire_owned() {
            Ok(u) => u,
            // the user's places are taken: an idle connection of the user's other classes
            // gives its place up
            Err(_) if self.evict_idle_of_user(pool) => {
                pool.slots.clone().try_acquire_owned().ok()?
            }
            Err(_) => return None,
        };
        if let Ok(b) = self.backend_slots.clone().try_acquire_owned() {
            return Some((u, b));
        }
        // the backend is full: an idle connection of another pool gives its place up
        self.evict_one_idle(pool);
        let b = self.backend_slots.clone().try_acquire_owned().ok()?;
        Some((u, b))
    }

    /// A place in the backend's limit only (an idle connection of another pool gives its
    /// place up if needed).
    fn try_backend_slot(&self, pool: &UserPool) -> Option<OwnedSemaphorePermit> {
        if let Ok(b) = self.backend_slots.clone().try_acquire_owned() {
            return Some(b);
        }
        self.evict_one_idle(pool);
        self.backend_slots.clone().try_acquire_owned().ok()
    }

    /// The user's first free place (counted as waiting for it meanwhile), then the
    /// backend's; while the backend is full, idle connections of other pools are asked to
    /// give theirs up now and then.
    async fn wait_slots(&self, pool: &UserPool) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let waiting = Waiting::new(pool);
        self.evict_idle_of_user(pool);
        let u = pool
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        drop(waiting);
        self.evict_one_idle(pool);
        let b = self.backend_slots.clone().acquire_owned();
        tokio::pin!(b);
        loop {
            tokio::select! {
                b = &mut b => return (u, b.expect("semaphore never closed")),
                _ = tokio::time::sleep(RECHECK) => {
                    self.evict_one_idle(pool);
                }
            }
        }
    }

    /// Whether the same user has a pool of another class.
    fn other_class(&self, pool: &UserPool) -> bool {
        self.pools
            .read()
            .iter()
            .any(|((u, c), _)| *u == pool.user && *c != pool.class)
    }

    /// Closes one idle connection of the same user in another class's pool.
    fn evict_idle_of_user(&self, pool: &UserPool) -> bool {
        self.user_pools()
            .iter()
            .filter(|p| p.user == pool.user && !std::ptr::eq(p.as_ref(), pool))
            .any(|p| {
                let c = p.idle.lock().pop_front();
                c.map(|c| p.discard(c, Closed::Evicted)).is_some()
            })
    }

    fn evict_one_idle(&self, except: &UserPool) -> bool {
        self.user_pools()
            .iter()
            .filter(|p| !std::ptr::eq(p.as_ref(), except))
            .any(|p| {
                let c = p.idle.lock().pop_front();
                c.map(|c| p.discard(c, Closed::Evicted)).is_some()
            })
    }

    /// Closes idle connections past their idle timeout or lifetime, keeping min_idle.
    pub fn reap(&self) {
        for p in self.user_pools() {
            p.reap();
        }
    }

    /// Opens connections until every user's pool of the most used class has min_idle
    /// idle connections, as far as the limits allow.
    pub async fn top_up(&self) {
        for p in self.busiest_pools() {
            while p.idle_len() < p.limits.load().min_idle {
                let Some((u, b)) = self.try_slots(&p) else {
                    break;
                };
                match p.open((Some(u), b)).await {
                    Ok(mut c) => {
                        c.conn.idle_since = Instant::now();
                        p.idle.lock().push_back(c);
                    }
                    Err(e) => {
                        tracing::debug!(backend = %self.name, error = %e, "min_idle top-up failed");
                        break;
                    }
                }
            }
        }
    }

    /// Closes every idle connection (backend gone or demoted).
    /// Per user, the pool of the class leased most (before any lease: the modern class).
    fn busiest_pools(&self) -> Vec<Arc<UserPool>> {
        let all = self.user_pools();
        let mut users: Vec<String> = self.users.read().keys().cloned().collect();
        users.sort();
        users
            .into_iter()
            .filter_map(|u| {
                all.iter()
                    .filter(|p| p.user == *u)
                    .max_by_key(|p| (p.stats.leases.load(Ordering::Relaxed), p.class))
                    .cloned()
                    .or_else(|| self.pool(&u, ConnClass::modern()))
            })
            .collect()
    }

    /// The server's global defaults changed (SET GLOBAL): a session lent a connection
    /// from now on starts from the new ones. Idle connections close now, leased ones when
    /// they come back.
    pub fn renew(&self) {
        for p in self.user_pools() {
            p.generation.fetch_add(1, Ordering::Relaxed);
        }
        self.drain_idle();
    }

    /// Follows new limits: the backend's places and each user's.
    fn resize(&self, old: &PoolLimits, new: &PoolLimits) {
        let mut owed = resize(
            &self.backend_slots,
            old.max_per_backend,
            new.max_per_backend,
        );
        for (_, places) in self.users.read().values() {
            owed += resize(&places.slots, old.max_per_user, new.max_per_user);
        }
        if owed > 0 {
            // idle connections hold places the smaller limits take back
            self.drain_idle();
        }
    }

    pub fn drain_idle(&self) {
        for p in self.user_pools() {
            let all: Vec<_> = p.idle.lock().drain(..).collect();
            all.into_iter().for_each(|c| p.discard(c, Closed::Retired));
        }
    }

    pub fn idle_count(&self) -> usize {
        self.user_pools().iter().map(|p| p.idle.lock().len()).sum()
    }

    pub fn in_use_count(&self) -> usize {
        self.user_pools()
            .iter()
            .map(|p| p.stats.in_use.load(Ordering::Relaxed))
            .sum()
    }
}

impl UserPool {
    /// The most recently used idle connection that fits, checked alive.
    fn pop_idle(&self, fits: &(dyn Fn(&BackendConn) -> bool + Sync)) -> Option<Pooled> {
        loop {
            let p = {
                let mut idle = self.idle.lock();
                let i = idle.iter().rposition(|p| fits(&p.conn))?;
                idle.remove(i)?
            };
            if p.conn.looks_alive() && p.conn.created.elapsed() < self.limits.load().max_lifetime {
                return Some(p);
            }
            self.discard(p, Closed::Stale);
        }
    }

    /// Closes one idle connection that does not fit, freeing its place.
    fn discard_unfit(&self, fits: &(dyn Fn(&BackendConn) -> bool + Sync)) -> bool {
        let p = {
            let mut idle = self.idle.lock();
            let Some(i) = idle.iter().position(|p| !fits(&p.conn)) else {
                return false;
            };
            idle.remove(i)
        };
        p.map(|p| self.discard(p, Closed::Evicted)).is_some()
    }

    async fn open(
        &self,
        (u, b): (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit),
    ) -> Result<Pooled, PoolError> {
        let conn = BackendConn::connect(&self.params).await?;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Pooled {
            conn,
            generation: self.generation.load(Ordering::Relaxed),
            user_place: u,
            _backend: b,
        })
    }

    /// Whether leases of the user's other classes wait for a place.
    fn others_waiting(&self) -> bool {
        // this pool's first: a waiter coming or going between the loads is never counted
        // as another class's
        let here = self.waiting.load(Ordering::SeqCst);
        self.user_waiting.load(Ordering::SeqCst) > here
    }

    fn discard(&self, p: Pooled, why: Closed) {
        self.stats.closed[why as usize].fetch_add(1, Ordering::Relaxed);
        drop(p);
    }

    fn reap(&self) {
        let now = Instant::now();
        let limits = self.limits.load();
        let mut idle = self.idle.lock();
        let mut keep = VecDeque::with_capacity(idle.len());
        let mut dropped = Vec::new();
        // oldest first at the front: those idle longest are reaped first
        while let Some(p) = idle.pop_front() {
            let expired = now.duration_since(p.conn.idle_since) > limits.idle_timeout
                || p.conn.created.elapsed() > limits.max_lifetime;
            if expired && idle.len() + keep.len() >= limits.min_idle {
                dropped.push(p);
            } else {
                keep.push_back(p);
            }
        }
        *idle = keep;
        drop(idle);
        dropped
            .into_iter()
            .for_each(|p| self.discard(p, Closed::Idle));
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A leased connection. `release` returns it; dropping it closes it.
pub struct Lease {
    pooled: Option<Pooled>,
    pool: Arc<UserPool>,
    outstanding: Arc<AtomicUsize>,
}

impl Lease {
    pub fn conn(&mut self) -> &mut BackendConn {
        &mut self.pooled.as_mut().expect("lease holds a connection").conn
    }

    pub fn conn_ref(&self) -> &BackendConn {
        &self.pooled.as_ref().expect("lease holds a connection").conn
    }

    /// Returns a clean connection (between commands, no transaction) to the pool.
    pub fn release(mut self) {
        if let Some(mut p) = self.pooled.take() {
            if p.conn.status & 0x0001 != 0 {
                // SERVER_STATUS_IN_TRANS: its transaction would hold locks in the pool and
                // run under the next session's statements; never lent again
                tracing::warn!(
                    thread_id = p.conn.thread_id,
                    "a connection still in a transaction was given back; closing it"
                );
                self.pool.discard(p, Closed::Broken);
                self.pool.released.notify_one();
                return;
            }
            if p.generation < self.pool.generation.load(Ordering::Relaxed) {
                self.pool.discard(p, Closed::Retired);
                self.pool.released.notify_one();
                return;
            }
            if p.user_place.is_none() {
                // over the user's limit: pooled only into a free place
                match self.pool.slots.clone().try_acquire_owned() {
                    Ok(place) => p.user_place = Some(place),
                    Err(_) => return self.pool.discard(p, Closed::Evicted),
                }
            }
            if self.pool.others_waiting() {
                // a lease of another class waits for the user's place: it goes to whoever
                // waited first, of any class (this connection cannot serve the other class)
                return self.pool.discard(p, Closed::Evicted);
            }
            p.conn.idle_since = Instant::now();
            self.pool.idle.lock().push_back(p);
            self.pool.released.notify_one();
        }
    }
}

/// A lease waiting for one of its user's places, counted in its pool and its user's places
/// while it waits. The pool's own count goes up first and down last, so that a release
/// never sees more of the user's waiters elsewhere than there are.
struct Waiting<'a>(&'a UserPool);

impl<'a> Waiting<'a> {
    fn new(pool: &'a UserPool) -> Self {
        pool.waiting.fetch_add(1, Ordering::SeqCst);
        pool.user_waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(pool)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.user_waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.stats.in_use.fetch_sub(1, Ordering::Relaxed);
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.pooled.take() {
            self.pool.discard(p, Closed::Broken);
        }
    }
}
