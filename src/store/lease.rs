//! Who holds a run lease, and whether that holder can still be alive.
//!
//! A lease row names its owner as `node:pid:random`. The node is this daemon's node id
//! (see [`node_id`]); the random part makes every acquisition distinct (two runs of one
//! process never share an owner string). The node and pid let a restarted daemon see at
//! once that the lease it finds was held by a process of this same node that no longer
//! exists, instead of waiting for the expiry. A lease of another node is only ever taken
//! over once it expires by the database's clock: a real second host cannot see this
//! host's processes. Leases are rows checked inside each page's transaction, never
//! advisory locks (those belong to one pooled connection and vanish silently with it).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngCore;

use super::{Lease, StoreError};

/// The environment variable naming this process's node id; it wins over `node` in
/// `tributary.yaml`, since nodes usually share one config tree synced by Git.
pub const NODE_ENV: &str = "TRIBUTARY_NODE";

/// The node and process a store's leases are taken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Node id (see [`node_id`]).
    pub node: String,
    /// Process id.
    pub pid: u32,
}

impl LeaseHolder {
    /// This node (as the environment and the host say, without a config) and process.
    pub fn current() -> Self {
        LeaseHolder {
            node: node_id(None).unwrap_or_else(|_| default_node_id()),
            pid: std::process::id(),
        }
    }

    /// This process on the node `node`.
    pub fn on_node(node: String) -> Self {
        LeaseHolder {
            node,
            pid: std::process::id(),
        }
    }

    /// A fresh owner string for one acquisition: `node:pid:random`.
    pub fn new_owner(&self) -> String {
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{}:{random}", self.node, self.pid)
    }
}

/// This process's node id: `$TRIBUTARY_NODE`, else `configured` (`node` in
/// `tributary.yaml`), else [`default_node_id`]. Checked as [`check_node_id`] says.
///
/// # Errors
/// The id given is not a valid node id (the message says why).
pub fn node_id(configured: Option<&str>) -> Result<String, String> {
    let from_env = std::env::var(NODE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    match from_env.as_deref().or(configured) {
        Some(id) => {
            let id = id.trim();
            check_node_id(id)?;
            Ok(id.to_string())
        }
        None => Ok(default_node_id()),
    }
}

/// A node id is 1 to 64 characters of letters, digits, `.`, `_` and `-`: it is shown in
/// status output and metric labels, and `:` separates it from the pid in lease owners.
///
/// # Errors
/// Why the id is refused.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("node id `{id}` must be 1 to 64 characters long"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "node id `{id}` may hold only letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// The default node id: the host name, plus the first 8 hex digits of a hash of
/// `/etc/machine-id` when there is one, so that two machines (or containers) cloned with
/// the same host name still differ, and a restart on the same machine keeps its id (so it
/// recognizes its own dead processes' leases at once).
pub fn default_node_id() -> String {
    let host: String = this_host()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    match std::fs::read_to_string("/etc/machine-id") {
        Ok(id) if !id.trim().is_empty() => {
            let hash = blake3::hash(id.trim().as_bytes()).to_hex();
            format!("{host}-{}", &hash[..8])
        }
        _ => host,
    }
}

/// The host name, as the kernel knows it (no extra crate needed on Linux).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| String::from("localhost"))
}

/// The node part of an owner string (`node:pid:random`); `None` for a free lease.
pub fn owner_node(owner: &str) -> Option<&str> {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_random), Some(_pid), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some(node)
}

/// Whether `owner` names a process of node `node` (this one) that no longer exists on
/// this host. Owners of other nodes are never judged dead (their expiry decides), nor
/// are unparsable owners.
pub fn held_by_dead_process(owner: &str, node: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_random), Some(pid), Some(owner_node)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if owner_node != node {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    !process_exists(pid)
}

/// Whether a process with this id exists on this host.
pub fn process_exists(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Without /proc there is no cheap, dependency-free check: assume alive and let
        // the expiry decide.
        true
    }
}

/// A lease a daemon claimed for a run, shared by the run and the task renewing it.
///
/// The run asks [`HeldLease::check`] before each request: a lease whose last renewal is
/// older than its lifetime by this process's monotonic clock (a paused process, a store
/// it cannot reach) is treated as gone before the database says so, so a node that lost
/// its lease stops sending requests. The page commits still check the lease in their
/// own transaction by the database's clock: that check is the one that fences.
#[derive(Debug)]
pub struct HeldLease {
    lease: Lease,
    ttl: Duration,
    /// Local time by which the lease has surely expired unless renewed again.
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl HeldLease {
    /// A lease taken with lifetime `ttl` by a statement sent at `asked_at` (the database
    /// started its lifetime later, so the local deadline is never past the real one).
    pub fn new(lease: Lease, ttl: Duration, asked_at: Instant) -> Self {
        HeldLease {
            lease,
            ttl,
            valid_until: Mutex::new(asked_at + ttl),
            lost: AtomicBool::new(false),
        }
    }

    /// The lease (its owner and fencing token never change while it is held).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Its lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A renewal asked at `asked_at` succeeded.
    pub fn renewed(&self, asked_at: Instant) {
        let mut until = self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *until = (*until).max(asked_at + self.ttl);
    }

    /// The store said the lease changed hands.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the lease may still be held.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when it changed hands or expired by this process's clock.
    pub fn check(&self) -> Result<(), StoreError> {
        let until = *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.lost.load(Ordering::SeqCst) || Instant::now() >= until {
            return Err(StoreError::LeaseLost {
                importer: self.lease.importer.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_dead_local_processes_are_recognized() {
        let holder = LeaseHolder::current();
        let owner = holder.new_owner();
        assert!(owner.starts_with(&format!("{}:{}:", holder.node, holder.pid)));
        assert_eq!(owner_node(&owner), Some(holder.node.as_str()));
        assert_ne!(owner, holder.new_owner());
        assert!(!held_by_dead_process(&owner, &holder.node));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_owner = format!("{}:{dead}:abcd", holder.node);
        assert!(held_by_dead_process(&dead_owner, &holder.node));
        // Another node's process is never judged from here, even on the same host.
        assert!(!held_by_dead_process(
            &format!("elsewhere:{dead}:abcd"),
            &holder.node
        ));
        assert!(!held_by_dead_process("garbage", &holder.node));
        assert_eq!(owner_node(""), None);
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(check_node_id("node-a.example_1").is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a:b").is_err());
        assert!(check_node_id(&"x".repeat(65)).is_err());
        assert!(check_node_id(&default_node_id()).is_ok());
    }

    #[test]
    fn a_held_lease_expires_locally_without_renewal() {
        let lease = Lease {
            importer: "crm".into(),
            owner: "n:1:ab".into(),
            fencing_token: 3,
            expires_at: chrono::Utc::now(),
        };
        let held = HeldLease::new(lease.clone(), Duration::from_secs(60), Instant::now());
        assert!(held.check().is_ok());
        held.mark_lost();
        assert!(held.check().is_err());
        if let Some(past) = Instant::now().checked_sub(Duration::from_secs(120)) {
            let held = HeldLease::new(lease, Duration::from_secs(60), past);
            assert!(held.check().is_err());
            held.renewed(Instant::now());
            assert!(held.check().is_ok());
        }
    }
}
