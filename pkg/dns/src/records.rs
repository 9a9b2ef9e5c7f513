//! The names one network answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The names one network answers: name or alias -> addresses, kept
/// lower-cased and without a trailing dot. Cloning shares the table, so
/// the network code updates what a running [`crate::Responder`] answers.
#[derive(Clone, Default, Debug)]
pub struct Records {
    names: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

/// DNS names compare case-insensitively; `web.` and `web` are one name.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Records {
    /// Makes `name` answer `addrs` (replacing what it answered). A name
    /// set with no addresses is still known: it answers with no records
    /// instead of being forwarded.
    pub fn set(&self, name: &str, addrs: Vec<IpAddr>) {
        self.write().insert(normalize(name), addrs);
    }

    /// Forgets `name`; queries for it are forwarded again.
    pub fn remove(&self, name: &str) {
        self.write().remove(&normalize(name));
    }

    /// The addresses of `name`, empty if it is unknown.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        self.get(name).unwrap_or_default()
    }

    /// The addresses of `name`, or `None` if it is unknown.
    pub fn get(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.read().get(&normalize(name)).cloned()
    }

    /// The names that answer `addr`, sorted (for PTR queries).
    pub fn names_of(&self, addr: IpAddr) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, addrs)| addrs.contains(&addr))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    // A writer that panicked left a whole map behind (every change is one
    // insert or remove), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Vec<IpAddr>>> {
        self.names.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Vec<IpAddr>>> {
        self.names.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_and_dot_insensitive() {
        let r = Records::default();
        r.set("Web.", vec!["10.0.0.2".parse().unwrap()]);
        assert_eq!(r.lookup("WEB"), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.names_of("10.0.0.2".parse().unwrap()), vec!["web"]);
        r.remove("web.");
        assert!(r.get("web").is_none());
    }

    #[test]
    fn a_name_without_addresses_is_known() {
        let r = Records::default();
        r.set("empty", vec![]);
        assert_eq!(r.get("empty"), Some(vec![]));
        assert!(r.lookup("empty").is_empty());
    }
}
