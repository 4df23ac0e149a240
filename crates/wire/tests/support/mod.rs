//! Proptest strategies and fixed samples for every wire type, shared by the wire tests.

#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tessera_wire::errors::RpcError;
use tessera_wire::frame::FrameMessage;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{
    BatchRollbackRequest, CheckTxnStatusRequest, CleanupRequest, CommitRequest, KvCommand, KvPair,
    KvRequest, KvResponse, LockInfo, LockKind, Mutation, MutationOp, PrewriteRequest,
    RawBatchGetRequest, RawBatchPutRequest, RawCompareAndSwapRequest, RawDeleteRangeRequest,
    RawDeleteRequest, RawGetRequest, RawPutRequest, RawScanRequest, ReadMode, RequestContext,
    ResolveLockRequest, TxnBatchGetRequest, TxnGetRequest, TxnScanRequest, TxnStatus,
};
use tessera_wire::placement::{
    DownReplica, PlacementRequest, PlacementResponse, RangeHeartbeat, RangeRoute, ReplicaChange,
    ReplicaChangeOp, ScheduleCommand, SplitIds, Store, StoreLabel, StoreState, StoreStats,
};
use tessera_wire::raft::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageKind, ReplicaId, Snapshot,
    SnapshotMetadata, Term,
};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{
    RpcRequest, RpcRequestBody, RpcResponse, RpcResponseBody, RpcResult, StoreAdminRequest,
    StoreAdminResponse,
};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::{
    Heartbeat, HeartbeatBatch, HeartbeatResponse, HeartbeatResponseBatch, Hello, RaftBatch,
    RaftEnvelope, SnapshotAck, SnapshotChunk, SnapshotFile, SnapshotHeader, SnapshotStatus,
};

// ---- scalars -------------------------------------------------------------------------------

pub fn bytes() -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

pub fn keys() -> impl Strategy<Value = Vec<Bytes>> + Clone {
    vec(bytes(), 0..4)
}

pub fn text() -> impl Strategy<Value = String> + Clone {
    "[a-z0-9 ._-]{0,16}"
}

pub fn timestamp() -> impl Strategy<Value = Timestamp> + Clone {
    any::<u64>().prop_map(Timestamp)
}

pub fn range_id() -> impl Strategy<Value = RangeId> + Clone {
    any::<u64>().prop_map(RangeId)
}

pub fn store_id() -> impl Strategy<Value = StoreId> + Clone {
    any::<u64>().prop_map(StoreId)
}

pub fn replica_id() -> impl Strategy<Value = ReplicaId> + Clone {
    any::<u64>().prop_map(ReplicaId)
}

pub fn term() -> impl Strategy<Value = Term> + Clone {
    any::<u64>().prop_map(Term)
}

pub fn log_index() -> impl Strategy<Value = LogIndex> + Clone {
    any::<u64>().prop_map(LogIndex)
}

// ---- range metadata ------------------------------------------------------------------------

pub fn epoch() -> impl Strategy<Value = RangeEpoch> + Clone {
    (any::<u64>(), any::<u64>()).prop_map(|(conf_ver, version)| RangeEpoch { conf_ver, version })
}

pub fn role() -> impl Strategy<Value = ReplicaRole> + Clone {
    prop_oneof![
        Just(ReplicaRole::Voter),
        Just(ReplicaRole::Learner),
        Just(ReplicaRole::IncomingVoter),
        Just(ReplicaRole::DemotingVoter),
    ]
}

pub fn replica() -> impl Strategy<Value = Replica> + Clone {
    (replica_id(), store_id(), role()).prop_map(|(id, store_id, role)| Replica {
        id,
        store_id,
        role,
    })
}

pub fn descriptor() -> impl Strategy<Value = RangeDescriptor> + Clone {
    (range_id(), bytes(), bytes(), epoch(), vec(replica(), 0..4)).prop_map(
        |(id, start_key, end_key, epoch, replicas)| RangeDescriptor {
            id,
            start_key,
            end_key,
            epoch,
            replicas,
        },
    )
}

// ---- raft ----------------------------------------------------------------------------------

pub fn entry() -> impl Strategy<Value = Entry> + Clone {
    (term(), log_index(), any::<bool>(), bytes()).prop_map(|(term, index, conf, data)| Entry {
        term,
        index,
        kind: if conf { EntryKind::ConfChange } else { EntryKind::Normal },
        data,
    })
}

