//! quinn-proto's `ConnectionIdGenerator` for the layout in [`alknet_proto::cid`].

use std::time::Duration;

use alknet_proto::cid::{CidLayout, WorkerId, CID_LEN};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::RngCore;

/// Issues CIDs that name `worker`, so stray datagrams can be forwarded to it.
#[derive(Debug, Clone)]
pub struct WorkerCidGenerator {
    layout: CidLayout,
    worker: WorkerId,
}

impl WorkerCidGenerator {
    pub fn new(layout: CidLayout, worker: WorkerId) -> Self {
        Self { layout, worker }
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut random = [0u8; 5];
        rand::thread_rng().fill_bytes(&mut random);
        ConnectionId::new(&self.layout.encode(self.worker, random))
    }

    /// Lets the endpoint drop short-header garbage without a stateless reset. CIDs naming
    /// another worker never get here in the runtime (they are forwarded first); a CID naming
    /// this worker but no live connection is answered with a stateless reset, as it should.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match self.layout.decode(cid) {
            Some(w) if w == self.worker => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cids_name_their_worker_and_differ() {
        let layout = CidLayout::new(7, 4).expect("layout");
        let mut g = WorkerCidGenerator::new(layout, 2);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_ne!(a, b);
        assert_eq!(layout.decode(&a), Some(2));
        assert!(g.validate(&a).is_ok());
        let other = WorkerCidGenerator::new(layout, 1).generate_cid();
        assert!(g.validate(&other).is_err());
    }
}
