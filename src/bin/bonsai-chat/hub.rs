//! Offline-first download of one file from the Hugging Face Hub into the standard cache layout
//! shared with `huggingface_hub` / `hf-hub`:
//!
//! ```text
//! $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)/models--ORG--NAME/
//!     blobs/<etag>                 file contents, named by their sha256 (LFS) or git hash
//!     blobs/<etag>.incomplete      a partial download, resumed with an HTTP Range request
//!     snapshots/<commit>/<file>    symlink to ../../blobs/<etag>
//!     refs/<revision>              the commit the revision pointed at
//! ```
//!
//! A file already in the cache is returned without any network call. Downloads are checked
//! against the size (`x-linked-size`) and, for LFS files, the sha256 (`x-linked-etag`) the Hub
//! announces; a mismatch deletes the partial file and is an error. `HF_ENDPOINT` picks the server,
//! `HF_HUB_OFFLINE=1` forbids the network.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The Hub endpoint: `$HF_ENDPOINT` or `https://huggingface.co`.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// The hub cache folder, resolved as `huggingface_hub` does.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    user_cache_dir().join("huggingface").join("hub")
}

/// `$XDG_CACHE_HOME`, or `~/.cache`.
pub fn user_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .or_else(|| var("USERPROFILE").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
}

/// One file of one model repository at one revision.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// `ORG/NAME`.
    pub repo: String,
    /// Path of the file inside the repository.
    pub file: String,
    /// Branch, tag or commit (usually `main`).
    pub revision: String,
}

impl HubFile {
    /// `repo`'s `file` at `main`.
    pub fn new(repo: &str, file: &str) -> Self {
        Self {
            repo: repo.into(),
            file: file.into(),
            revision: "main".into(),
        }
    }

    /// The repository's folder in the cache.
    pub fn repo_dir(&self) -> PathBuf {
        cache_dir().join(format!("models--{}", self.repo.replace('/', "--")))
    }

    /// The URL the Hub serves the file at.
    pub fn url(&self) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint(),
            self.repo,
            self.revision,
            self.file
        )
    }

    /// The cached file, if a complete copy is there (no network).
    pub fn cached(&self) -> Option<PathBuf> {
        let dir = self.repo_dir();
        let commit = fs::read_to_string(dir.join("refs").join(&self.revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| self.revision.clone());
        let path = dir.join("snapshots").join(commit).join(&self.file);
        // `is_file` follows the symlink: a dangling link (blob deleted) is not a cache hit.
        path.is_file().then_some(path)
    }
}

/// What the Hub says about a file before we download it.
struct Announced {
    commit: String,
    etag: String,
    size: Option<u64>,
    download_url: String,
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn header(resp: &ureq::Response, name: &str) -> Option<String> {
    resp.header(name).map(|v| {
        v.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    })
}

fn announce(agent: &ureq::Agent, f: &HubFile) -> Result<Announced> {
    let url = f.url();
    let resp = match agent.head(&url).call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, _)) => {
            bail!(
                "{url}: HTTP {code} (is `{}` a public repository with file `{}`?)",
                f.repo,
                f.file
            )
        }
        Err(e) => bail!("cannot reach {url}: {e}"),
    };
    let etag = header(&resp, "x-linked-etag")
        .or_else(|| header(&resp, "etag"))
        .with_context(|| format!("{url}: the server sent no ETag"))?;
    if etag.is_empty() || etag.contains(['/', '\\', '.']) {
        bail!("{url}: unusable ETag {etag:?}");
    }
    let size = header(&resp, "x-linked-size")
        .or_else(|| {
            (resp.status() == 200)
                .then(|| header(&resp, "content-length"))
                .flatten()
        })
        .and_then(|s| s.parse().ok());
    let commit = header(&resp, "x-repo-commit").unwrap_or_else(|| f.revision.clone());
    let download_url = match (resp.status(), resp.header("location")) {
        (300..=399, Some(loc)) if loc.starts_with('/') => format!("{}{loc}", origin(&url)),
        (300..=399, Some(loc)) => loc.to_string(),
        _ => url,
    };
    Ok(Announced {
        commit,
        etag,
        size,
        download_url,
    })
}

