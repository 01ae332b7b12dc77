//! Accepting connections without being taken down by them: a cap on open
//! connections (each refusal logged and counted), and a handshake deadline
//! that closes a connection which has not finished its TLS handshake and
//! sent the HTTP/2 preface in time. Without it, a thousand idle sockets
//! exhaust the file descriptors and nobody can connect.
//!
//! The accept loop never gives up on an error (out of descriptors, say): it
//! logs, waits a moment and accepts again, so the server stays reachable
//! once descriptors are free.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::telemetry;

/// HTTP/2's client connection preface plus the header of the SETTINGS
/// frame that must follow it: a client that sent these has done its part
/// of the handshake.
const HANDSHAKE_BYTES: usize = 24 + 9;

/// After an accept error, how long the loop waits before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a listener enforces on its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// How long a new connection has to finish its handshake.
    pub handshake_timeout: Duration,
}

/// Open connections of one listener, and how its refusals are logged.
struct Gate {
    listener: &'static str,
    open: AtomicUsize,
    limits: ConnectionLimits,
    /// Seconds since the epoch of the last refusal logged: one line a
    /// second at most while a flood lasts.
    last_logged: AtomicU64,
}

impl Gate {
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "listener" => self.listener)
                .increment(1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_secs());
            if self.last_logged.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    listener = self.listener,
                    max_connections = self.limits.max_connections,
                    "too many open connections: closing new ones"
                );
            }
            return None;
        }
        metrics::gauge!(telemetry::OPEN_CONNECTIONS, "listener" => self.listener).increment(1.0);
        Some(Slot { gate: self.clone() })
    }
}

/// One admitted connection's place under the cap; freed when dropped.
struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(telemetry::OPEN_CONNECTIONS, "listener" => self.gate.listener)
            .decrement(1.0);
    }
}

/// A listener that admits connections under its cap, and retries accept
/// errors rather than failing.
pub struct Gatekeeper {
    listener: TcpListener,
    gate: Arc<Gate>,
}

/// An admitted TCP connection, its addresses and its place under the cap.
pub struct Admitted {
    pub tcp: TcpStream,
    pub info: TcpConnectInfo,
    slot: Slot,
}

impl Gatekeeper {
    /// `name` labels the connection metrics (`grpc`, `webhook`).
    pub fn new(listener: TcpListener, name: &'static str, limits: ConnectionLimits) -> Self {
        Gatekeeper {
            listener,
            gate: Arc::new(Gate {
                listener: name,
                open: AtomicUsize::new(0),
                limits,
                last_logged: AtomicU64::new(0),
            }),
        }
    }

    /// The next connection under the cap; those over it are closed here.
    pub async fn accept(&self) -> Admitted {
        loop {
            let (tcp, remote) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        listener = self.gate.listener,
                        "cannot accept a connection; retrying"
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(slot) = self.gate.admit() else {
                continue;
            };
            // Without TCP_NODELAY, small frames wait on Nagle and delayed
            // ACKs: ~40 ms stalls at moderate concurrency.
            let _ = tcp.set_nodelay(true);
            let info = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(remote),
            };
            return Admitted { tcp, info, slot };
        }
    }
}

/// Accepts for the gRPC server: TLS (when `tls` is given) and the HTTP/2
/// preface must be done within the handshake timeout, and at most
/// `max_connections` are open. The stream ends, and the listener closes,
/// when the receiving side is dropped.
pub fn grpc_incoming(
    gatekeeper: Gatekeeper,
    tls: Option<TlsAcceptor>,
) -> impl tokio_stream::Stream<Item = io::Result<Guarded>> {
    let handshake_timeout = gatekeeper.gate.limits.handshake_timeout;
    // Room for a burst of accepted connections while the server takes them.
    let (ready, incoming) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let admitted = tokio::select! {
                admitted = gatekeeper.accept() => admitted,
                () = ready.closed() => return,
            };
            let deadline = Instant::now() + handshake_timeout;
            let Admitted { tcp, info, slot } = admitted;
            let Some(tls) = &tls else {
                let conn = Guarded::new(Conn::Plain(tcp), deadline, info, slot);
                if ready.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tls, ready) = (tls.clone(), ready.clone());
            tokio::spawn(async move {
                let remote = info.remote_addr;
                match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = Guarded::new(Conn::Tls(Box::new(stream)), deadline, info, slot);
                        let _ = ready.send(Ok(conn)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, ?remote, "TLS handshake failed"),
                    Err(_) => tracing::debug!(?remote, "TLS handshake not finished in time"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// Serves `app` over HTTP/1 on the gatekeeper's connections: a request head
/// must arrive within the handshake timeout (an idle keep-alive connection
/// is closed after it too), and at most `max_connections` are open.
pub async fn serve_http1(gatekeeper: Gatekeeper, app: axum::Router) -> io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(gatekeeper.gate.limits.handshake_timeout);
    loop {
        let Admitted { tcp, info, slot } = gatekeeper.accept().await;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, remote = ?info.remote_addr, "webhook connection ended");
            }
            drop(slot);
        });
    }
}

/// A connection's transport.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection that is closed (reads and writes fail) if its
/// handshake is not done by its deadline.
pub struct Guarded {
    conn: Conn,
    /// Until the handshake is done.
    deadline: Option<Pin<Box<Sleep>>>,
    handshake_read: usize,
    info: TcpConnectInfo,
    _slot: Slot,
}

impl Guarded {
    fn new(conn: Conn, deadline: Instant, info: TcpConnectInfo, slot: Slot) -> Guarded {
        Guarded {
            conn,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            handshake_read: 0,
            info,
            _slot: slot,
        }
    }

    /// Err once the deadline has passed with the handshake unfinished.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let expired = self
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if expired {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection did not finish its handshake in time",
            ));
        }
        Ok(())
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        let before = buf.filled().len();
        let this = &mut *self;
        match &mut this.conn {
            Conn::Plain(tcp) => ready!(Pin::new(tcp).poll_read(cx, buf))?,
            Conn::Tls(tls) => ready!(Pin::new(tls.as_mut()).poll_read(cx, buf))?,
        }
        if this.deadline.is_some() {
            this.handshake_read += buf.filled().len() - before;
            if this.handshake_read >= HANDSHAKE_BYTES {
                this.deadline = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        match &mut self.conn {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn {
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn {
            Conn::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        match &mut self.conn {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.conn {
            Conn::Plain(tcp) => tcp.is_write_vectored(),
            Conn::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (a
/// server with the common 1,024 runs out long before the machine does),
/// logs both, and returns the limit now in force (`None`: unlimited).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open files limit");
            limit.current
        }
    };
    tracing::info!(
        soft = soft.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        hard = limit
            .maximum
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        was = limit
            .current
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        "open files limit"
    );
    soft
}

/// The rustls configuration tonic would build from PEM files: the server's
/// certificate chain and key, HTTP/2 by ALPN, and, with a client CA, client
/// certificates required and checked against it.
pub fn tls_acceptor(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<TlsAcceptor, crate::server::BoxError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the TLS certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot read the TLS private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots.add(cert.map_err(|e| format!("cannot read the client CA: {e}"))?)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