pub fn conf_state() -> impl Strategy<Value = ConfState> + Clone {
    (
        vec(replica_id(), 0..4),
        vec(replica_id(), 0..3),
        vec(replica_id(), 0..3),
        vec(replica_id(), 0..2),
        any::<bool>(),
    )
        .prop_map(|(voters, voters_outgoing, learners, learners_next, auto_leave)| ConfState {
            voters,
            voters_outgoing,
            learners,
            learners_next,
            auto_leave,
        })
}

pub fn snapshot_metadata() -> impl Strategy<Value = SnapshotMetadata> + Clone {
    (log_index(), term(), conf_state()).prop_map(|(index, term, conf_state)| SnapshotMetadata {
        index,
        term,
        conf_state,
    })
}

pub fn message() -> impl Strategy<Value = Message> + Clone {
    (
        (0..MessageKind::ALL.len()).prop_map(|i| MessageKind::ALL[i]),
        replica_id(),
        replica_id(),
        term(),
        term(),
        log_index(),
        vec(entry(), 0..3),
        log_index(),
        (any::<bool>(), log_index()),
        option::of((snapshot_metadata(), bytes())),
        bytes(),
        any::<bool>(),
    )
        .prop_map(
            |(
                kind,
                from,
                to,
                term,
                log_term,
                index,
                entries,
                commit,
                (reject, reject_hint),
                snapshot,
                context,
                quiesce,
            )| Message {
                kind,
                from,
                to,
                term,
                log_term,
                index,
                entries,
                commit,
                reject,
                reject_hint,
                snapshot: snapshot.map(|(metadata, data)| Box::new(Snapshot { metadata, data })),
                context,
                quiesce,
            },
        )
}

// ---- transport -----------------------------------------------------------------------------

pub fn hello() -> impl Strategy<Value = Hello> + Clone {
    (any::<u64>(), any::<u64>(), any::<u8>(), any::<u8>()).prop_map(
        |(cluster_id, node, version_min, version_max)| Hello {
            cluster_id,
            node_id: NodeId(node),
            version_min,
            version_max,
        },
    )
}

pub fn raft_batch() -> impl Strategy<Value = RaftBatch> + Clone {
    vec((range_id(), store_id(), store_id(), message()), 0..4).prop_map(|envelopes| RaftBatch {
        envelopes: envelopes
            .into_iter()
            .map(|(range, from_store, to_store, message)| RaftEnvelope {
                range,
                from_store,
                to_store,
                message,
            })
            .collect(),
    })
}

pub fn heartbeat() -> impl Strategy<Value = Heartbeat> + Clone {
    (range_id(), replica_id(), replica_id(), term(), log_index(), any::<bool>()).prop_map(
        |(range, from, to, term, commit, quiesce)| Heartbeat {
            range,
            from,
            to,
            term,
            commit,
            quiesce,
        },
    )
}

pub fn heartbeat_batch() -> impl Strategy<Value = HeartbeatBatch> + Clone {
    (store_id(), store_id(), any::<u64>(), vec(heartbeat(), 0..8)).prop_map(
        |(from_store, to_store, tick, beats)| HeartbeatBatch { from_store, to_store, tick, beats },
    )
}

pub fn heartbeat_response() -> impl Strategy<Value = HeartbeatResponse> + Clone {
    (range_id(), replica_id(), replica_id(), term())
        .prop_map(|(range, from, to, term)| HeartbeatResponse { range, from, to, term })
}

pub fn heartbeat_response_batch() -> impl Strategy<Value = HeartbeatResponseBatch> + Clone {
    (store_id(), store_id(), any::<u64>(), vec(heartbeat_response(), 0..8)).prop_map(
        |(from_store, to_store, tick, responses)| HeartbeatResponseBatch {
            from_store,
            to_store,
            tick,
            responses,
        },
    )
}

pub fn snapshot_header() -> impl Strategy<Value = SnapshotHeader> + Clone {
    (
        store_id(),
        store_id(),
        replica_id(),
        replica_id(),
        term(),
        snapshot_metadata(),
        descriptor(),
        vec((text(), any::<u64>(), any::<u32>()), 0..3),
    )
        .prop_map(|(from_store, to_store, from, to, term, metadata, descriptor, files)| {
            SnapshotHeader {
                from_store,
                to_store,
                from,
                to,
                term,
                metadata,
                descriptor,
                files: files
                    .into_iter()
                    .map(|(cf, size_bytes, checksum)| SnapshotFile {
                        cf,
                        size_bytes,
                        checksum,
                        keys: 0,
                    })
                    .collect(),
            }
        })
}

