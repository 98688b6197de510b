//! Connection admission: `max.connections` for the broker and `max.connections.per.ip`, Kafka's
//! names. A connection over either limit is accepted and closed at once, so its client fails fast
//! and tries elsewhere or later, instead of waiting in the listen backlog for a slot.
//!
//! The counts are process-wide, shared by the shards' accept loops: a client may connect to any
//! shard's port, and the limit is the broker's. They are touched on accept and close only, never
//! per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

static CONNECTIONS: LazyLock<Connections> = LazyLock::new(Connections::default);

/// The process's connection counts.
pub fn connections() -> &'static Connections {
    &CONNECTIONS
}

/// The broker's open connections, in total and by client address.
#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Broker { limit: usize },
    Address { limit: usize },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Broker { limit } => write!(f, "max.connections ({limit}) reached"),
            Refused::Address { limit } => write!(f, "max.connections.per.ip ({limit}) reached for this address"),
        }
    }
}

/// A connection's place in the counts, given back when it drops.
pub struct Slot<'a> {
    owner: &'a Connections,
    ip: IpAddr,
}

impl Connections {
    /// Takes a slot for a connection from `ip`, or says which limit refuses it.
    pub fn admit(&self, ip: IpAddr, max: usize, max_per_ip: usize) -> Result<Slot<'_>, Refused> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.open.load(Ordering::Relaxed) >= max {
            return Err(Refused::Broker { limit: max });
        }
        let mine = by_ip.entry(ip).or_insert(0);
        if *mine >= max_per_ip {
            return Err(Refused::Address { limit: max_per_ip });
        }
        *mine += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { owner: self, ip })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut by_ip = self.owner.by_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.owner.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_open_connections_and_slots_come_back() {
        let c = Connections::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = c.admit(a, 3, 2).unwrap();
        let second = c.admit(a, 3, 2).unwrap();
        assert_eq!(c.admit(a, 3, 2).err(), Some(Refused::Address { limit: 2 }));
        let third = c.admit(b, 3, 2).unwrap();
        assert_eq!(c.admit(b, 3, 2).err(), Some(Refused::Broker { limit: 3 }));
        assert_eq!(c.open(), 3);
        drop(first);
        let again = c.admit(a, 3, 2).unwrap();
        drop((second, third, again));
        assert_eq!(c.open(), 0);
        assert!(c.by_ip.lock().unwrap().is_empty(), "addresses with no connection are forgotten");
    }
}
