//! A static file server for the browser test: std `TcpListener`, one thread per connection,
//! GET/HEAD with single byte ranges, and `POST /__report` to collect what the page reports.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

/// Largest report body accepted.
const MAX_REPORT_BYTES: usize = 1 << 20;

/// Serves `mounts` (URL prefix -> directory; longest prefix wins) on 127.0.0.1 until the process
/// ends.
pub struct StaticServer {
    pub port: u16,
    reports: Arc<Mutex<Vec<String>>>,
}

impl StaticServer {
    pub fn start(mounts: Vec<(String, PathBuf)>) -> std::io::Result<StaticServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let mut mounts = mounts;
        mounts.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let mounts = Arc::new(mounts);
        let server_reports = reports.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mounts = mounts.clone();
                let reports = server_reports.clone();
                thread::spawn(move || {
                    if let Err(e) = handle(stream, &mounts, &reports) {
                        eprintln!("[server] {e}");
                    }
                });
            }
        });
        Ok(StaticServer { port, reports })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Bodies POSTed to `/__report` so far.
    pub fn reports(&self) -> Vec<String> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nCache-Control: no-store\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `len` bytes.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && end < len).then_some((start, end))
}

fn resolve(mounts: &[(String, PathBuf)], url_path: &str) -> Option<PathBuf> {
    let (prefix, dir) = mounts
        .iter()
        .find(|(p, _)| url_path.starts_with(p.as_str()))?;
    let rest = &url_path[prefix.len()..];
    let rest = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_string()
    };
    let rel = Path::new(&rest);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(rel))
}

fn handle(
    stream: TcpStream,
    mounts: &[(String, PathBuf)],
    reports: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("/").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();

    if method == "POST" && path == "/__report" {
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_REPORT_BYTES {
            return respond(&mut stream, "413 Payload Too Large", &[], b"");
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Ok(mut r) = reports.lock() {
            r.push(text);
        }
        return respond(&mut stream, "204 No Content", &[], b"");
    }
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD, POST".into())],
            b"",
        );
    }
    let Some(file_path) = resolve(mounts, &path) else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let Ok(mut file) = File::open(&file_path) else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let len = file.metadata()?.len();
    let ty = mime(&file_path).to_string();
    let range = headers.get("range").map(|r| parse_range(r, len));
    let (status, start, end) = match range {
        None => ("200 OK", 0, len),
        Some(Some((a, b))) => ("206 Partial Content", a, b + 1),
        Some(None) => {
            return respond(
                &mut stream,
                "416 Range Not Satisfiable",
                &[("Content-Range", format!("bytes */{len}"))],
                b"",
            );
        }
    };
    let mut extra = vec![("Content-Type", ty), ("Accept-Ranges", "bytes".to_string())];
    if status.starts_with("206") {
        extra.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
    }
    let mut body = Vec::new();
    if method == "GET" {
        file.seek(SeekFrom::Start(start))?;
        file.take(end - start).read_to_end(&mut body)?;
        respond(&mut stream, status, &extra, &body)
    } else {
        let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in &extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", end - start));
        stream.write_all(head.as_bytes())
    }
}
