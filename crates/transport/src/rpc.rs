//! RPCs: one bidirectional stream per call (request frame, response frame), deadlines on both
//! sides, and bounds on both sides answered with `ServerBusy`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_wire::errors::RpcError;
use tessera_wire::frame::{Frame, encode_frame};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponse, RpcResult};

use crate::connection::{FrameReader, Link, ReadError, STREAM_BAD_FRAME, bad_frame};
use crate::error::TransportError;
use crate::metrics::{DropReason, MessageClass};
use crate::peer::{Peer, Slot};
use crate::transport::Inner;

/// The open connection to `peer`, asking its sender task to dial if there is none. Fails
/// fast while a reconnect backoff runs.
pub(crate) async fn wait_link(inner: &Inner, peer: &Peer) -> Result<Arc<Link>, TransportError> {
    let node = peer.node;
    let mut slot = peer.slot.subscribe();
    loop {
        let current = slot.borrow_and_update().clone();
        match current {
            Slot::Up(link) if link.is_open() => return Ok(link),
            Slot::Down { retry_at: Some(retry_at), error } if retry_at > Instant::now() => {
                return Err(TransportError::Unreachable {
                    node,
                    reason: error.map_or_else(|| "reconnect backoff".to_owned(), |e| e.to_string()),
                });
            }
            Slot::Dialing => {}
            _ => {
                if peer.addr.lock().is_none() {
                    return Err(TransportError::UnknownPeer { node });
                }
                peer.wake.notify_one();
            }
        }
        if inner.faults.blocked(node) {
            return Err(TransportError::Blocked { node });
        }
        if slot.changed().await.is_err() {
            return Err(TransportError::Shutdown);
        }
    }
}

/// The client side of one RPC.
pub(crate) async fn call(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    body: RpcRequestBody,
    timeout: Duration,
) -> Result<RpcResponse, TransportError> {
    let node = peer.node;
    if inner.faults.blocked(node) {
        return Err(TransportError::Blocked { node });
    }
    let id = inner.next_request_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(_permit) = peer.rpc_permits.clone().try_acquire_owned() else {
        inner.stats.rpc_busy("client");
        return Ok(RpcResponse {
            id,
            result: RpcResult::Err(busy(
                inner,
                format!("{} RPCs in flight to node {node}", inner.config.rpc_inflight_max),
            )),
        });
    };
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1);
    let request = RpcRequest { id, timeout_ms, body };
    let frame = encode_frame(&request)?;
    let lost = |error: &dyn std::fmt::Display| TransportError::ConnectionLost {
        node,
        reason: error.to_string(),
    };
    let exchange = async {
        let link = wait_link(inner, peer).await?;
        let delay = inner.faults.rule(node).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if inner.faults.lose_frame(node) {
            // A lost request: no answer ever comes, the caller's deadline decides.
            peer.metrics.dropped(&inner.stats, DropReason::FaultLoss, 1);
            std::future::pending::<()>().await;
        }
        let (mut send, recv) = link.conn.open_bi().await.map_err(|e| lost(&e))?;
        send.write_all(&frame).await.map_err(|e| lost(&e))?;
        let _ = send.finish();
        peer.metrics.sent(&inner.stats, MessageClass::Rpc, 1, frame.len());
        let mut reader = FrameReader::new(recv, inner.config.frame_bytes_max);
        match reader.next().await {
            Ok(Some(frame)) => {
                let response: RpcResponse = frame.decode().map_err(|error| {
                    bad_frame(inner, peer, &error, "rpc");
                    TransportError::Protocol { node, reason: error.to_string() }
                })?;
                if response.id != id {
                    return Err(TransportError::Protocol {
                        node,
                        reason: format!("response id {} for request {id}", response.id),
                    });
                }
                peer.metrics.received(&inner.stats, MessageClass::Rpc, 1, frame.wire_bytes());
                Ok(response)
            }
            Ok(None) => Err(lost(&"stream ended without a response")),
            Err(ReadError::Frame(error)) => {
                bad_frame(inner, peer, &error, "rpc");
                Err(TransportError::Protocol { node, reason: error.to_string() })
            }
            Err(ReadError::Stream(reason)) => Err(lost(&reason)),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(TransportError::Timeout { node, after: timeout }))
}

fn busy(inner: &Inner, reason: String) -> RpcError {
    RpcError::ServerBusy {
        reason,
        retry_after_ms: u32::try_from(inner.config.rpc_busy_retry_after.as_millis())
            .unwrap_or(u32::MAX),
    }
}

/// The server side of one RPC stream whose first frame is `first`.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    first: Frame,
    mut reader: FrameReader,
    mut send: quinn::SendStream,
) {
    let request: RpcRequest = match first.decode() {
        Ok(request) => request,
        Err(error) => {
            bad_frame(&inner, &peer, &error, "rpc");
            reader.refuse(STREAM_BAD_FRAME);
            let _ = send.reset(STREAM_BAD_FRAME);
            return;
        }
    };
    peer.metrics.received(&inner.stats, MessageClass::Rpc, 1, first.wire_bytes());
    let id = request.id;
    let timeout = if request.timeout_ms == 0 {
        inner.config.rpc_timeout_default
    } else {
        Duration::from_millis(request.timeout_ms.into())
    };
    let result = match inner.serve_permits.clone().try_acquire_owned() {
        Err(_) => {
            inner.stats.rpc_busy("server");
            RpcResult::Err(busy(
                &inner,
                format!("{} RPCs being served", inner.config.rpc_serve_inflight_max),
            ))
        }
        Ok(_permit) => {
            let answer = inner.handler.on_rpc(peer.node, request);
            tokio::time::timeout(timeout, answer).await.unwrap_or(RpcResult::Err(RpcError::Timeout))
        }
    };
    let response = RpcResponse { id, result };
    let frame = match encode_frame(&response) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::warn!(node = %peer.node, %error, "cannot encode an RPC response");
            let fallback = RpcResponse {
                id,
                result: RpcResult::Err(RpcError::Internal {
                    message: format!("response not encodable: {error}"),
                }),
            };
            match encode_frame(&fallback) {
                Ok(frame) => frame,
                Err(_) => {
                    let _ = send.reset(STREAM_BAD_FRAME);
                    return;
                }
            }
        }
    };
    if send.write_all(&frame).await.is_ok() {
        peer.metrics.sent(&inner.stats, MessageClass::Rpc, 1, frame.len());
        let _ = send.finish();
    }
}
