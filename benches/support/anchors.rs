//! Anchors for durable writes, measured in the same run as wagate: Redis
//! with `appendfsync always` (it answers only after `fsync`) doing the work
//! of RecordInbound and SendMessage in Lua, plain SET, and the disk's own
//! synced-write rate.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// RecordInbound's work: remember the inbound id for 7 days (SET NX), raise
/// the window's expiry to the max, index it by expiry (ZADD).
const INBOUND_LUA: &str = "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 604800) then \
     local expires = tonumber(ARGV[1]) \
     if expires > tonumber(redis.call('GET', KEYS[2]) or '0') then \
       redis.call('SET', KEYS[2], expires) \
       redis.call('ZADD', KEYS[3], expires, KEYS[2]) \
     end \
   end \
   return 1";

/// SendMessage's work: claim the idempotency key (SET NX), store the
/// outbox record (HSET), queue its delivery (ZADD).
const SEND_LUA: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 86400) then \
     redis.call('HSET', KEYS[2], 'to', ARGV[2], 'body', ARGV[3], 'status', 'accepted') \
     redis.call('ZADD', KEYS[3], ARGV[4], KEYS[2]) \
   end \
   return 1";

/// What Redis is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum RedisWork {
    Set,
    Inbound,
    Send,
}

pub struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` on a temp dir with every write fsynced before
    /// its reply; `None` when it is not installed.
    pub fn start() -> Option<Redis> {
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    /// Requests per second `redis-benchmark` reaches with `clients`
    /// connections, each call a new key.
    pub fn rate(&self, work: RedisWork, clients: usize) -> Option<f64> {
        // About as many seconds of work as wagate's runs.
        let requests = match clients {
            1 => 15_000,
            c if c <= 16 => 60_000,
            _ => 120_000,
        };
        let mut command = Command::new("redis-benchmark");
        command
            .args(["-p", &self.port.to_string(), "-c", &clients.to_string()])
            .args(["-n", &requests.to_string(), "-r", "100000000000", "--csv"]);
        let expires = "1900000000";
        match work {
            RedisWork::Set => command.args(["-t", "set"]),
            RedisWork::Inbound => command.args([
                "eval",
                INBOUND_LUA,
                "3",
                "inbound:__rand_int__",
                "window:__rand_int__",
                "window_expiry",
                expires,
            ]),
            RedisWork::Send => command.args([
                "eval",
                SEND_LUA,
                "3",
                "idempotency:__rand_int__",
                "outbox:__rand_int__",
                "delivery_queue",
                "fingerprint",
                "+27821234567",
                "Hi! Your order is on its way.",
                expires,
            ]),
        };
        let output = command.stderr(Stdio::null()).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        // `"test","rps",` and six latency columns. A script's test name
        // holds commas, so count from the end.
        let row = text.lines().nth(1)?;
        row.rsplit(',')
            .nth(6)?
            .trim_matches('"')
            .parse::<f64>()
            .ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Synced 4 KiB writes per second from one thread (`O_DSYNC`), appending to
/// a new file (`grow`) or overwriting one already written (what wagate's
/// log segments do).
pub fn dsync_writes_per_second(dir: &Path, grow: bool, run: Duration) -> f64 {
    let path = dir.join(if grow {
        "dsync-grow"
    } else {
        "dsync-overwrite"
    });
    let block = [0x5a_u8; 4096];
    if !grow {
        let mut file = std::fs::File::create(&path).unwrap();
        for _ in 0..(64 << 20) / block.len() {
            file.write_all(&block).unwrap();
        }
        file.sync_all().unwrap();
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(grow)
        .custom_flags(O_DSYNC)
        .open(&path)
        .unwrap();
    let started = Instant::now();
    let mut writes = 0u64;
    while started.elapsed() < run {
        if !grow && writes.is_multiple_of((64 << 20) / 4096) {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0)).unwrap();
        }
        file.write_all(&block).unwrap();
        writes += 1;
    }
    let _ = std::fs::remove_file(&path);
    writes as f64 / started.elapsed().as_secs_f64()
}

/// Linux's `O_DSYNC`.
const O_DSYNC: i32 = 0o10000;
