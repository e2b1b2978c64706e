//! A hostile service: a raw HTTP/1.1 server on 127.0.0.1 whose answers a test decides
//! byte by byte, so it can do what no well-behaved framework lets a handler do: reset the
//! connection mid-body, never answer, send an endless body, lie about a body's length.
//!
//! Every request is recorded (method, target, headers) before it is answered, and every
//! connection closes after one exchange, so a test can count exactly what reached it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the hostile service read it.
#[derive(Debug, Clone)]
pub struct HostileRequest {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub raw_query: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// The whole request head as received (for secret searches).
    pub head: String,
}

impl HostileRequest {
    /// A query parameter.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the service does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response: status, extra headers, body (with its true length).
    Full {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// A 200 declaring `declared` bytes but sending only `body`, then closing: truncated.
    Truncated {
        /// Declared length.
        declared: usize,
        /// What is sent.
        body: Vec<u8>,
    },
    /// The head and the start of a body, then a reset connection.
    Reset {
        /// Bytes of body sent before the reset.
        body: Vec<u8>,
    },
    /// Nothing at all for this long, then the connection closes.
    Hang(Duration),
    /// The reply, after a pause (a slow service).
    Delayed(Duration, Box<Reply>),
    /// A 200 whose body never ends: `chunk` repeated until the client goes away (bytes
    /// sent are counted in [`HostileService::endless_bytes`]). With `pause`, one chunk per
    /// pause (a trickle); without, as fast as the client reads.
    Endless {
        /// The start of the body.
        prefix: Vec<u8>,
        /// What is repeated.
        chunk: Vec<u8>,
        /// Between chunks.
        pause: Option<Duration>,
    },
}

impl Reply {
    /// A JSON response.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A response with a status, headers and a text body.
    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply::Full {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = Arc<dyn Fn(&HostileRequest) -> Reply + Send + Sync>;

/// A running hostile service.
pub struct HostileService {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Address.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<HostileRequest>>>,
    endless: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileService {
    /// Serves `handler` on a free loopback port.
    pub async fn start(handler: impl Fn(&HostileRequest) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<HostileRequest>>> = Arc::default();
        let endless: Arc<AtomicU64> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let task = {
            let (log, endless) = (log.clone(), endless.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (log, endless, handler) = (log.clone(), endless.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, &log, &endless, &handler).await;
                    });
                }
            })
        };
        HostileService {
            base: format!("http://{addr}"),
            addr,
            log,
            endless,
            task,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HostileRequest> {
        self.log.lock().unwrap().clone()
    }

    /// Bytes of endless bodies written so far.
    pub fn endless_bytes(&self) -> u64 {
        self.endless.load(Ordering::SeqCst)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(
    mut stream: TcpStream,
    log: &Mutex<Vec<HostileRequest>>,
    endless: &AtomicU64,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let request = HostileRequest {
        method,
        path,
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        headers,
        head: text,
    };
    log.lock().unwrap().push(request.clone());
    let mut reply = handler(&request);
    while let Reply::Delayed(pause, inner) = reply {
        tokio::time::sleep(pause).await;
        reply = *inner;
    }
    match reply {
        Reply::Delayed(..) => unreachable!("unwrapped above"),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await?;
        }
        Reply::Truncated { declared, body } => {
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await?;
        }
        Reply::Reset { body } => {
            let out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n";
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            // Linger zero: closing sends a TCP reset instead of a clean end (it cannot
            // block: there is nothing to wait for with a zero timeout).
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO))?;
            drop(stream);
        }
        Reply::Hang(duration) => {
            tokio::time::sleep(duration).await;
        }
        Reply::Endless {
            prefix,
            chunk,
            pause,
        } => {
            let out =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&prefix).await?;
            loop {
                stream.write_all(&chunk).await?;
                endless.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    Ok(())
}
