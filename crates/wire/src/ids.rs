//! Identifiers that cross crate boundaries: ranges, stores and nodes.

id_newtype!(
    /// A range (one Raft group), unique in the cluster and never reused.
    RangeId
);
id_newtype!(
    /// A store (one data directory of one node), unique in the cluster and never reused.
    StoreId
);
id_newtype!(
    /// A node (one `tessera` process, holding one or more stores), unique in the cluster and
    /// never reused. Transport connections are per node pair.
    NodeId
);
