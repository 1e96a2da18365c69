//! The zones a server is authoritative for, found by the longest matching origin, and the
//! live set of them that reloads swap in whole (`arc-swap`: readers never wait).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};

#[cfg(feature = "pkarr")]
use crate::pkarr::PkarrStore;
use crate::zone::{Zone, ZoneAnswer};

/// A set of zones by origin.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    zones: HashMap<LowerName, Arc<Zone>>,
    /// Labels of the longest origin: names are never cut longer than this to search.
    max_labels: u8,
    /// Names published under Ed25519 keys, answered when no zone holds the name.
    #[cfg(feature = "pkarr")]
    pkarr: Option<Arc<PkarrStore>>,
}

impl Catalog {
    pub fn new(zones: impl IntoIterator<Item = Arc<Zone>>) -> Self {
        let mut c = Self::default();
        for z in zones {
            c.insert(z);
        }
        c
    }

    /// Adds or replaces the zone with `zone`'s origin.
    pub fn insert(&mut self, zone: Arc<Zone>) {
        self.max_labels = self.max_labels.max(zone.origin().num_labels());
        self.zones.insert(zone.origin().clone(), zone);
    }

    /// Serves pkarr names from `store` too.
    #[cfg(feature = "pkarr")]
    pub fn set_pkarr(&mut self, store: Arc<PkarrStore>) {
        self.pkarr = Some(store);
    }

    /// The answer from a stored pkarr packet, when `name` is under a key this node has.
    pub fn pkarr_lookup(
        &self,
        name: &Name,
        qtype: hickory_proto::rr::RecordType,
    ) -> Option<ZoneAnswer> {
        #[cfg(feature = "pkarr")]
        return self.pkarr.as_ref()?.lookup(name, qtype);
        #[cfg(not(feature = "pkarr"))]
        {
            let _ = (name, qtype);
            None
        }
    }

    pub fn get(&self, origin: &LowerName) -> Option<&Arc<Zone>> {
        self.zones.get(origin)
    }

    /// The zone with the longest origin containing `name`.
    pub fn find(&self, name: &Name) -> Option<&Arc<Zone>> {
        if self.zones.is_empty() {
            return None;
        }
        let labels = name.num_labels().min(self.max_labels);
        (0..=labels)
            .rev()
            .find_map(|n| self.zones.get(&LowerName::new(&name.trim_to(n.into()))))
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

/// The catalog in service, shared by every worker and replaced whole on reload.
pub type SharedCatalog = Arc<ArcSwap<Catalog>>;

pub fn shared(catalog: Catalog) -> SharedCatalog {
    Arc::new(ArcSwap::from_pointee(catalog))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;

    use super::*;

    fn zone(origin: &str) -> Arc<Zone> {
        let text = "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n";
        Arc::new(Zone::parse(origin, text, Path::new("z")).expect("zone"))
    }

    #[test]
    fn longest_origin_wins() {
        let c = Catalog::new([zone("example.com."), zone("sub.example.com."), zone(".")]);
        let find = |n: &str| {
            c.find(&Name::from_str(n).expect("name"))
                .map(|z| z.origin().to_string())
        };
        assert_eq!(
            find("a.sub.example.com.").as_deref(),
            Some("sub.example.com.")
        );
        assert_eq!(
            find("SUB.example.com.").as_deref(),
            Some("sub.example.com.")
        );
        assert_eq!(find("www.example.com.").as_deref(), Some("example.com."));
        assert_eq!(find("example.org.").as_deref(), Some("."));
        let c = Catalog::new([zone("example.com.")]);
        let find = |n: &str| c.find(&Name::from_str(n).expect("name")).is_some();
        assert!(!find("example.org."));
        assert!(!find("com."));
        assert!(find("a.b.c.d.example.com."));
    }
}
