//! A real PostgreSQL for tests: `initdb` and `postgres` from
//! `pg_config --bindir`, run as the `postgres` user (it refuses root) on a
//! temporary directory, a free port and a socket directory of its own.
//!
//! The server runs under a small shell watchdog that stops it when the test
//! process is gone, so a panicking or killed test binary leaves nothing
//! running. `scripts/test.sh` installs Debian's `postgresql` when missing.
#![allow(dead_code)] // Each test binary uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser's password on every test cluster.
pub const PASSWORD: &str = "wagate-test";

pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    watchdog: Child,
    killed: bool,
}

pub fn bindir() -> PathBuf {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("pg_config not found: install Debian's postgresql (scripts/test.sh does)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

impl Postgres {
    /// A fresh cluster, started and accepting connections.
    pub fn start() -> Postgres {
        Self::start_with(&[])
    }

    /// A fresh cluster with extra `-c name=value` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let (dir, data) = init();
        Self::run(dir, data, settings)
    }

    /// A fresh cluster that takes TCP connections over TLS only (every
    /// `host` line of pg_hba.conf becomes `hostssl`), presenting the
    /// certificate `cert_pem` with the key `key_pem`.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        let (dir, data) = init();
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        let key = data.join("server.key");
        std::fs::write(&key, key_pem).unwrap();
        // PostgreSQL refuses a key others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hba = data.join("pg_hba.conf");
        let rules: String = std::fs::read_to_string(&hba)
            .unwrap()
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&hba, rules).unwrap();
        chown_to_postgres(&data);
        Self::run(dir, data, &["ssl=on"])
    }

    /// Starts `postgres` on an existing data directory (a fresh cluster or
    /// a base backup of another).
    fn run(dir: tempfile::TempDir, data: PathBuf, settings: &[&str]) -> Postgres {
        let port = free_port();
        let watchdog = watchdog(dir.path(), &data, port, settings);
        let server = Postgres {
            dir,
            port,
            watchdog,
            killed: false,
        };
        server.wait_ready();
        server
    }

    /// Stops the server cleanly (a fast shutdown), keeping its data.
    pub fn stop(&mut self) {
        let stopped = as_postgres(&bindir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "fast", "-s", "-w"])
            .status()
            .unwrap();
        assert!(stopped.success(), "pg_ctl stop failed:\n{}", self.log());
        let _ = self.watchdog.wait();
    }

    /// Starts a stopped server again on the same data and port.
    pub fn start_again(&mut self) {
        self.watchdog = watchdog(self.dir.path(), &self.data_dir(), self.port, &[]);
        self.wait_ready();
    }

    /// A streaming standby of `primary`, named `name` (its
    /// `application_name`, for `synchronous_standby_names`): a base backup
    /// with `pg_basebackup -R`, started on a port of its own.
    pub fn standby_of(primary: &Postgres, name: &str) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("wagate-pg")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("sock")).unwrap();
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let backup = as_postgres(&bindir().join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            backup.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&backup.stderr)
        );
        // -R wrote primary_conninfo; name the standby and give it the password.
        let conninfo = format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres password={PASSWORD} \
             application_name={name}'\n",
            primary.port
        );
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&conninfo);
        std::fs::write(&auto, conf).unwrap();
        chown_to_postgres(&data);
        Self::run(dir, data, &[])
    }

    /// Promotes a standby to primary and waits until it takes writes.
    pub fn promote(&self) {
        let promoted = as_postgres(&bindir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["promote", "-w", "-s"])
            .status()
            .unwrap();
        assert!(promoted.success(), "pg_ctl promote failed:\n{}", self.log());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "the standby did not leave recovery"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bindir().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A key=value connection string for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname={database}",
            self.port
        )
    }

    /// Runs SQL through psql as the superuser; panics with its error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(bindir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-tAq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// How many tables `database` has in its public schema, as psql prints
    /// it: "0" where nothing was created.
    pub fn public_tables(&self, database: &str) -> String {
        self.psql(
            database,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        )
    }

    /// A new, empty database on this server; returns its name.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("wagate_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Stops the server at once, as a crash would (SIGKILL of the
    /// postmaster and every backend).
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned));
        if let Some(pid) = pid {
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = self.watchdog.wait();
        self.killed = true;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let _ = as_postgres(&bindir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate", "-s"])
            .status();
        let _ = self.watchdog.wait();
    }
}

/// A new cluster's data directory (initdb as `postgres`), not started.
fn init() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("wagate-pg")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(dir.path().join("sock")).unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    chown_to_postgres(dir.path());
    let initdb = as_postgres(&bindir().join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
        // Passwords over TCP, as in production; trust on the socket.
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display()))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    (dir, data)
}

/// Runs `postgres` on `data` under a shell that stops it once the test
/// process is gone (a root process cannot be signalled by this user, so
/// /proc is asked instead) and then removes its files: a shared server is
/// never dropped.
fn watchdog(dir: &Path, data: &Path, port: u16, settings: &[&str]) -> Child {
    let mut args = format!(
        "-D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
        data.display(),
        dir.join("sock").display()
    );
    for setting in settings {
        args.push_str(&format!(" -c {setting}"));
    }
    let script = format!(
        "{} {args} >>{} 2>&1 & pg=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.2; done; \
         kill -INT $pg 2>/dev/null; wait $pg; \
         [ -d /proc/{parent} ] || rm -rf {dir}",
        bindir().join("postgres").display(),
        dir.join("postgres.log").display(),
        parent = std::process::id(),
        dir = dir.display()
    );
    Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// One server for the whole test binary; each test takes its own database.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::start)
}
