//! Crash safety (SPEC §7): writers go as fast as they can while the server is
//! killed with SIGKILL at random moments; after every restart each write the
//! server acknowledged must be there, and the store must open cleanly.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const ROUNDS: usize = 5;
const WRITERS: usize = 32;

/// xorshift64*: enough randomness to vary the kill moment, and reproducible
/// from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

async fn write_until_killed(
    server: &Server,
    round: usize,
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gateway = server.gateway().await;
    (0..WRITERS)
        .map(|writer| {
            let mut gateway = gateway.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    // NANP area codes start 2-9: a number libphonenumber accepts.
                    let customer = format!("+1{}{writer:03}{n:06}", round + 2);
                    let key = format!("crash-{round}-{writer}-{n}");
                    let Ok(recorded) = gateway.record_inbound(inbound(&customer, &key)).await
                    else {
                        return;
                    };
                    let window = recorded.into_inner().window.unwrap();
                    let Ok(sent) = gateway
                        .send_message(text(&customer, &key, STILL_THERE))
                        .await
                    else {
                        return;
                    };
                    acknowledged.lock().unwrap().push(Acknowledged {
                        customer,
                        last_inbound_at: window.last_inbound_at,
                        key,
                        message_id: sent.into_inner().message_id,
                    });
                }
            })
        })
        .collect()
}

/// Checks every acknowledged write; returns how many were lost.
async fn lost(server: &Server, acknowledged: &[Acknowledged]) -> usize {
    let gateway = server.gateway().await;
    let chunks: Vec<Vec<Acknowledged>> = acknowledged
        .chunks(acknowledged.len().div_ceil(WRITERS).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let checks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let mut gateway = gateway.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                for write in chunk {
                    if !still_there(&mut gateway, &write).await {
                        lost += 1;
                    }
                }
                lost
            })
        })
        .collect();
    let mut total = 0;
    for check in checks {
        total += check.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_sigkill() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let mut server = Server::start();
    let mut all: Vec<Acknowledged> = Vec::new();
    for round in 0..ROUNDS {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        // A new process compiles a country's number patterns on its first
        // number (+1 here, ~150 ms in a test build): one read first, so the
        // random kill window below is spent on writes, not on that.
        server
            .gateway()
            .await
            .get_window(pb::GetWindowRequest {
                business_number: BUSINESS.into(),
                customer_number: "+12000000000".into(),
            })
            .await
            .unwrap();
        let writers = write_until_killed(&server, round, acknowledged.clone()).await;
        // The kill timer starts at the first acknowledged write: a slow host
        // (a debug build, a disk taking ~1 ms a sync) can take longer than
        // the shortest timer to acknowledge one, which left a round empty.
        let first = async {
            while acknowledged.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), first)
            .await
            .unwrap_or_else(|_| panic!("round {round} acknowledged nothing in 30 s"));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(600))).await;
        // SIGKILL mid-stream, then a restart that must open the store cleanly.
        server.crash_and_restart();
        for writer in writers {
            writer.await.unwrap();
        }
        all.extend(acknowledged.lock().unwrap().clone());
        let lost = lost(&server, &all).await;
        eprintln!(
            "crash round {round}: {} acknowledged writes so far, {lost} lost (seed {seed})",
            all.len()
        );
        assert_eq!(
            lost, 0,
            "acknowledged writes lost after SIGKILL (seed {seed})"
        );
    }
    eprintln!(
        "crash test: N = {} acknowledged inbound+send pairs over {ROUNDS} SIGKILLs, 0 lost",
        all.len()
    );
}
