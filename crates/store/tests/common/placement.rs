//! An in-process placement driver fake for store tests: records what stores send, hands out
//! ids, and answers range heartbeats with scheduling commands a test scripts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_store::PlacementClient;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::placement::{
    PlacementRequest, PlacementResponse, RangeRoute, ScheduleCommand, SplitIds,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::RangeDescriptor;

#[derive(Default)]
pub struct FakeState {
    /// Every request received, in order.
    pub requests: Vec<PlacementRequest>,
    /// Commands to hand the next heartbeat of each range (once).
    pub commands: HashMap<RangeId, ScheduleCommand>,
    pub next_id: u64,
    /// The newest descriptor of each range, from range heartbeats and split reports.
    pub ranges: HashMap<RangeId, RangeDescriptor>,
}

impl FakeState {
    fn learn(&mut self, descriptor: &RangeDescriptor) {
        let newer = self.ranges.get(&descriptor.id).is_none_or(|known| {
            (known.epoch.version, known.epoch.conf_ver)
                < (descriptor.epoch.version, descriptor.epoch.conf_ver)
        });
        if newer {
            self.ranges.insert(descriptor.id, descriptor.clone());
        }
    }
}

/// The shared fake; each store gets a [`FakeClient`] on it.
#[derive(Clone, Default)]
pub struct FakePlacement {
    pub state: Arc<Mutex<FakeState>>,
}

impl FakePlacement {
    pub fn new() -> Self {
        let fake = Self::default();
        fake.state.lock().unwrap().next_id = 10_000;
        fake
    }

    pub fn client(&self) -> Box<dyn PlacementClient> {
        Box::new(FakeClient { state: self.state.clone(), answers: Vec::new() })
    }

    pub fn script(&self, range: RangeId, command: ScheduleCommand) {
        self.state.lock().unwrap().commands.insert(range, command);
    }

    pub fn requests(&self) -> Vec<PlacementRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

pub struct FakeClient {
    state: Arc<Mutex<FakeState>>,
    answers: Vec<(u64, Result<PlacementResponse, RpcError>)>,
}

impl PlacementClient for FakeClient {
    fn send(&mut self, token: u64, request: PlacementRequest) {
        let mut state = self.state.lock().unwrap();
        state.requests.push(request.clone());
        let answer = match request {
            PlacementRequest::StoreHeartbeat { .. } => PlacementResponse::StoreHeartbeat,
            PlacementRequest::RangeHeartbeat(heartbeat) => {
                state.learn(&heartbeat.descriptor);
                let range = heartbeat.descriptor.id;
                PlacementResponse::RangeHeartbeat {
                    range,
                    epoch: heartbeat.descriptor.epoch,
                    command: state.commands.remove(&range),
                }
            }
            PlacementRequest::AskSplit { descriptor, split_count } => {
                let mut splits = Vec::new();
                for _ in 0..split_count {
                    state.next_id += 1;
                    let new_range = RangeId(state.next_id);
                    let new_replica_ids = descriptor
                        .replicas
                        .iter()
                        .map(|_| {
                            state.next_id += 1;
                            ReplicaId(state.next_id)
                        })
                        .collect();
                    splits.push(SplitIds { new_range, new_replica_ids });
                }
                PlacementResponse::AskSplit { splits }
            }
            PlacementRequest::ReportSplit { ranges } => {
                for descriptor in &ranges {
                    state.learn(descriptor);
                }
                PlacementResponse::ReportSplit
            }
            PlacementRequest::GetRangeById { range } => match state.ranges.get(&range) {
                Some(descriptor) => PlacementResponse::GetRangeById {
                    route: RangeRoute { descriptor: descriptor.clone(), leader: None },
                },
                None => {
                    self.answers.push((token, Err(RpcError::RangeNotFound { range })));
                    return;
                }
            },
            other => panic!("the fake does not serve {other:?}"),
        };
        self.answers.push((token, Ok(answer)));
    }

    fn take_answers(&mut self) -> Vec<(u64, Result<PlacementResponse, RpcError>)> {
        std::mem::take(&mut self.answers)
    }
}
