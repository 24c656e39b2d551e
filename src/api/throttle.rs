//! Wrong bearer tokens, counted per client address: after `max_failures`
//! within `window`, the client is refused (429) for `block`, right token or
//! not, so the token cannot be guessed at the speed of the network.
//!
//! Pure: time is an argument (the API passes its clock's monotonic time).
//! Bounded: at most `capacity` clients are remembered; when full, those
//! whose window has passed go first, then the oldest.
//!
//! A client behind the same proxy or tunnel as the retailer's backend
//! shares its address: a guesser there locks the backend out for `block`
//! too. That is the price of not trusting `X-Forwarded-For` from anyone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Counts wrong tokens per client address.
#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    block: Duration,
    capacity: usize,
    clients: HashMap<IpAddr, Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// When the current window began.
    since: Duration,
    failures: u32,
    blocked_until: Option<Duration>,
}

impl Throttle {
    /// Refuse a client for `block` after `max_failures` wrong tokens within
    /// `window`; remember at most `capacity` clients.
    #[must_use]
    pub fn new(max_failures: u32, window: Duration, block: Duration, capacity: usize) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            block,
            capacity: capacity.max(1),
            clients: HashMap::new(),
        }
    }

    /// `Err(retry_after)` while `client` is refused.
    ///
    /// # Errors
    /// How long the client is still refused.
    pub fn check(&self, client: IpAddr, now: Duration) -> Result<(), Duration> {
        match self.clients.get(&client).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until.saturating_sub(now)),
            _ => Ok(()),
        }
    }

    /// Counts a wrong token; true when this one got the client refused.
    pub fn failed(&mut self, client: IpAddr, now: Duration) -> bool {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.capacity {
            self.make_room(now);
        }
        let e = self.clients.entry(client).or_insert(Entry {
            since: now,
            failures: 0,
            blocked_until: None,
        });
        if now.saturating_sub(e.since) >= self.window || e.blocked_until.is_some_and(|u| u <= now) {
            *e = Entry {
                since: now,
                failures: 0,
                blocked_until: None,
            };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.max_failures && e.blocked_until.is_none() {
            e.blocked_until = Some(now + self.block);
            return true;
        }
        false
    }

    /// The right token: the client's count starts again.
    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&client);
    }

    /// Clients remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn make_room(&mut self, now: Duration) {
        let (window, before) = (self.window, self.clients.len());
        self.clients.retain(|_, e| match e.blocked_until {
            Some(until) => until > now,
            None => now.saturating_sub(e.since) < window,
        });
        if self.clients.len() == before
            && let Some(oldest) = self
                .clients
                .iter()
                .filter(|(_, e)| e.blocked_until.is_none())
                .min_by_key(|(_, e)| e.since)
                .or_else(|| self.clients.iter().min_by_key(|(_, e)| e.since))
                .map(|(ip, _)| *ip)
        {
            self.clients.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn refuses_after_the_limit_within_the_window_then_forgives() {
        let mut t = Throttle::new(3, s(60), s(300), 16);
        assert!(!t.failed(ip(1), s(0)));
        assert!(!t.failed(ip(1), s(10)));
        assert_eq!(t.check(ip(1), s(10)), Ok(()));
        assert!(t.failed(ip(1), s(20)));
        assert_eq!(t.check(ip(1), s(20)), Err(s(300)));
        assert_eq!(t.check(ip(1), s(319)), Err(s(1)));
        // Another client is not affected.
        assert_eq!(t.check(ip(2), s(20)), Ok(()));
        // Blocked clients' further failures do not extend the block.
        assert!(!t.failed(ip(1), s(100)));
        assert_eq!(t.check(ip(1), s(320)), Ok(()));
        // And they start from zero afterwards.
        assert!(!t.failed(ip(1), s(321)));
    }

    #[test]
    fn failures_spread_wider_than_the_window_are_not_added_up() {
        let mut t = Throttle::new(3, s(60), s(300), 16);
        assert!(!t.failed(ip(1), s(0)));
        assert!(!t.failed(ip(1), s(59)));
        assert!(!t.failed(ip(1), s(61)), "a new window began at 61");
        assert_eq!(t.check(ip(1), s(61)), Ok(()));
    }

    #[test]
    fn the_right_token_clears_the_count() {
        let mut t = Throttle::new(3, s(60), s(300), 16);
        t.failed(ip(1), s(0));
        t.failed(ip(1), s(1));
        t.succeeded(ip(1));
        assert!(!t.failed(ip(1), s(2)));
        assert!(!t.failed(ip(1), s(3)));
        assert!(t.failed(ip(1), s(4)));
    }

    #[test]
    fn memory_is_bounded_and_blocked_clients_are_kept_longest() {
        let mut t = Throttle::new(2, s(60), s(300), 4);
        t.failed(ip(1), s(0));
        assert!(t.failed(ip(1), s(0)));
        for n in 2..200 {
            t.failed(ip(n), s(u64::from(n)));
            assert!(t.len() <= 4);
        }
        assert!(
            t.check(ip(1), s(200)).is_err(),
            "the blocked client was evicted"
        );
    }
}