/// A valid chunk: the header is present exactly on `seq == 0` and the checksum matches.
pub fn snapshot_chunk() -> impl Strategy<Value = SnapshotChunk> + Clone {
    (
        range_id(),
        any::<u64>(),
        prop_oneof![Just(0u32), 1u32..1000],
        snapshot_header(),
        any::<u32>(),
        any::<u64>(),
        vec(any::<u8>(), 0..256),
        any::<bool>(),
    )
        .prop_map(|(range, snapshot_id, seq, header, file_index, offset, data, last)| {
            SnapshotChunk {
                range,
                snapshot_id,
                seq,
                header: (seq == 0).then_some(header),
                file_index,
                offset,
                data: Bytes::from(data),
                checksum: 0,
                last,
            }
            .sealed()
        })
}

pub fn snapshot_ack() -> impl Strategy<Value = SnapshotAck> + Clone {
    (
        range_id(),
        any::<u64>(),
        any::<u32>(),
        prop_oneof![
            Just(SnapshotStatus::Receiving),
            Just(SnapshotStatus::Received),
            text().prop_map(|reason| SnapshotStatus::Rejected { reason }),
        ],
    )
        .prop_map(|(range, snapshot_id, chunks_received, status)| SnapshotAck {
            range,
            snapshot_id,
            chunks_received,
            status,
        })
}

// ---- client requests -----------------------------------------------------------------------

pub fn request_context() -> impl Strategy<Value = RequestContext> + Clone {
    (
        range_id(),
        epoch(),
        store_id(),
        option::of(replica_id()),
        prop_oneof![Just(ReadMode::Leader), Just(ReadMode::ReplicaRead), Just(ReadMode::StaleRead)],
    )
        .prop_map(|(range, epoch, store_id, replica, read_mode)| RequestContext {
            range,
            epoch,
            store_id,
            replica,
            read_mode,
        })
}

pub fn pairs() -> impl Strategy<Value = Vec<KvPair>> + Clone {
    vec((bytes(), bytes()).prop_map(|(key, value)| KvPair { key, value }), 0..4)
}

pub fn mutation() -> impl Strategy<Value = Mutation> + Clone {
    (
        prop_oneof![
            Just(MutationOp::Put),
            Just(MutationOp::Delete),
            Just(MutationOp::Lock),
            Just(MutationOp::CheckNotExists),
        ],
        bytes(),
        bytes(),
    )
        .prop_map(|(op, key, value)| Mutation { op, key, value })
}

pub fn lock_info() -> impl Strategy<Value = LockInfo> + Clone {
    (
        bytes(),
        bytes(),
        timestamp(),
        any::<u64>(),
        prop_oneof![Just(LockKind::Put), Just(LockKind::Delete), Just(LockKind::Lock)],
        timestamp(),
        any::<bool>(),
        keys(),
    )
        .prop_map(
            |(
                key,
                primary,
                start_ts,
                lock_ttl_ms,
                kind,
                min_commit_ts,
                use_async_commit,
                secondaries,
            )| {
                LockInfo {
                    key,
                    primary,
                    start_ts,
                    lock_ttl_ms,
                    kind,
                    min_commit_ts,
                    use_async_commit,
                    secondaries,
                }
            },
        )
}

