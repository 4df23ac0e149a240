//! The `metrics` series the transport records, read back through a debugging recorder. This
//! binary holds one test because the recorder is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use common::{append, config, heartbeat, mesh, start};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tessera_wire::ids::NodeId;

/// One snapshot of every series (taking a snapshot drains counters and histograms, so the
/// test takes exactly one).
type Series = Vec<(CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)>;

/// The value of the series `name` whose labels include every pair of `labels`.
fn find<'a>(series: &'a Series, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    series.iter().find_map(|(key, _, _, value)| {
        let key = key.key();
        let matches = key.name() == name
            && labels.iter().all(|(label, wanted)| {
                key.labels().any(|l| l.key() == *label && l.value() == *wanted)
            });
        matches.then_some(value)
    })
}

fn counter(series: &Series, name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(series, name, labels) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_shows_in_the_metrics_series() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    const MESSAGES: u64 = 100;
    const RANGES: u64 = 300;
    for index in 1..=MESSAGES {
        a.transport.send_raft(NodeId(2), append(1, 1, 2, index)).unwrap();
    }
    b.recorder.wait_for("appends", |r| r.raft_count() == MESSAGES as usize).await;
    for range in 1..=RANGES {
        a.transport.send_raft(NodeId(2), heartbeat(range, 1, 2)).unwrap();
    }
    a.transport.tick();
    b.recorder.wait_for("heartbeats", |r| r.raft_count() == (MESSAGES + RANGES) as usize).await;

    let series: Series = snapshotter.snapshot().into_vec();
    let sent = [("kind", "raft"), ("destination", "2")];
    assert_eq!(counter(&series, "tessera_transport_messages_sent_total", &sent), MESSAGES);
    assert!(counter(&series, "tessera_transport_bytes_sent_total", &sent) > MESSAGES * 64);
    let received = [("kind", "raft"), ("source", "1")];
    assert_eq!(counter(&series, "tessera_transport_messages_received_total", &received), MESSAGES);
    let beats = [("kind", "heartbeat"), ("source", "1")];
    assert_eq!(counter(&series, "tessera_transport_messages_received_total", &beats), RANGES);
    match find(&series, "tessera_transport_heartbeats_per_message", &[("destination", "2")]) {
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(samples.iter().map(|s| s.into_inner()).collect::<Vec<_>>(), [RANGES as f64]);
        }
        other => panic!("heartbeats per message: {other:?}"),
    }
    match find(&series, "tessera_transport_batch_messages", &[("destination", "2")]) {
        Some(DebugValue::Histogram(samples)) => {
            let total: f64 = samples.iter().map(|s| s.into_inner()).sum();
            assert_eq!(total, MESSAGES as f64, "batch sizes add up to the messages sent");
        }
        other => panic!("batch sizes: {other:?}"),
    }
    assert!(find(&series, "tessera_transport_queue_messages", &[("destination", "2")]).is_some());
}
