//! Loading the configured zones, and reloading them when their files change: a thread
//! polls each file's size, mtime and inode every `reload_interval_ms`; a changed zone is
//! parsed again and the catalog swapped whole (readers never wait). A zone that fails to
//! parse keeps serving its previous version, and the error (with its line) is logged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::catalog::{Catalog, SharedCatalog};
use crate::limits::{DnsConfig, ZoneConfig};
use crate::zone::{Zone, ZoneError};

/// Loads every configured zone; the first failure is returned (start-up refuses to serve
/// a zone it cannot read).
pub fn load_catalog(config: &DnsConfig) -> Result<Catalog, ZoneError> {
    let mut catalog = Catalog::default();
    for z in &config.zones {
        let zone = Zone::load(&z.origin, &z.file)?;
        tracing::info!(
            origin = %zone.origin(),
            serial = zone.serial(),
            records = zone.record_count(),
            file = %z.file.display(),
            "dns zone loaded"
        );
        catalog.insert(Arc::new(zone));
    }
    Ok(catalog)
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// The reload thread; stops when dropped (or, once detached, when the catalog is gone).
#[derive(Debug)]
pub struct ZoneReloader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZoneReloader {
    /// Starts watching `config.zones` (nothing when there are none or the interval is 0).
    pub fn start(config: &DnsConfig, catalog: SharedCatalog) -> Option<Self> {
        if config.zones.is_empty() || config.reload_interval.is_zero() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let zones = config.zones.clone();
        let interval = config.reload_interval;
        // taken now, not in the thread: a change made right after start is not missed
        let stamps = zones.iter().map(|z| stamp(&z.file)).collect();
        let thread = std::thread::Builder::new()
            .name("dns-zone-reload".into())
            .spawn({
                let catalog = Arc::downgrade(&catalog);
                move || watch(zones, stamps, catalog, interval, &flag)
            })
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl ZoneReloader {
    /// Lets the thread run on its own: it ends once every handle to the catalog is dropped.
    pub fn detach(mut self) {
        self.thread.take();
        self.stop = Arc::new(AtomicBool::new(false));
    }
}

impl Drop for ZoneReloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn watch(
    zones: Vec<ZoneConfig>,
    mut stamps: Vec<Option<Stamp>>,
    catalog: Weak<arc_swap::ArcSwap<Catalog>>,
    interval: Duration,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(interval);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Some(catalog) = catalog.upgrade() else {
            break; // the server is gone
        };
        for (z, seen) in zones.iter().zip(stamps.iter_mut()) {
            let now = stamp(&z.file);
            if now == *seen {
                continue;
            }
            *seen = now;
            reload_one(z, &catalog);
        }
    }
}

/// Parses one zone again and swaps it in, or logs why the old one stays.
pub(crate) fn reload_one(z: &ZoneConfig, catalog: &SharedCatalog) {
    match Zone::load(&z.origin, &z.file) {
        Ok(zone) => {
            tracing::info!(
                origin = %zone.origin(),
                serial = zone.serial(),
                records = zone.record_count(),
                "dns zone reloaded"
            );
            let zone = Arc::new(zone);
            catalog.rcu(|current| {
                let mut next = Catalog::clone(current);
                next.insert(zone.clone());
                next
            });
        }
        Err(e) => tracing::error!("dns zone not reloaded, the previous version stays: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::catalog::shared;

    fn a_count(catalog: &SharedCatalog, name: &str) -> usize {
        let name = Name::from_str(name).expect("name");
        let cat = catalog.load();
        cat.find(&name)
            .map(|z| z.lookup(&name, RecordType::A).answers.len())
            .unwrap_or(0)
    }

    #[test]
    fn a_changed_file_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("example.zone");
        let head = "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n";
        std::fs::write(&file, format!("{head}a IN A 192.0.2.1\n")).expect("write");
        let config = DnsConfig {
            zones: vec![ZoneConfig {
                origin: "example.com".into(),
                file: file.clone(),
            }],
            reload_interval: Duration::from_millis(20),
            ..DnsConfig::default()
        };
        let catalog = shared(load_catalog(&config).expect("load"));
        assert_eq!(a_count(&catalog, "a.example.com."), 1);
        assert_eq!(a_count(&catalog, "b.example.com."), 0);
        let _reloader = ZoneReloader::start(&config, catalog.clone()).expect("reloader");

        std::fs::write(&file, format!("{head}b IN A 192.0.2.2\n")).expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a_count(&catalog, "b.example.com.") == 0 {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(a_count(&catalog, "a.example.com."), 0);

        // a broken file: the previous zone keeps serving
        std::fs::write(&file, format!("{head}c IN A not-an-address\n")).expect("write");
        reload_one(&config.zones[0], &catalog);
        assert_eq!(a_count(&catalog, "b.example.com."), 1);
    }

    #[test]
    fn start_up_refuses_a_broken_zone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = DnsConfig {
            zones: vec![ZoneConfig {
                origin: "example.com".into(),
                file: dir.path().join("missing.zone"),
            }],
            ..DnsConfig::default()
        };
        let e = load_catalog(&config).expect_err("missing file");
        assert!(e.to_string().contains("missing.zone"), "{e}");
    }
}
