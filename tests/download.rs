//! bonsai-chat's Hub download against a local HTTP server that speaks the Hub's resolve
//! protocol (HEAD -> 302 with x-repo-commit / x-linked-etag / x-linked-size, GET with Range):
//! success and offline reuse, an interrupted body then a resumed retry, corrupt bodies rejected
//! with nothing left in the cache.

#[allow(dead_code)]
#[path = "../src/bin/bonsai-chat/hub.rs"]
mod hub;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

const REPO: &str = "test-org/Tiny-gguf";
const FILE: &str = "tiny-Q1_0.gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Environment variables are process-wide: tests that set them take turns.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// How the server misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The first GET announces the full length but closes after this many bytes.
    CutFirstGetAt(usize),
    /// Every GET flips a byte in the middle.
    FlipByte,
    /// The HEAD announces this many bytes fewer than the body has.
    AnnounceShorter(u64),
}

struct Server {
    endpoint: String,
    requests: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

fn body() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn serve(fault: Fault) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (req_count, range_log) = (requests.clone(), ranges.clone());
    std::thread::spawn(move || {
        let body = body();
        let sha = sha256_hex(&body);
        let mut gets = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            req_count.fetch_add(1, Ordering::SeqCst);
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let resolve = format!("/{REPO}/resolve/main/{FILE}");
            let response: Vec<u8> = if method == "HEAD" && path == resolve {
                let size = match fault {
                    Fault::AnnounceShorter(n) => body.len() as u64 - n,
                    _ => body.len() as u64,
                };
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: /cdn/blob\r\nx-repo-commit: {COMMIT}\r\n\
                     x-linked-etag: \"{sha}\"\r\nx-linked-size: {size}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                )
                .into_bytes()
            } else if method == "GET" && path == "/cdn/blob" {
                gets += 1;
                range_log
                    .lock()
                    .unwrap()
                    .push(range.map(|r| format!("bytes={r}-")));
                let mut data = body.clone();
                if fault == Fault::FlipByte {
                    data[body.len() / 2] ^= 0xff;
                }
                let start = range.unwrap_or(0).min(data.len());
                let status = if range.is_some() {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let mut out = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n\
                     Connection: close\r\n\r\n",
                    data.len() - start,
                    data.len() - 1,
                    data.len()
                )
                .into_bytes();
                let mut payload = &data[start..];
                if let Fault::CutFirstGetAt(n) = fault {
                    if gets == 1 {
                        payload = &payload[..n];
                    }
                }
                out.extend_from_slice(payload);
                out
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = stream.write_all(&response);
            let _ = stream.flush();
        }
    });
    Server {
        endpoint,
        requests,
        ranges,
    }
}

/// Points HF_HOME at a fresh temp folder and HF_ENDPOINT at `endpoint`.
fn env(name: &str, endpoint: &str) -> (MutexGuard<'static, ()>, PathBuf) {
    let guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let home = std::env::temp_dir().join(format!("bonsai-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    // SAFETY: ENV_LOCK serialises every test in this binary that touches the environment.
    unsafe {
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_ENDPOINT", endpoint);
        std::env::remove_var("HF_HUB_CACHE");
        std::env::remove_var("HF_HUB_OFFLINE");
    }
    (guard, home)
}

fn blob_dir(home: &std::path::Path) -> PathBuf {
    home.join("hub/models--test-org--Tiny-gguf/blobs")
}

fn no_progress() -> impl FnMut(u64, Option<u64>) {
    |_, _| {}
}

#[test]
fn downloads_once_then_reuses_cache_offline() {
    let server = serve(Fault::None);
    let (_guard, home) = env("ok", &server.endpoint);
    let f = hub::HubFile::new(REPO, FILE);
    let mut last = (0, None);
    let path = hub::fetch(&f, &mut |done, total| last = (done, total)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body());
    assert_eq!(last, (body().len() as u64, Some(body().len() as u64)));
    assert_eq!(server.requests.load(Ordering::SeqCst), 2, "HEAD + GET");
    let repo = home.join("hub/models--test-org--Tiny-gguf");
    assert_eq!(path, repo.join("snapshots").join(COMMIT).join(FILE));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(blob_dir(&home).join(sha256_hex(&body())).is_file());

    // Second run: no request at all, even with the endpoint unreachable.
    // SAFETY: ENV_LOCK is held.
    unsafe { std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9") };
    let again = hub::fetch(&f, &mut no_progress()).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn interrupted_download_errors_then_resumes() {
    let cut = 100_000;
    let server = serve(Fault::CutFirstGetAt(cut));
    let (_guard, home) = env("cut", &server.endpoint);
    let f = hub::HubFile::new(REPO, FILE);
    let err = hub::fetch(&f, &mut no_progress()).unwrap_err().to_string();
    assert!(err.contains("run again to resume"), "{err}");
    assert!(f.cached().is_none());
    let part = blob_dir(&home).join(format!("{}.incomplete", sha256_hex(&body())));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);

    let path = hub::fetch(&f, &mut no_progress()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body());
    assert!(!part.exists());
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={cut}-"))],
        "second GET resumes"
    );
    let _ = std::fs::remove_dir_all(home);
}

fn assert_rejected(fault: Fault, name: &str, want_in_error: &str) {
    let server = serve(fault);
    let (_guard, home) = env(name, &server.endpoint);
    let f = hub::HubFile::new(REPO, FILE);
    let err = hub::fetch(&f, &mut no_progress()).unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains(want_in_error),
        "{err}"
    );
    assert!(f.cached().is_none());
    let left: Vec<_> = std::fs::read_dir(blob_dir(&home)).unwrap().collect();
    assert!(left.is_empty(), "blobs left behind: {left:?}");
    assert!(
        !home
            .join("hub/models--test-org--Tiny-gguf/snapshots")
            .exists()
    );
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn wrong_sha256_is_rejected_and_cleaned_up() {
    assert_rejected(Fault::FlipByte, "sha", "sha256");
}

#[test]
fn wrong_size_is_rejected_and_cleaned_up() {
    assert_rejected(Fault::AnnounceShorter(10), "size", "bytes");
}

#[test]
fn missing_file_is_a_clear_error() {
    let server = serve(Fault::None);
    let (_guard, home) = env("404", &server.endpoint);
    let f = hub::HubFile::new(REPO, "nope.gguf");
    let err = hub::fetch(&f, &mut no_progress()).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("nope.gguf"), "{err}");
    let _ = std::fs::remove_dir_all(home);
}
