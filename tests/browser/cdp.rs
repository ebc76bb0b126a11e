//! Drives headless Chromium over the Chrome DevTools Protocol on `--remote-debugging-pipe`
//! (fd 3 = commands in, fd 4 = replies out, NUL-terminated JSON): no WebSocket, no Node.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Flags that make headless Chromium expose WebGPU on SwiftShader (Vulkan on the CPU) and keep
/// it from phoning home. One list for both browser tests: the wasm-bindgen-test runner reads the
/// same file as its WebDriver capabilities.
pub fn chromium_flags() -> Vec<String> {
    let caps: Value = serde_json::from_str(include_str!("webdriver.json")).expect("webdriver.json");
    let args = caps["goog:chromeOptions"]["args"].as_array().expect("args");
    let mut flags: Vec<String> = args
        .iter()
        .map(|a| a.as_str().expect("string flag").to_string())
        .collect();
    flags.push("--window-size=1200,900".into());
    flags
}

pub struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    _profile: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates `fd` to a descriptor >= 10 (close-on-exec), so that placing it at 3 or 4 in the
/// child cannot clobber the other end.
fn dup_high(fd: &OwnedFd) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        bail!(
            "fcntl(F_DUPFD_CLOEXEC): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `new` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

impl Browser {
    /// Starts `exe` headless with a fresh profile; its stderr goes to `log`.
    pub fn launch(exe: &Path, log: &Path) -> Result<Browser> {
        use std::os::fd::AsRawFd;
        let profile = std::env::temp_dir().join(format!(
            "bonsai-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&profile)?;
        let profile = TempDir(profile);
        let (cmd_read, cmd_write) = pipe()?; // browser reads commands from fd 3
        let (out_read, out_write) = pipe()?; // browser writes replies to fd 4
        let child_in = dup_high(&cmd_read)?;
        let child_out = dup_high(&out_write)?;
        let (child_in_fd, child_out_fd) = (child_in.as_raw_fd(), child_out.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args(chromium_flags())
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        // SAFETY: only dup2 (async-signal-safe) runs between fork and exec; dup2 clears
        // close-on-exec on the new descriptors 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(child_in_fd, 3) < 0 || libc::dup2(child_out_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        drop((cmd_read, out_write, child_in, child_out));

        let (tx, rx) = channel();
        let mut reader = std::fs::File::from(out_read);
        thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Browser {
            child,
            to_browser: std::fs::File::from(cmd_write),
            from_browser: rx,
            next_id: 0,
            _profile: profile,
        })
    }

    /// Sends a command (to a page when `session` is set) and waits for its reply.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .with_context(|| format!("sending {method}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(v) if v.get("id").and_then(Value::as_u64) == Some(id) => {
                    if let Some(err) = v.get("error") {
                        bail!("{method}: {err}");
                    }
                    return Ok(v.get("result").cloned().unwrap_or(Value::Null));
                }
                Ok(event) => log_event(&event),
                Err(RecvTimeoutError::Timeout) => bail!("{method}: no reply in {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{method}: the browser closed the pipe")
                }
            }
        }
    }

    /// Opens `url` in a new tab; returns the session id of the attached page.
    pub fn open(&mut self, url: &str) -> Result<String> {
        let t = Duration::from_secs(30);
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            t,
        )?;
        let target_id = target["targetId"]
            .as_str()
            .context("createTarget: no targetId")?
            .to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            t,
        )?;
        let session = attached["sessionId"]
            .as_str()
            .context("attachToTarget: no sessionId")?
            .to_string();
        self.call(Some(&session), "Runtime.enable", json!({}), t)?;
        self.call(Some(&session), "Page.enable", json!({}), t)?;
        self.call(Some(&session), "Page.navigate", json!({ "url": url }), t)?;
        Ok(session)
    }

    /// Evaluates `expr` in the page and returns its value (promises awaited).
    pub fn eval(&mut self, session: &str, expr: &str) -> Result<Value> {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            Duration::from_secs(30),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("evaluating `{expr}`: {ex}");
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// PNG screenshot of the viewport.
    pub fn screenshot(&mut self, session: &str) -> Result<Vec<u8>> {
        let r = self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
            Duration::from_secs(60),
        )?;
        let data = r["data"].as_str().context("captureScreenshot: no data")?;
        base64_decode(data)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}), Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Console output, exceptions and crashes from the page, for the test log.
fn log_event(event: &Value) {
    match event.get("method").and_then(Value::as_str) {
        Some("Runtime.consoleAPICalled") => {
            let p = &event["params"];
            let args: Vec<String> = p["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v.get("value")
                                .map(|x| x.to_string())
                                .unwrap_or_else(|| v["description"].to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            eprintln!(
                "[page console.{}] {}",
                p["type"].as_str().unwrap_or("log"),
                args.join(" ")
            );
        }
        Some("Runtime.exceptionThrown") => {
            eprintln!("[page exception] {}", event["params"]["exceptionDetails"])
        }
        Some("Inspector.targetCrashed") => eprintln!("[page] renderer crashed"),
        _ => {}
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("bad base64 byte {c}"),
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
