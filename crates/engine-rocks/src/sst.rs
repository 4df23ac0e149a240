//! Range snapshots as SST files: export from a snapshot, check and ingest.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rocksdb::{DB, IngestExternalFileOptions, Options, SstFileWriter, WriteBatch};
use tessera_engine::{
    Cf, EngineError, KeySpan, KvCursor, KvRead, Result, SnapshotFile, SnapshotManifest,
    file_checksum, keys,
};

use crate::error::map_err;
use crate::kv::{KvInner, RocksKvSnapshot};

/// Writes `span` of every data column family of `snapshot` into `dir/<cf>.sst`.
pub(crate) fn export(
    inner: &KvInner,
    snapshot: &RocksKvSnapshot,
    span: &KeySpan,
    dir: &Path,
) -> Result<SnapshotManifest> {
    let mut entries = std::fs::read_dir(dir).map_err(|error| {
        EngineError::io(format!("listing snapshot directory {}", dir.display()), error)
    })?;
    if entries.next().is_some() {
        return Err(EngineError::InvalidArgument(format!(
            "snapshot directory {} is not empty",
            dir.display()
        )));
    }
    let mut manifest = SnapshotManifest::default();
    for cf in Cf::DATA {
        let mut cursor = snapshot.cursor(cf, span)?;
        if !cursor.seek_to_first()? {
            // SstFileWriter cannot finish an empty file; an empty column family has none.
            continue;
        }
        let path = dir.join(format!("{}.sst", cf.name()));
        let context = |what: &str| format!("{what} snapshot file {}", path.display());
        let mut writer = SstFileWriter::create(&inner.sst_options);
        writer.open(&path).map_err(|error| map_err(&context("creating"), &error))?;
        let mut keys = 0u64;
        loop {
            writer
                .put(cursor.key(), cursor.value())
                .map_err(|error| map_err(&context("writing"), &error))?;
            keys += 1;
            if !cursor.next()? {
                break;
            }
        }
        writer.finish().map_err(|error| map_err(&context("finishing"), &error))?;
        let (size_bytes, checksum) = file_checksum(&path)?;
        manifest.files.push(SnapshotFile { cf, path, size_bytes, keys, checksum });
    }
    tracing::debug!(
        ?span,
        files = manifest.files.len(),
        keys = manifest.keys(),
        "exported snapshot"
    );
    Ok(manifest)
}

/// Verifies the manifest's files, checks their keys lie in `span`, clears `span` in every
/// data column family and ingests the files (copied: the sender's files stay).
pub(crate) fn ingest(inner: &KvInner, span: &KeySpan, manifest: &SnapshotManifest) -> Result<()> {
    if span.is_empty() {
        return Err(EngineError::InvalidArgument(format!(
            "ingest_snapshot into empty span {span:?}"
        )));
    }
    manifest.verify()?;
    for file in &manifest.files {
        if !Cf::DATA.contains(&file.cf) {
            return Err(EngineError::InvalidArgument(format!(
                "snapshot file {} is for column family {}, which holds no range data",
                file.path.display(),
                file.cf.name()
            )));
        }
    }
    for file in &manifest.files {
        check_file(inner, span, file)?;
    }

    // Every check passed: from here on the span changes. The deletion is synced so that it
    // cannot be lost in a crash while the ingested files (synced by RocksDB) survive.
    let mut batch = WriteBatch::default();
    for cf in Cf::DATA {
        inner.stage_delete_span(&mut batch, cf, span)?;
    }
    inner.write_locked(batch, &[], true)?;
    let mut options = IngestExternalFileOptions::default();
    options.set_move_files(false);
    for cf in Cf::DATA {
        let paths: Vec<&Path> = manifest
            .files
            .iter()
            .filter(|file| file.cf == cf)
            .map(|file| file.path.as_path())
            .collect();
        if paths.is_empty() {
            continue;
        }
        // Ingestion takes sequence numbers: keep it serialized with writes.
        let _writes = inner.tracker.lock();
        inner.db.ingest_external_file_cf_opts(inner.cf(cf), &options, paths).map_err(|error| {
            let what = format!("ingesting snapshot files into {}", cf.name());
            if error.kind() == rocksdb::ErrorKind::IOError {
                // The files were being synced; what is durable is unknown.
                inner.poison.poison(&what, &error)
            } else {
                map_err(&what, &error)
            }
        })?;
    }
    tracing::debug!(
        ?span,
        files = manifest.files.len(),
        keys = manifest.keys(),
        "ingested snapshot"
    );
    Ok(())
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), %error, "could not remove scratch directory");
        }
    }
}

/// Loads `file` into a throw-away RocksDB instance and checks, from the resulting file
/// metadata, that it is a valid SST whose smallest and largest keys lie in `span`, with the
/// manifest's key count and no deletions.
fn check_file(inner: &KvInner, span: &KeySpan, file: &SnapshotFile) -> Result<()> {
    let location = file.path.display().to_string();
    let seq = inner.scratch_seq.fetch_add(1, Ordering::Relaxed);
    let dir = inner.scratch_root.join(format!("check-{seq}"));
    std::fs::create_dir_all(&dir)
        .map_err(|error| EngineError::io(format!("creating {}", dir.display()), error))?;
    // Declared before the instance so that it is dropped (and the directory removed) after it.
    let _cleanup = RemoveOnDrop(dir.clone());
    // Ingest a hard link with move_files so that the check copies nothing and the
    // instance's unlinking leaves the caller's file alone; copy when linking is impossible.
    let link = dir.join("input.sst");
    let (path, move_files) = match std::fs::hard_link(&file.path, &link) {
        Ok(()) => (link, true),
        Err(_) => (file.path.clone(), false),
    };
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_paranoid_checks(true);
    options.set_disable_auto_compactions(true);
    options.set_keep_log_file_num(1);
    let db = DB::open(&options, dir.join("db")).map_err(|error| {
        map_err(&format!("opening scratch instance in {}", dir.display()), &error)
    })?;
    let mut ingest = IngestExternalFileOptions::default();
    ingest.set_move_files(move_files);
    db.ingest_external_file_opts(&ingest, vec![path]).map_err(|error| match error.kind() {
        rocksdb::ErrorKind::Corruption
        | rocksdb::ErrorKind::InvalidArgument
        | rocksdb::ErrorKind::NotSupported => {
            EngineError::corruption(location.clone(), format!("not a loadable SST file: {error}"))
        }
        _ => map_err(&format!("checking snapshot file {location}"), &error),
    })?;
    let live = db
        .live_files()
        .map_err(|error| map_err(&format!("checking snapshot file {location}"), &error))?;
    let [meta] = live.as_slice() else {
        return Err(EngineError::corruption(
            location,
            format!("loaded as {} files, expected 1", live.len()),
        ));
    };
    let (Some(first), Some(last)) = (meta.start_key.as_deref(), meta.end_key.as_deref()) else {
        return Err(EngineError::corruption(location, "file has no key range"));
    };
    if !span.contains(first) || !span.contains(last) {
        return Err(EngineError::InvalidArgument(format!(
            "snapshot file {location} holds keys [{}, {}] outside the span {span:?}",
            keys::escape(first),
            keys::escape(last)
        )));
    }
    if meta.num_deletions != 0 {
        return Err(EngineError::corruption(
            location,
            format!("{} deletions in a snapshot file", meta.num_deletions),
        ));
    }
    if meta.num_entries != file.keys {
        return Err(EngineError::corruption(
            location,
            format!("file holds {} keys, manifest says {}", meta.num_entries, file.keys),
        ));
    }
    Ok(())
}
