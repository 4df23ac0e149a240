//! Engine tuning: [`EngineOptions`] and the RocksDB options built from it.

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, LogLevel,
    Options,
};
use tessera_engine::Cf;

/// Tuning of both RocksDB instances of a store. `Default` fits a small node (2 cores, a few
/// GiB of memory); every field says what it trades.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineOptions {
    /// Bytes of the one LRU block cache shared by `raft/` and `kv/` (uncompressed data,
    /// index and filter blocks). Shared so that the instance under read pressure gets the
    /// memory. Default 256 MiB.
    pub block_cache_bytes: usize,
    /// Background flush and compaction threads per instance. Default 2: the target machines
    /// have 2 cores, and more jobs than cores only makes compactions fight the foreground.
    pub max_background_jobs: i32,
    /// Memtable size of `raft/`. Log entries are written once, read back soon (apply,
    /// followers catching up) and deleted after truncation; a memtable big enough to hold
    /// the recent log of every active range lets most of them die before they are ever
    /// flushed. Default 64 MiB.
    pub raft_memtable_bytes: usize,
    /// Memtable size of each column family of `kv/`. Default 64 MiB.
    pub kv_memtable_bytes: usize,
    /// Memtables per column family (active plus immutable ones waiting to be flushed) before
    /// writes stall. Default 4: flushes on a 2-core machine can lag behind bursts.
    pub max_write_buffer_number: i32,
    /// `kv/` asks the OS to write back SST files every this many bytes while they are being
    /// written (`bytes_per_sync`, also used for the `kv/` WAL), so that a flush or compaction
    /// does not end in one huge write-back burst that stalls foreground fsyncs. Default 1 MiB.
    pub bytes_per_sync: u64,
    /// Bloom filter bits per key on `kv/` SST files: point reads (`get`, lock checks) skip
    /// files that cannot hold the key. 10 bits ≈ 1% false positives. Default 10.
    pub bloom_bits_per_key: f64,
    /// Target SST file size of `kv/` (level 1 and up). Default 32 MiB, a third of the 96 MiB
    /// split size, so a range's data spans few files and range snapshots and deletions stay
    /// cheap.
    pub kv_target_file_size_bytes: u64,
    /// Upper bound of `raft/`'s WAL bytes before RocksDB forces a flush of the oldest
    /// memtable to recycle WAL files. Default 256 MiB.
    pub raft_max_total_wal_bytes: u64,
    /// Most RocksDB info-log (`LOG`) files kept per instance. Default 4.
    pub keep_info_log_files: usize,
    /// Open an instance whose MANIFEST ends inside a record. RocksDB would open it as an
    /// older version of itself, silently missing every file added since (their WALs are
    /// gone), so by default [`open`](crate::open) refuses it with a corruption error. A
    /// power loss in the middle of a MANIFEST write can leave the same torn tail without
    /// any loss; after checking that this is what happened, an operator may set this to
    /// open anyway. Default false.
    pub open_truncated_manifest: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
            max_background_jobs: 2,
            raft_memtable_bytes: 64 << 20,
            kv_memtable_bytes: 64 << 20,
            max_write_buffer_number: 4,
            bytes_per_sync: 1 << 20,
            bloom_bits_per_key: 10.0,
            kv_target_file_size_bytes: 32 << 20,
            raft_max_total_wal_bytes: 256 << 20,
            keep_info_log_files: 4,
            open_truncated_manifest: false,
        }
    }
}

/// Options both instances share.
fn common_db_options(options: &EngineOptions) -> Options {
    let mut db = Options::default();
    db.create_if_missing(true);
    // Verify checksums and file sizes when opening and reading; a damaged directory is
    // refused with a corruption error instead of served.
    db.set_paranoid_checks(true);
    db.set_max_background_jobs(options.max_background_jobs.max(1));
    db.set_keep_log_file_num(options.keep_info_log_files.max(1));
    db.set_log_level(LogLevel::Info);
    db.set_level_compaction_dynamic_level_bytes(true);
    // Record synced, closed WALs in the MANIFEST and check at open that they are all there
    // with their sizes: a MANIFEST that lost its tail (and with it the record of a flush
    // whose WAL was then deleted) is refused instead of opening with the flushed data gone.
    db.set_track_and_verify_wals_in_manifest(true);
    db
}

fn table_options(options: &EngineOptions, cache: &Cache, bloom: bool) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if bloom {
        table.set_bloom_filter(options.bloom_bits_per_key, false);
    }
    table
}

/// Compression of levels 0–6 in both instances: none on the first two (hot data, rewritten
/// or deleted soon), LZ4 below. `kv/` additionally uses ZSTD on its bottommost level.
const COMPRESSION_PER_LEVEL: [DBCompressionType; 7] = [
    DBCompressionType::None,
    DBCompressionType::None,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
];

/// Options of `raft/`: one column family, WAL synced per batch by the caller, no
/// compression on the first two levels (entries are short-lived: compressing data that is
/// deleted before it reaches level 2 is wasted CPU), LZ4 below.
pub(crate) fn raft_options(options: &EngineOptions, cache: &Cache) -> Options {
    let mut db = common_db_options(options);
    // Every raft write is synced, so after a crash only the last, unacknowledged record can
    // be torn: drop an incomplete record at the tail, but refuse to open on damage anywhere
    // else (point-in-time recovery would silently drop the acknowledged records after it).
    db.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    db.set_write_buffer_size(options.raft_memtable_bytes);
    db.set_max_write_buffer_number(options.max_write_buffer_number.max(2));
    db.set_max_total_wal_size(options.raft_max_total_wal_bytes);
    // Logs are read by sequential scans and by exact key; no bloom filter needed.
    db.set_block_based_table_factory(&table_options(options, cache, false));
    db.set_compression_per_level(&COMPRESSION_PER_LEVEL);
    db
}

/// Database-wide options of `kv/`.
pub(crate) fn kv_db_options(options: &EngineOptions) -> Options {
    let mut db = common_db_options(options);
    // Writes are not synced one by one, so after a power loss the unsynced end of the WAL
    // may be damaged anywhere: replay up to the first damaged record and stop there, which
    // keeps a prefix of the writes in order, as the trait promises.
    db.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    db.create_missing_column_families(true);
    db.set_bytes_per_sync(options.bytes_per_sync);
    db.set_wal_bytes_per_sync(options.bytes_per_sync);
    db
}

/// Options of one `kv/` column family: bloom filters, no compression on levels 0–1 (hot,
/// rewritten soon), LZ4 in the middle, ZSTD on the bottommost level (most of the data,
/// rarely rewritten).
pub(crate) fn kv_cf_options(options: &EngineOptions, cache: &Cache) -> Options {
    let mut cf = kv_db_options(options);
    cf.set_write_buffer_size(options.kv_memtable_bytes);
    cf.set_max_write_buffer_number(options.max_write_buffer_number.max(2));
    cf.set_target_file_size_base(options.kv_target_file_size_bytes);
    cf.set_block_based_table_factory(&table_options(options, cache, true));
    cf.set_compression_per_level(&COMPRESSION_PER_LEVEL);
    cf.set_bottommost_compression_type(DBCompressionType::Zstd);
    cf
}

/// The column family descriptors of `kv/`.
pub(crate) fn kv_cf_descriptors(
    options: &EngineOptions,
    cache: &Cache,
) -> Vec<ColumnFamilyDescriptor> {
    Cf::ALL
        .into_iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), kv_cf_options(options, cache)))
        .collect()
}