pub fn kv_command() -> BoxedStrategy<KvCommand> {
    prop_oneof![
        bytes().prop_map(|key| KvCommand::RawGet(RawGetRequest { key })),
        keys().prop_map(|keys| KvCommand::RawBatchGet(RawBatchGetRequest { keys })),
        (bytes(), bytes()).prop_map(|(key, value)| KvCommand::RawPut(RawPutRequest { key, value })),
        pairs().prop_map(|pairs| KvCommand::RawBatchPut(RawBatchPutRequest { pairs })),
        bytes().prop_map(|key| KvCommand::RawDelete(RawDeleteRequest { key })),
        (bytes(), bytes()).prop_map(|(start_key, end_key)| KvCommand::RawDeleteRange(
            RawDeleteRangeRequest { start_key, end_key }
        )),
        (bytes(), bytes(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(
            |(start_key, end_key, limit, reverse, key_only)| KvCommand::RawScan(RawScanRequest {
                start_key,
                end_key,
                limit,
                reverse,
                key_only
            })
        ),
        (bytes(), option::of(bytes()), option::of(bytes())).prop_map(|(key, expected, value)| {
            KvCommand::RawCompareAndSwap(RawCompareAndSwapRequest { key, expected, value })
        }),
        (bytes(), timestamp())
            .prop_map(|(key, start_ts)| KvCommand::TxnGet(TxnGetRequest { key, start_ts })),
        (keys(), timestamp()).prop_map(|(keys, start_ts)| KvCommand::TxnBatchGet(
            TxnBatchGetRequest { keys, start_ts }
        )),
        (bytes(), bytes(), any::<u32>(), any::<bool>(), any::<bool>(), timestamp()).prop_map(
            |(start_key, end_key, limit, reverse, key_only, start_ts)| KvCommand::TxnScan(
                TxnScanRequest { start_key, end_key, limit, reverse, key_only, start_ts }
            )
        ),
        (
            vec(mutation(), 0..4),
            bytes(),
            timestamp(),
            any::<u64>(),
            timestamp(),
            keys(),
            any::<bool>()
        )
            .prop_map(
                |(
                    mutations,
                    primary,
                    start_ts,
                    lock_ttl_ms,
                    min_commit_ts,
                    secondaries,
                    try_one_phase,
                )| {
                    KvCommand::Prewrite(PrewriteRequest {
                        mutations,
                        primary,
                        start_ts,
                        lock_ttl_ms,
                        min_commit_ts,
                        secondaries,
                        try_one_phase,
                    })
                }
            ),
        (keys(), timestamp(), timestamp()).prop_map(|(keys, start_ts, commit_ts)| {
            KvCommand::Commit(CommitRequest { keys, start_ts, commit_ts })
        }),
        (keys(), timestamp()).prop_map(|(keys, start_ts)| KvCommand::BatchRollback(
            BatchRollbackRequest { keys, start_ts }
        )),
        (bytes(), timestamp(), timestamp(), timestamp(), any::<bool>()).prop_map(
            |(primary_key, start_ts, caller_start_ts, current_ts, rollback_if_not_exist)| {
                KvCommand::CheckTxnStatus(CheckTxnStatusRequest {
                    primary_key,
                    start_ts,
                    caller_start_ts,
                    current_ts,
                    rollback_if_not_exist,
                })
            }
        ),
        (timestamp(), option::of(timestamp()), keys()).prop_map(|(start_ts, commit_ts, keys)| {
            KvCommand::ResolveLock(ResolveLockRequest { start_ts, commit_ts, keys })
        }),
        (bytes(), timestamp(), timestamp()).prop_map(|(key, start_ts, current_ts)| {
            KvCommand::Cleanup(CleanupRequest { key, start_ts, current_ts })
        }),
    ]
    .boxed()
}

pub fn txn_status() -> impl Strategy<Value = TxnStatus> + Clone {
    prop_oneof![
        lock_info().prop_map(|lock| TxnStatus::Locked { lock }),
        timestamp().prop_map(|commit_ts| TxnStatus::Committed { commit_ts }),
        Just(TxnStatus::RolledBack),
        Just(TxnStatus::TtlExpired),
        Just(TxnStatus::LockNotExist),
    ]
}

pub fn kv_response() -> BoxedStrategy<KvResponse> {
    prop_oneof![
        option::of(bytes()).prop_map(|value| KvResponse::RawGet { value }),
        pairs().prop_map(|pairs| KvResponse::RawBatchGet { pairs }),
        Just(KvResponse::RawPut),
        Just(KvResponse::RawBatchPut),
        Just(KvResponse::RawDelete),
        Just(KvResponse::RawDeleteRange),
        pairs().prop_map(|pairs| KvResponse::RawScan { pairs }),
        (any::<bool>(), option::of(bytes())).prop_map(|(succeeded, previous)| {
            KvResponse::RawCompareAndSwap { succeeded, previous }
        }),
        option::of(bytes()).prop_map(|value| KvResponse::TxnGet { value }),
        pairs().prop_map(|pairs| KvResponse::TxnBatchGet { pairs }),
        pairs().prop_map(|pairs| KvResponse::TxnScan { pairs }),
        (timestamp(), option::of(timestamp())).prop_map(|(min_commit_ts, one_phase_commit_ts)| {
            KvResponse::Prewrite { min_commit_ts, one_phase_commit_ts }
        }),
        Just(KvResponse::Commit),
        Just(KvResponse::BatchRollback),
        txn_status().prop_map(|status| KvResponse::CheckTxnStatus { status }),
        Just(KvResponse::ResolveLock),
        Just(KvResponse::Cleanup),
    ]
    .boxed()
}

// ---- placement -----------------------------------------------------------------------------

pub fn labels() -> impl Strategy<Value = Vec<StoreLabel>> + Clone {
    vec((text(), text()).prop_map(|(key, value)| StoreLabel { key, value }), 0..3)
}

pub fn store() -> impl Strategy<Value = Store> + Clone {
    (
        store_id(),
        any::<u64>(),
        text(),
        labels(),
        prop_oneof![
            Just(StoreState::Up),
            Just(StoreState::Offline),
            Just(StoreState::Down),
            Just(StoreState::Tombstone),
        ],
    )
        .prop_map(|(id, node, address, labels, state)| Store {
            id,
            node_id: NodeId(node),
            address,
            labels,
            state,
        })
}

pub fn store_stats() -> impl Strategy<Value = StoreStats> + Clone {
    (
        (store_id(), any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (store_id, capacity_bytes, available_bytes, used_bytes),
                (range_count, leader_count, sending, receiving, applying, busy),
                (written_bytes, written_keys, read_bytes, read_keys, interval_ms),
            )| StoreStats {
                store_id,
                capacity_bytes,
                available_bytes,
                used_bytes,
                range_count,
                leader_count,
                sending_snapshot_count: sending,
                receiving_snapshot_count: receiving,
                applying_snapshot_count: applying,
                busy,
                written_bytes,
                written_keys,
                read_bytes,
                read_keys,
                interval_ms,
            },
        )
}

pub fn range_heartbeat() -> impl Strategy<Value = RangeHeartbeat> + Clone {
    (
        (descriptor(), option::of(replica()), term(), any::<u64>(), any::<u64>()),
        vec(replica(), 0..3),
        vec(
            (replica(), any::<u64>())
                .prop_map(|(replica, down_ms)| DownReplica { replica, down_ms }),
            0..3,
        ),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (descriptor, leader, term, approximate_size_bytes, approximate_keys),
                pending_replicas,
                down_replicas,
                (written_bytes, written_keys, read_bytes, read_keys, interval_ms),
            )| RangeHeartbeat {
                descriptor,
                leader,
                term,
                approximate_size_bytes,
                approximate_keys,
                pending_replicas,
                down_replicas,
                written_bytes,
                written_keys,
                read_bytes,
                read_keys,
                interval_ms,
            },
        )
}

pub fn route() -> impl Strategy<Value = RangeRoute> + Clone {
    (descriptor(), option::of(replica()))
        .prop_map(|(descriptor, leader)| RangeRoute { descriptor, leader })
}

pub fn schedule_command() -> impl Strategy<Value = ScheduleCommand> + Clone {
    prop_oneof![
        replica().prop_map(|to| ScheduleCommand::TransferLeader { to }),
        vec(
            (
                prop_oneof![
                    Just(ReplicaChangeOp::AddVoter),
                    Just(ReplicaChangeOp::AddLearner),
                    Just(ReplicaChangeOp::Remove),
                ],
                replica()
            )
                .prop_map(|(op, replica)| ReplicaChange { op, replica }),
            0..3
        )
        .prop_map(|changes| ScheduleCommand::ChangeReplicas { changes }),
        keys().prop_map(|keys| ScheduleCommand::Split { keys }),
        descriptor().prop_map(|target| ScheduleCommand::Merge { target }),
    ]
}

pub fn placement_request() -> BoxedStrategy<PlacementRequest> {
    prop_oneof![
        (store(), descriptor())
            .prop_map(|(store, range)| PlacementRequest::Bootstrap { store, range }),
        any::<u32>().prop_map(|count| PlacementRequest::AllocId { count }),
        any::<u32>().prop_map(|count| PlacementRequest::GetTimestamp { count }),
        bytes().prop_map(|key| PlacementRequest::GetRangeByKey { key }),
        range_id().prop_map(|range| PlacementRequest::GetRangeById { range }),
        (bytes(), bytes(), any::<u32>()).prop_map(|(start_key, end_key, limit)| {
            PlacementRequest::ScanRanges { start_key, end_key, limit }
        }),
        store().prop_map(|store| PlacementRequest::PutStore { store }),
        store_id().prop_map(|store_id| PlacementRequest::GetStore { store_id }),
        any::<bool>()
            .prop_map(|exclude_tombstones| PlacementRequest::GetAllStores { exclude_tombstones }),
        (store_stats(), labels())
            .prop_map(|(stats, labels)| PlacementRequest::StoreHeartbeat { stats, labels }),
        range_heartbeat().prop_map(PlacementRequest::RangeHeartbeat),
        (descriptor(), any::<u32>()).prop_map(|(descriptor, split_count)| {
            PlacementRequest::AskSplit { descriptor, split_count }
        }),
        vec(descriptor(), 0..3).prop_map(|ranges| PlacementRequest::ReportSplit { ranges }),
    ]
    .boxed()
}

pub fn placement_response() -> BoxedStrategy<PlacementResponse> {
    prop_oneof![
        Just(PlacementResponse::Bootstrap),
        (any::<u64>(), any::<u32>())
            .prop_map(|(first, count)| PlacementResponse::AllocId { first, count }),
        (timestamp(), any::<u32>())
            .prop_map(|(first, count)| PlacementResponse::GetTimestamp { first, count }),
        route().prop_map(|route| PlacementResponse::GetRangeByKey { route }),
        route().prop_map(|route| PlacementResponse::GetRangeById { route }),
        vec(route(), 0..3).prop_map(|routes| PlacementResponse::ScanRanges { routes }),
        Just(PlacementResponse::PutStore),
        (store(), option::of(store_stats()))
            .prop_map(|(store, stats)| PlacementResponse::GetStore { store, stats }),
        vec(store(), 0..3).prop_map(|stores| PlacementResponse::GetAllStores { stores }),
        Just(PlacementResponse::StoreHeartbeat),
        (range_id(), epoch(), option::of(schedule_command())).prop_map(
            |(range, epoch, command)| {
                PlacementResponse::RangeHeartbeat { range, epoch, command }
            }
        ),
        vec(
            (range_id(), vec(replica_id(), 0..3))
                .prop_map(|(new_range, new_replica_ids)| SplitIds { new_range, new_replica_ids }),
            0..3
        )
        .prop_map(|splits| PlacementResponse::AskSplit { splits }),
        Just(PlacementResponse::ReportSplit),
    ]
    .boxed()
}

// ---- rpc -----------------------------------------------------------------------------------

pub fn rpc_error() -> BoxedStrategy<RpcError> {
    prop_oneof![
        (range_id(), option::of(replica()))
            .prop_map(|(range, leader)| RpcError::NotLeader { range, leader }),
        vec(descriptor(), 0..3).prop_map(|ranges| RpcError::EpochNotMatch { ranges }),
        range_id().prop_map(|range| RpcError::RangeNotFound { range }),
        (bytes(), range_id(), bytes(), bytes()).prop_map(|(key, range, start_key, end_key)| {
            RpcError::KeyNotInRange { key, range, start_key, end_key }
        }),
        (text(), any::<u32>())
            .prop_map(|(reason, retry_after_ms)| RpcError::ServerBusy { reason, retry_after_ms }),
        Just(RpcError::StaleCommand),
        Just(RpcError::Timeout),
        (store_id(), store_id())
            .prop_map(|(requested, actual)| RpcError::StoreNotMatch { requested, actual }),
        (range_id(), any::<u64>(), any::<u64>()).prop_map(
            |(range, entry_bytes, entry_bytes_max)| {
                RpcError::RaftEntryTooLarge { range, entry_bytes, entry_bytes_max }
            }
        ),
        (range_id(), timestamp())
            .prop_map(|(range, safe_ts)| RpcError::DataNotReady { range, safe_ts }),
        lock_info().prop_map(|lock| RpcError::KeyLocked { lock }),
        (bytes(), bytes(), timestamp(), timestamp(), timestamp()).prop_map(
            |(key, primary, start_ts, conflict_start_ts, conflict_commit_ts)| {
                RpcError::WriteConflict {
                    key,
                    primary,
                    start_ts,
                    conflict_start_ts,
                    conflict_commit_ts,
                }
            }
        ),
        bytes().prop_map(|key| RpcError::KeyExists { key }),
        (timestamp(), bytes()).prop_map(|(start_ts, key)| RpcError::TxnNotFound { start_ts, key }),
        (bytes(), timestamp(), timestamp()).prop_map(|(key, start_ts, commit_ts)| {
            RpcError::AlreadyCommitted { key, start_ts, commit_ts }
        }),
        (bytes(), timestamp(), timestamp(), timestamp()).prop_map(
            |(key, start_ts, commit_ts, min_commit_ts)| RpcError::CommitTsExpired {
                key,
                start_ts,
                commit_ts,
                min_commit_ts,
            }
        ),
        (option::of(any::<u64>().prop_map(NodeId)), option::of(".{0,24}"))
            .prop_map(|(leader, address)| RpcError::NotPlacementLeader { leader, address }),
        Just(RpcError::ClusterNotBootstrapped),
        Just(RpcError::AlreadyBootstrapped),
        store_id().prop_map(|store| RpcError::StoreNotFound { store }),
        text().prop_map(|message| RpcError::InvalidRequest { message }),
        text().prop_map(|message| RpcError::Internal { message }),
    ]
    .boxed()
}

pub fn store_admin_request() -> impl Strategy<Value = StoreAdminRequest> + Clone {
    prop_oneof![
        (range_id(), epoch(), bytes(), range_id(), vec(replica_id(), 0..4)).prop_map(
            |(range, epoch, split_key, new_range, new_replicas)| StoreAdminRequest::Split {
                range,
                epoch,
                split_key,
                new_range,
                new_replicas,
            }
        ),
        (range_id(), replica_id())
            .prop_map(|(range, to)| StoreAdminRequest::TransferLeader { range, to }),
    ]
}

pub fn store_admin_response() -> impl Strategy<Value = StoreAdminResponse> + Clone {
    prop_oneof![
        (descriptor(), descriptor())
            .prop_map(|(left, right)| StoreAdminResponse::Split { left, right }),
        Just(StoreAdminResponse::TransferLeader),
    ]
}

pub fn rpc_request() -> BoxedStrategy<RpcRequest> {
    (
        any::<u64>(),
        any::<u32>(),
        prop_oneof![
            (request_context(), kv_command())
                .prop_map(|(context, command)| RpcRequestBody::Kv(KvRequest { context, command })),
            placement_request().prop_map(RpcRequestBody::Placement),
            store_admin_request().prop_map(RpcRequestBody::StoreAdmin),
        ],
    )
        .prop_map(|(id, timeout_ms, body)| RpcRequest { id, timeout_ms, body })
        .boxed()
}

pub fn rpc_response() -> BoxedStrategy<RpcResponse> {
    (
        any::<u64>(),
        prop_oneof![
            kv_response().prop_map(|body| RpcResult::Ok(RpcResponseBody::Kv(body))),
            placement_response().prop_map(|body| RpcResult::Ok(RpcResponseBody::Placement(body))),
            store_admin_response()
                .prop_map(|body| RpcResult::Ok(RpcResponseBody::StoreAdmin(body))),
            rpc_error().prop_map(RpcResult::Err),
        ],
    )
        .prop_map(|(id, result)| RpcResponse { id, result })
        .boxed()
}

/// Any frame's content.
pub fn frame_message() -> BoxedStrategy<FrameMessage> {
    prop_oneof![
        hello().prop_map(FrameMessage::Hello),
        raft_batch().prop_map(FrameMessage::RaftBatch),
        heartbeat_batch().prop_map(FrameMessage::HeartbeatBatch),
        heartbeat_response_batch().prop_map(FrameMessage::HeartbeatResponseBatch),
        snapshot_chunk().prop_map(FrameMessage::SnapshotChunk),
        snapshot_ack().prop_map(FrameMessage::SnapshotAck),
        rpc_request().prop_map(FrameMessage::RpcRequest),
        rpc_response().prop_map(FrameMessage::RpcResponse),
    ]
    .boxed()
}

// ---- fixed samples -------------------------------------------------------------------------

/// One deterministic value of every frame kind, with non-trivial content.
pub fn sample_messages() -> Vec<FrameMessage> {
    let replica = Replica { id: ReplicaId(2), store_id: StoreId(20), role: ReplicaRole::Voter };
    let descriptor = RangeDescriptor {
        id: RangeId(7),
        start_key: Bytes::from_static(b"a"),
        end_key: Bytes::from_static(b"m"),
        epoch: RangeEpoch { conf_ver: 3, version: 5 },
        replicas: vec![
            Replica { id: ReplicaId(1), store_id: StoreId(10), role: ReplicaRole::Voter },
            replica,
            Replica { id: ReplicaId(3), store_id: StoreId(30), role: ReplicaRole::Learner },
        ],
    };
    let mut append = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(4));
    append.index = LogIndex(9);
    append.log_term = Term(4);
    append.commit = LogIndex(8);
    append.entries = vec![Entry {
        term: Term(4),
        index: LogIndex(10),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"put k v"),
    }];
    let header = SnapshotHeader {
        from_store: StoreId(10),
        to_store: StoreId(30),
        from: ReplicaId(1),
        to: ReplicaId(3),
        term: Term(4),
        metadata: SnapshotMetadata {
            index: LogIndex(100),
            term: Term(4),
            conf_state: ConfState {
                voters: vec![ReplicaId(1), ReplicaId(2)],
                learners: vec![ReplicaId(3)],
                ..ConfState::default()
            },
        },
        descriptor: descriptor.clone(),
        files: vec![SnapshotFile {
            cf: "default".into(),
            size_bytes: 11,
            checksum: 0xdead_beef,
            keys: 3,
        }],
    };
    let lock = LockInfo {
        key: Bytes::from_static(b"k"),
        primary: Bytes::from_static(b"p"),
        start_ts: Timestamp::from_parts(1_700_000_000_000, 3),
        lock_ttl_ms: 3000,
        kind: LockKind::Put,
        min_commit_ts: Timestamp::ZERO,
        use_async_commit: false,
        secondaries: vec![],
    };
    vec![
        FrameMessage::Hello(Hello::new(42, NodeId(1))),
        FrameMessage::RaftBatch(RaftBatch {
            envelopes: vec![RaftEnvelope {
                range: RangeId(7),
                from_store: StoreId(10),
                to_store: StoreId(20),
                message: append,
            }],
        }),
        FrameMessage::HeartbeatBatch(HeartbeatBatch {
            from_store: StoreId(10),
            to_store: StoreId(20),
            tick: 99,
            beats: vec![Heartbeat {
                range: RangeId(7),
                from: ReplicaId(1),
                to: ReplicaId(2),
                term: Term(4),
                commit: LogIndex(10),
                quiesce: true,
            }],
        }),
        FrameMessage::HeartbeatResponseBatch(HeartbeatResponseBatch {
            from_store: StoreId(20),
            to_store: StoreId(10),
            tick: 99,
            responses: vec![HeartbeatResponse {
                range: RangeId(7),
                from: ReplicaId(2),
                to: ReplicaId(1),
                term: Term(4),
            }],
        }),
        FrameMessage::SnapshotChunk(
            SnapshotChunk {
                range: RangeId(7),
                snapshot_id: 1,
                seq: 0,
                header: Some(header),
                file_index: 0,
                offset: 0,
                data: Bytes::from_static(b"sst bytes.."),
                checksum: 0,
                last: true,
            }
            .sealed(),
        ),
        FrameMessage::SnapshotAck(SnapshotAck {
            range: RangeId(7),
            snapshot_id: 1,
            chunks_received: 1,
            status: SnapshotStatus::Rejected { reason: "overlaps range 8".into() },
        }),
        FrameMessage::RpcRequest(RpcRequest {
            id: 5,
            timeout_ms: 2000,
            body: RpcRequestBody::Kv(KvRequest {
                context: RequestContext {
                    range: RangeId(7),
                    epoch: descriptor.epoch,
                    store_id: StoreId(20),
                    replica: Some(ReplicaId(2)),
                    read_mode: ReadMode::Leader,
                },
                command: KvCommand::Prewrite(PrewriteRequest {
                    mutations: vec![Mutation {
                        op: MutationOp::Put,
                        key: Bytes::from_static(b"k"),
                        value: Bytes::from_static(b"v"),
                    }],
                    primary: Bytes::from_static(b"k"),
                    start_ts: Timestamp::from_parts(1_700_000_000_000, 1),
                    lock_ttl_ms: 3000,
                    ..PrewriteRequest::default()
                }),
            }),
        }),
        FrameMessage::RpcResponse(RpcResponse {
            id: 5,
            result: RpcResult::Err(RpcError::KeyLocked { lock }),
        }),
        FrameMessage::RpcResponse(RpcResponse {
            id: 6,
            result: RpcResult::Err(RpcError::EpochNotMatch { ranges: vec![descriptor.clone()] }),
        }),
        FrameMessage::RpcRequest(RpcRequest {
            id: 7,
            timeout_ms: 0,
            body: RpcRequestBody::Placement(PlacementRequest::RangeHeartbeat(RangeHeartbeat {
                descriptor: descriptor.clone(),
                leader: Some(replica),
                term: Term(4),
                approximate_size_bytes: 1 << 20,
                approximate_keys: 1000,
                ..RangeHeartbeat::default()
            })),
        }),
        FrameMessage::RpcResponse(RpcResponse {
            id: 7,
            result: RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::RangeHeartbeat {
                range: RangeId(7),
                epoch: descriptor.epoch,
                command: Some(ScheduleCommand::Split { keys: vec![Bytes::from_static(b"g")] }),
            })),
        }),
    ]
}
