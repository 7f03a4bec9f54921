//! The cluster layer: who the nodes are, whether each answers, and whether this node may act.
//!
//! ```text
//! member (ractor_cluster transport over links: mutual TLS from the cluster CA)
//!   ├─ heartbeat: answers peers' pings with this node's load
//!   └─ membership: pings every peer ─▶ failure_detector (up / down) ─▶ ClusterView (watch)
//!                                   └▶ lease: a majority answered recently ─▶ Lease (atomic)
//!   support: whom this node's answers support, and what peers report of theirs (takeover)
//!   peers: whom membership watches, from the shard map's members (seeds and joined nodes)
//! ```

pub mod failure_detector;
pub mod heartbeat;
pub mod lease;
pub mod links;
pub mod load;
pub mod member;
pub mod membership;
pub mod peers;
pub mod support;
