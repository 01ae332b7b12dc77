//! Calls cancelled part way (a client that gave up, a deadline that
//! passed), run by `main.rs` on every backend: each stores all of its
//! writes or none, and the store goes on serving with what it kept.
//! PostgreSQL sends BEGIN and COMMIT with a use case's statements, so a
//! cancelled call can leave a connection inside a transaction: it must not
//! go back to the pool like that.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use wagate::domain::{
    Content, EntryPoint, IdempotencyKey, Inbound, InboundKind, InboundMessageId, InboundOutcome,
    Pair, PhoneNumber, SendRequest,
};
use wagate::store::SendOutcome;

use crate::cases::Harness;

const CALLS: u64 = 48;

fn pair(i: u64) -> Pair {
    Pair {
        business: PhoneNumber::parse("+15550001111").unwrap(),
        customer: PhoneNumber::parse(&format!("+2782{:07}", 1_000_000 + i)).unwrap(),
    }
}

fn inbound() -> Inbound {
    Inbound {
        received_at: Utc::now(),
        kind: InboundKind::Message,
        entry_point: EntryPoint::Organic,
    }
}

fn inbound_id(i: u64) -> InboundMessageId {
    InboundMessageId::parse(&format!("cancelled-{i}")).unwrap()
}

fn request(i: u64) -> SendRequest {
    SendRequest {
        pair: pair(i),
        idempotency_key: IdempotencyKey::parse(&format!("cancelled-{i}")).unwrap(),
        content: Content::text("hello").unwrap(),
    }
}

/// Gives a call `micros` of time, then drops it wherever it is; whether
/// it finished first.
async fn finished_within<T>(micros: u64, call: impl Future<Output = T>) -> bool {
    tokio::time::timeout(Duration::from_micros(micros), call)
        .await
        .is_ok()
}

pub async fn cancelled_calls_store_all_or_nothing_and_the_store_keeps_serving(h: &dyn Harness) {
    let store = h.open().await;
    // Cancel every call at a different point, from before its first
    // statement to after its COMMIT: 1 µs to 36 ms, each 1.25× the last.
    let offered: Vec<Uuid> = (0..CALLS).map(|_| Uuid::now_v7()).collect();
    let mut inbound_finished = vec![false; CALLS as usize];
    let mut send_finished = vec![false; CALLS as usize];
    for i in 0..CALLS {
        let micros = 1.25f64.powi(i as i32) as u64;
        inbound_finished[i as usize] = finished_within(
            micros,
            store.record_inbound(&pair(i), &inbound_id(i), &inbound(), Utc::now()),
        )
        .await;
        // A send needs the window: open it for the odd ones whose inbound
        // was cancelled before it was stored.
        if i % 2 == 1 && store.window(&pair(i)).await.unwrap().is_none() {
            let id = InboundMessageId::parse(&format!("opener-{i}")).unwrap();
            store
                .record_inbound(&pair(i), &id, &inbound(), Utc::now())
                .await
                .unwrap();
        }
        if i % 2 == 1 {
            send_finished[i as usize] = finished_within(
                micros,
                store.send(&request(i), offered[i as usize], Utc::now(), false),
            )
            .await;
        }
    }

    let mut inbounds_kept = 0;
    let mut sends_kept = 0;
    for i in 0..CALLS {
        // The inbound: its id is remembered exactly when its window exists.
        let window = store.window(&pair(i)).await.unwrap();
        let (again, _) = store
            .record_inbound(&pair(i), &inbound_id(i), &inbound(), Utc::now())
            .await
            .unwrap();
        assert!(
            again == InboundOutcome::Duplicate || !inbound_finished[i as usize],
            "call {i}: a finished inbound was not kept"
        );
        if again == InboundOutcome::Duplicate {
            inbounds_kept += 1;
            assert!(
                window.is_some(),
                "call {i}: inbound id kept without its window"
            );
        } else if i % 2 == 0 {
            assert!(
                window.is_none(),
                "call {i}: window kept without its inbound id"
            );
        }
        if i % 2 == 0 {
            continue;
        }
        // The send: the message, its delivery and its key, or none of them.
        let state = store.message(offered[i as usize]).await.unwrap();
        let retry = store
            .send(&request(i), Uuid::now_v7(), Utc::now(), false)
            .await
            .unwrap();
        match state {
            Some(state) => {
                sends_kept += 1;
                assert!(
                    state.delivery.is_some(),
                    "call {i}: message kept without its delivery"
                );
                assert!(
                    matches!(&retry, SendOutcome::Replayed(m) if m.message_id == offered[i as usize]),
                    "call {i}: message kept without its idempotency key"
                );
            }
            None => {
                assert!(
                    !send_finished[i as usize],
                    "call {i}: a finished send was not kept"
                );
                assert!(
                    matches!(retry, SendOutcome::Accepted(_)),
                    "call {i}: idempotency key kept without its message"
                );
            }
        }
    }
    assert!(
        inbounds_kept > 0,
        "no inbound finished before its cancellation"
    );
    assert!(sends_kept > 0, "no send finished before its cancellation");
    if h.calls_can_be_cancelled_part_way() {
        assert!(
            inbounds_kept < CALLS,
            "every inbound finished: none was cancelled"
        );
        assert!(
            sends_kept < CALLS / 2,
            "every send finished: none was cancelled"
        );
    }

    // Still serving, and a write is seen by the next read on any connection.
    for i in CALLS..CALLS + 16 {
        let (outcome, _) = store
            .record_inbound(&pair(i), &inbound_id(i), &inbound(), Utc::now())
            .await
            .unwrap();
        assert_eq!(outcome, InboundOutcome::Opened, "call {i}");
        assert!(store.window(&pair(i)).await.unwrap().is_some(), "call {i}");
    }
}
