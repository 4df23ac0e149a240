//! A three-node group on an in-process network: elect, replicate, commit, apply.
#![allow(clippy::unwrap_used)] // test helpers, not #[test] functions

use std::collections::VecDeque;

use bytes::Bytes;
use tessera_raft::{ConfState, Config, MemStorage, Message, RawNode, ReplicaId, Role};

fn node(id: u64) -> RawNode<MemStorage> {
    let conf =
        ConfState { voters: vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)], ..Default::default() };
    RawNode::new(Config::new(ReplicaId(id)), MemStorage::new_with_conf_state(conf)).unwrap()
}

fn drive(nodes: &mut [RawNode<MemStorage>], applied: &mut [Vec<Bytes>]) {
    let mut queue: VecDeque<Message> = VecDeque::new();
    loop {
        let mut progressed = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            while node.has_ready() {
                progressed = true;
                let ready = node.ready();
                if let Some(hs) = ready.hard_state {
                    node.store_mut().set_hard_state(hs);
                }
                node.store_mut().append(&ready.entries);
                queue.extend(ready.messages.iter().cloned());
                queue.extend(ready.persisted_messages.iter().cloned());
                for entry in &ready.committed_entries {
                    if !entry.data.is_empty() {
                        applied[i].push(entry.data.clone());
                    }
                }
                node.advance(&ready);
            }
        }
        while let Some(message) = queue.pop_front() {
            progressed = true;
            let to = usize::try_from(message.to.0 - 1).unwrap();
            nodes[to].step(message).unwrap();
        }
        if !progressed {
            return;
        }
    }
}

#[test]
fn three_nodes_elect_replicate_and_apply() {
    let mut nodes: Vec<_> = (1..=3).map(node).collect();
    let mut applied = vec![Vec::new(); 3];
    for _ in 0..30 {
        for node in &mut nodes {
            node.tick();
        }
        drive(&mut nodes, &mut applied);
    }
    let leaders: Vec<usize> = (0..3).filter(|&i| nodes[i].raft().role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let leader = leaders[0];
    for i in 0..100u32 {
        nodes[leader].propose(Bytes::from(i.to_string())).unwrap();
    }
    drive(&mut nodes, &mut applied);
    for node_applied in &applied {
        assert_eq!(node_applied.len(), 100);
        assert_eq!(node_applied, &applied[0]);
    }
    nodes[leader].read_index(Bytes::from_static(b"r1")).unwrap();
    let ready = nodes[leader].ready();
    assert_eq!(ready.read_states.len(), 1, "lease read answered at once");
}
