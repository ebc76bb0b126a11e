//! bonsai-server end to end: starts the built binary twice on tiny-bonsai-dev (on the GPU engine,
//! lavapipe in CI) on 127.0.0.1, then runs tests/server/test_openai.py with the real `openai`
//! Python client from the venv tests/server/setup_venv.sh makes (target/server-venv).
//!
//! Without the venv the test fails under CI (`CI` set) and is skipped with a note elsewhere.

#![cfg(not(target_arch = "wasm32"))]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-bonsai-dev.gguf"
);
const MODEL_ID: &str = "tiny-bonsai-dev";
const KEY: &str = "test-key-5b1f";
/// How long a server may take to load the model and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The bounded load test: requests, clients, max_tokens, time box in seconds (small: lavapipe).
const LOAD: &str = "48,16,8,240";

/// A server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts bonsai-server with `args` on a free port; waits for its "listening on" line.
fn start(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bonsai-server"))
        .args(["--model", FIXTURE, "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bonsai-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads stderr to the end (a full pipe would block the server), passing lines on.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bonsai-server {args:?} did not start listening within {START_TIMEOUT:?}");
            }
        };
        if let Some(url) = line.split("listening on ").nth(1) {
            return Server {
                child,
                url: url.trim().to_string(),
            };
        }
    }
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BONSAI_SERVER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/server-venv"));
    venv.join("bin/python")
}

#[test]
fn openai_python_client_against_the_server() {
    let python = venv_python();
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: run tests/server/setup_venv.sh first",
            python.display()
        );
        eprintln!(
            "skipped: no {} (run tests/server/setup_venv.sh)",
            python.display()
        );
        return;
    }
    // The main server decodes its slots in one batched forward pass (what `--engine auto`
    // picks on GPUs; lavapipe would get a decode per slot), the small one per slot.
    let main = start(&[
        "--parallel",
        "16",
        "--ctx",
        "8192",
        "--api-key",
        KEY,
        "--engine",
        "batch",
    ]);
    let small = start(&["--parallel", "1", "--queue", "1", "--ctx", "512"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/server/test_openai.py");
    let status = Command::new(&python)
        .arg(script)
        .env("BONSAI_URL", &main.url)
        .env("BONSAI_KEY", KEY)
        .env("BONSAI_SMALL_URL", &small.url)
        .env("BONSAI_MODEL_ID", MODEL_ID)
        .env("BONSAI_LOAD", LOAD)
        .status()
        .expect("run the Python test");
    assert!(status.success(), "test_openai.py failed: {status}");
}