/// Downloads `url` into `part`, resuming from its current length; `progress(done, total)`.
fn fetch_to(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    size: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<()> {
    let mut offset = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|s| offset > s) {
        offset = 0;
    }
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.set("Range", &format!("bytes={offset}-"));
    }
    let resp = match req.call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(416, _)) if offset > 0 => {
            fs::remove_file(part).ok();
            return fetch_to(agent, url, part, size, progress);
        }
        Err(e) => bail!("downloading {url}: {e}"),
    };
    let resumed = offset > 0 && resp.status() == 206;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(part)
        .with_context(|| format!("creating {}", part.display()))?;
    let mut done = if resumed { offset } else { 0 };
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bail!("download of {url} interrupted after {done} bytes: {e} (run again to resume)")
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        done += n as u64;
        progress(done, size);
    }
    file.sync_all().ok();
    Ok(())
}

fn sha256_hex(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a finished partial download; deletes it when it can never become right.
fn verify(part: &Path, a: &Announced, url: &str) -> Result<()> {
    let len = fs::metadata(part)?.len();
    if let Some(size) = a.size {
        if len < size {
            bail!("download of {url} stopped at {len} of {size} bytes (run again to resume)");
        }
        if len > size {
            fs::remove_file(part).ok();
            bail!(
                "download of {url} is corrupt: got {len} bytes, the Hub announced {size}; deleted it"
            );
        }
    }
    let is_sha256 = a.etag.len() == 64 && a.etag.bytes().all(|b| b.is_ascii_hexdigit());
    if is_sha256 {
        let got = sha256_hex(part)?;
        if !got.eq_ignore_ascii_case(&a.etag) {
            fs::remove_file(part).ok();
            bail!(
                "download of {url} is corrupt: sha256 {got}, the Hub announced {}; deleted it",
                a.etag
            );
        }
    }
    Ok(())
}

/// Points `snapshots/<commit>/<file>` at the blob.
fn link_snapshot(dir: &Path, commit: &str, file: &str, blob: &Path) -> Result<PathBuf> {
    let snap = dir.join("snapshots").join(commit).join(file);
    let parent = snap.parent().context("snapshot path has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    fs::remove_file(&snap).ok();
    #[cfg(unix)]
    {
        // Relative, like huggingface_hub: ../../blobs/ETAG plus one ../ per folder in `file`.
        let depth = Path::new(file).components().count() - 1;
        let mut target = PathBuf::from("../..");
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().context("blob has no name")?);
        std::os::unix::fs::symlink(&target, &snap)
            .with_context(|| format!("linking {}", snap.display()))?;
    }
    #[cfg(not(unix))]
    fs::copy(blob, &snap).with_context(|| format!("copying to {}", snap.display()))?;
    Ok(snap)
}

/// The local path of `f`: from the cache if it is there (no network), else downloaded,
/// verified and cached. `progress(done, total)` reports download progress.
pub fn fetch(f: &HubFile, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf> {
    if let Some(path) = f.cached() {
        return Ok(path);
    }
    if offline() {
        bail!(
            "{} is not in the cache {} and HF_HUB_OFFLINE forbids downloading it",
            f.url(),
            cache_dir().display()
        );
    }
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .build();
    let a = announce(&agent, f)?;
    let dir = f.repo_dir();
    let blobs = dir.join("blobs");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let blob = blobs.join(&a.etag);
    if !blob.is_file() {
        let part = blobs.join(format!("{}.incomplete", a.etag));
        let follow = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .build();
        fetch_to(&follow, &a.download_url, &part, a.size, progress)?;
        verify(&part, &a, &f.url())?;
        fs::rename(&part, &blob).with_context(|| format!("moving into {}", blob.display()))?;
    }
    let snap = link_snapshot(&dir, &a.commit, &f.file, &blob)?;
    if a.commit != f.revision {
        let refs = dir.join("refs");
        fs::create_dir_all(&refs)?;
        fs::write(refs.join(&f.revision), &a.commit)
            .with_context(|| format!("writing {}", refs.display()))?;
    }
    Ok(snap)
}
