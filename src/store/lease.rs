//! Who holds a run lease, and whether that holder can still be alive.
//!
//! A lease row names its owner as `host:pid:random`. The random part makes every
//! acquisition distinct (two runs of one process never share an owner string); the host
//! and pid let a restarted daemon see at once that the lease it finds was held by a
//! process of this host that no longer exists, instead of waiting for the expiry.
//! Leases are rows checked inside each page's transaction, never advisory locks (those
//! belong to one pooled connection and vanish silently with it).

use rand::RngCore;

/// The host and process a store's leases are taken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
}

impl LeaseHolder {
    /// This host and this process.
    pub fn current() -> Self {
        LeaseHolder {
            host: this_host(),
            pid: std::process::id(),
        }
    }

    /// A fresh owner string for one acquisition: `host:pid:random`.
    pub fn new_owner(&self) -> String {
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{}:{random}", self.host, self.pid)
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

/// Whether `owner` names a process of `host` that no longer exists. Owners of other
/// hosts are never judged dead (their expiry decides), nor are unparsable owners.
pub fn held_by_dead_process(owner: &str, host: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_random), Some(pid), Some(owner_host)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if owner_host != host {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_dead_local_processes_are_recognized() {
        let holder = LeaseHolder::current();
        let owner = holder.new_owner();
        assert!(owner.starts_with(&format!("{}:{}:", holder.host, holder.pid)));
        assert_ne!(owner, holder.new_owner());
        assert!(!held_by_dead_process(&owner, &holder.host));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_owner = format!("{}:{dead}:abcd", holder.host);
        assert!(held_by_dead_process(&dead_owner, &holder.host));
        assert!(!held_by_dead_process(
            &format!("elsewhere:{dead}:abcd"),
            &holder.host
        ));
        assert!(!held_by_dead_process("garbage", &holder.host));
    }
}
