//! The browser build end to end: compiles the crate to wasm32, runs `wasm-bindgen --target web`,
//! serves `examples/web/` with the bindings and a model from an in-process HTTP server, opens the
//! chat page in headless Chromium (WebGPU on SwiftShader) over the DevTools protocol, and checks
//! what the page computes against this process's native results, then checks a screenshot.
//! A second test runs the GPU kernel unit tests (tests/gpu_kernels.rs, gpu_attention.rs,
//! gpu_matmul.rs, gpu_q2_0.rs, gpu_sampler.rs) and the JavaScript API tests (web_api.rs) in the same browser through
//! wasm-bindgen-test.
//!
//! Needs `chromium` (or `BONSAI_CHROMIUM`), and `wasm-bindgen` / `wasm-bindgen-test-runner`
//! matching Cargo.lock on PATH, and `chromedriver` (or `CHROMEDRIVER`) for the kernel tests; when
//! one is missing the test needing it is skipped, except under `CI` where it fails.
//! Chromium's flags (WebGPU on SwiftShader) are in tests/browser/webdriver.json, shared by both.
//! Model: `BONSAI_WEB_TEST_MODEL` or the tiny-bonsai-dev fixture.
#![cfg(unix)]

#[path = "browser/cdp.rs"]
mod cdp;
#[path = "browser/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bonsai_wgpu::cpu::ops::{Matrix, argmax};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::gguf::Gguf;
use bonsai_wgpu::gpu::{GpuContext, GpuModel, GpuOptions, Session, SessionOptions};
use bonsai_wgpu::text::chat_template::{ChatMessage, ChatTemplate, TemplateOptions};
use bonsai_wgpu::text::tokenizer::Tokenizer;
use serde_json::Value;

const FIXTURE_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/tiny-bonsai-dev.gguf"
);
const PROMPT: &str = "Hello! Who are you?";
/// What the page's model field starts with (the chat example's default download, too).
const DEFAULT_MODEL_URL: &str =
    "https://huggingface.co/prism-ml/Bonsai-1.7B-gguf/resolve/main/Bonsai-1.7B-Q1_0.gguf";
/// Greedy tokens generated in the page and natively.
const N_TOKENS: usize = 16;
/// KV cache of both sessions.
const N_CTX: usize = 512;
/// Browser (SwiftShader, no subgroups) and native (lavapipe) runs sum in different orders: their
/// greedy tokens may part only where the native top-2 logit gap is this small.
const GREEDY_MARGIN_TOL: f32 = 1e-2;
/// How long the page may take from navigation to its report (wasm compile + SwiftShader).
const PAGE_TIMEOUT: Duration = Duration::from_secs(300);
/// The wasm CPU reference and the native one run the same f64-accumulating code: their sums of
/// outputs may differ only by the last bits of the final f64 additions.
const CHECKSUM_REL_TOL: f64 = 1e-9;
/// A GPU argmax may differ from the CPU one only where the top two CPU values are this close.
const ARGMAX_MARGIN_TOL: f32 = 1e-3;
/// Test binaries whose `#[gpu_test]`s run in the browser as wasm-bindgen-tests.
const BROWSER_TEST_BINARIES: &[&str] = &[
    "gpu_kernels",
    "gpu_attention",
    "gpu_matmul",
    "gpu_q2_0",
    "gpu_sampler",
    "web_api",
];
/// wasm-bindgen-test-runner's limit for one test binary, seconds (~25 s measured on SwiftShader).
const KERNEL_TESTS_TIMEOUT_S: &str = "900";
/// One SwiftShader browser at a time: two would share 2 CPU cores and stretch every timing.
static BROWSER: Mutex<()> = Mutex::new(());
/// Dark pixels (text) the chat area must show in the screenshot: a few lines of 15px text.
const MIN_INK_PIXELS: usize = 400;
/// Distinct pixel rows with text in the chat area (at least two lines of text).
const MIN_INK_ROWS: usize = 20;

fn chromedriver() -> Option<PathBuf> {
    match std::env::var_os("CHROMEDRIVER") {
        Some(p) => Some(PathBuf::from(p)),
        None => find_on_path("chromedriver"),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BONSAI_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .find_map(|n| find_on_path(n))
}

fn run(cmd: &mut Command) -> Result<()> {
    let t = Instant::now();
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    eprintln!("[browser] {:?} took {:.1?}", cmd.get_program(), t.elapsed());
    Ok(())
}

/// Builds the cdylib for wasm32 (own target dir: the outer `cargo test` holds the main one) and
/// generates the JavaScript bindings into `<target>/web/pkg`.
fn build_wasm(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target/web");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(root)
        .args([
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "cdylib",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir))?;
    let pkg = target_dir.join("pkg");
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&pkg)
        .arg(target_dir.join("wasm32-unknown-unknown/release/bonsai_wgpu.wasm")))?;
    Ok(pkg)
}

/// What the page must reproduce, computed natively.
struct Native {
    prompt_tokens: Vec<u32>,
    gguf: Gguf,
    /// Greedy continuation on the native GPU (end-of-generation token excluded).
    greedy: Vec<u32>,
    /// Top-1 minus top-2 logit at each greedy step (one more than `greedy` when it stopped).
    margins: Vec<f32>,
}

/// Greedy decoding with this crate's GPU session (lavapipe in CI), recording margins.
async fn native_greedy(
    gguf: &Gguf,
    tokenizer: &Tokenizer,
    prompt: &[u32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    let ctx = Arc::new(GpuContext::new(&GpuOptions::default()).await?);
    eprintln!(
        "[browser] native GPU: {} ({:?})",
        ctx.info.name, ctx.info.backend
    );
    let model = GpuModel::load(ctx, gguf)?;
    let opts = SessionOptions {
        n_ctx: N_CTX,
        ..SessionOptions::default()
    };
    let mut session = Session::new(model, opts)?;
    session.feed(prompt).await?;
    let (mut tokens, mut margins) = (Vec::new(), Vec::new());
    for _ in 0..N_TOKENS {
        let top = session.top_k(2).await?;
        ensure!(top.len() == 2, "top_k(2) returned {} entries", top.len());
        margins.push(top[0].1 - top[1].1);
        let id = top[0].0;
        if tokenizer.is_eog(id) {
            break;
        }
        tokens.push(id);
        session.feed(&[id]).await?;
    }
    Ok((tokens, margins))
}

fn native(model: &Path) -> Result<Native> {
    let gguf = Gguf::open(model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf)?;
    let opts = TemplateOptions {
        add_generation_prompt: true,
        enable_thinking: false,
        ..TemplateOptions::default()
    };
    let text = template.render(&[ChatMessage::new("user", PROMPT)], &opts)?;
    let prompt_tokens = tokenizer.encode(&text, true)?;
    let (greedy, margins) = pollster::block_on(native_greedy(&gguf, &tokenizer, &prompt_tokens))?;
    Ok(Native {
        prompt_tokens,
        gguf,
        greedy,
        margins,
    })
}

/// The page's deterministic matvec input (src/wasm.rs `check_matvec`).
fn check_input(k: usize) -> Vec<f32> {
    (0..k)
        .map(|i| ((i * 7919 + 13) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn check_gpu_result(native: &Native, check: &Value) -> Result<()> {
    let tensor = check["tensor"].as_str().context("check without tensor")?;
    let info = native.gguf.tensor_info(tensor).context("unknown tensor")?;
    let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
    let mut want = vec![0.0f32; n];
    let x = check_input(k);
    let w = Matrix::new(
        info.ggml_type,
        native.gguf.tensor_data(tensor)?.to_vec(),
        k,
        n,
    )?;
    w.matvec(&mut want, &x);
    let checksum: f64 = want.iter().map(|v| *v as f64).sum();
    let page_sum = check["checksum"].as_f64().context("no checksum")?;
    ensure!(
        (page_sum - checksum).abs() <= CHECKSUM_REL_TOL * (1.0 + checksum.abs()),
        "{tensor}: wasm CPU checksum {page_sum} != native {checksum}"
    );
    ensure!(
        check["ok"].as_bool() == Some(true),
        "{tensor}: WebGPU matvec differs from the CPU reference: {check}"
    );
    let best = argmax(&want);
    let gpu_best = check["argmax"].as_u64().context("no argmax")? as u32;
    if gpu_best != best {
        let margin = want[best as usize] - want[gpu_best as usize];
        ensure!(
            margin <= ARGMAX_MARGIN_TOL,
            "{tensor}: WebGPU argmax {gpu_best} != native {best} (margin {margin})"
        );
    }
    eprintln!(
        "[browser] {tensor} {n}x{k}: max rel err {} (tolerance {})",
        check["maxRelErr"], check["tolerance"]
    );
    Ok(())
}

/// Same tokens, or parted only where the native run's top-2 margin was within tolerance.
fn compare_greedy(page: &[u32], native: &[u32], margins: &[f32]) -> Result<()> {
    let split = page.iter().zip(native).take_while(|(a, b)| a == b).count();
    if split == page.len() && split == native.len() {
        return Ok(());
    }
    let margin = margins.get(split).copied().unwrap_or(f32::INFINITY);
    ensure!(
        margin <= GREEDY_MARGIN_TOL,
        "greedy tokens part at step {split} where the native margin is {margin} \
         (tolerance {GREEDY_MARGIN_TOL}): page {page:?}, native {native:?}"
    );
    eprintln!("[browser] greedy runs part at step {split} on a near-tie (margin {margin})");
    Ok(())
}

/// Counts dark (text) pixels inside `rect` (CSS pixels; the screenshot is at scale 1).
fn ink_in(png_bytes: &[u8], rect: &Value) -> Result<(usize, usize)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("png size")?];
    let frame = reader.next_frame(&mut buf)?;
    let channels = frame.color_type.samples();
    ensure!(
        frame.bit_depth == png::BitDepth::Eight,
        "unexpected PNG bit depth"
    );
    let (w, h) = (frame.width as usize, frame.height as usize);
    let f = |k: &str| rect[k].as_f64().unwrap_or(0.0).max(0.0) as usize;
    let (x0, y0) = (f("x"), f("y"));
    let (x1, y1) = ((x0 + f("width")).min(w), (y0 + f("height")).min(h));
    let (mut ink, mut rows) = (0, 0);
    for y in y0..y1 {
        let mut row_ink = false;
        for x in x0..x1 {
            let p = &buf[(y * w + x) * channels..][..3];
            let luma = (p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000;
            if luma < 128 {
                ink += 1;
                row_ink = true;
            }
        }
        rows += row_ink as usize;
    }
    Ok((ink, rows))
}

#[test]
fn chat_page_in_headless_chromium() -> Result<()> {
    let in_ci = std::env::var_os("CI").is_some();
    let (Some(chrome), Some(_)) = (chromium(), find_on_path("wasm-bindgen")) else {
        if in_ci {
            bail!("CI needs chromium and wasm-bindgen on PATH (see .ci/run)");
        }
        eprintln!("skip: chromium or wasm-bindgen not on PATH");
        return Ok(());
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = std::env::var_os("BONSAI_WEB_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FIXTURE_MODEL));
    let model_dir = model.parent().context("model path")?.to_path_buf();
    let model_name = model
        .file_name()
        .and_then(|n| n.to_str())
        .context("model file name")?
        .to_string();

    let pkg = build_wasm(&root)?;
    let native = native(&model)?;

    let server = server::StaticServer::start(vec![
        ("/".into(), root.join("examples/web")),
        ("/pkg/".into(), pkg),
        ("/models/".into(), model_dir),
    ])?;
    let url = server.url(&format!(
        "/index.html?autotest=1&n={N_TOKENS}&model=/models/{model_name}&prompt={}",
        PROMPT
            .replace(' ', "%20")
            .replace('!', "%21")
            .replace('?', "%3F")
    ));
    let log = root.join("target/web/chromium.log");
    let _one_browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut browser = cdp::Browser::launch(&chrome, &log)?;
    let session = browser.open(&url)?;

    let t = Instant::now();
    let result = loop {
        let v = browser.eval(&session, "window.__bonsaiTest || null")?;
        if !v.is_null() {
            break v;
        }
        ensure!(
            t.elapsed() < PAGE_TIMEOUT,
            "the page did not report within {PAGE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("[browser] page reported after {:.1?}", t.elapsed());
    eprintln!("[browser] adapter: {}", result["gpu"]);
    ensure!(
        result.get("error").is_none(),
        "page error: {}",
        result["error"]
    );
    ensure!(
        server.reports().len() == 1,
        "expected one POST /__report, got {}",
        server.reports().len()
    );

    // Tokenizer and chat template in wasm == native.
    let page_tokens: Vec<u32> = serde_json::from_value(result["promptTokens"].clone())?;
    assert_eq!(
        page_tokens, native.prompt_tokens,
        "prompt tokens (wasm vs native)"
    );

    // The library's Q1_0 matvec on WebGPU vs the CPU reference (in wasm and natively).
    let checks = result["checks"].as_array().context("no checks")?;
    ensure!(checks.len() == 3, "expected 3 GPU checks: {result}");
    for check in checks {
        check_gpu_result(&native, check)?;
    }
    ensure!(
        result["ok"].as_bool() == Some(true),
        "page says not ok: {result}"
    );
    // The page shows the session's memory plan, which names its KV cache type.
    let plan = result["memoryPlan"].as_str().unwrap_or("");
    let cache_type = result["cacheType"].as_str().unwrap_or("?");
    eprintln!("[browser] {plan}");
    ensure!(
        plan.starts_with("memory plan:") && plan.contains(cache_type),
        "memory plan {plan:?} (cache type {cache_type})"
    );

    // Greedy generation on WebGPU == on the native GPU, up to a near-tie.
    let generated = &result["generated"];
    let page_greedy: Vec<u32> = serde_json::from_value(generated["tokens"].clone())?;
    eprintln!(
        "[browser] page: {} tokens, first after {} ms, {} tok/s, stop: {}",
        generated["nGen"], generated["promptMs"], generated["genTps"], generated["stopReason"]
    );
    eprintln!("[browser] page greedy   {page_greedy:?}");
    eprintln!("[browser] native greedy {:?}", native.greedy);
    compare_greedy(&page_greedy, &native.greedy, &native.margins)?;
    ensure!(
        result["replyText"] == generated["text"],
        "rendered reply {} != generated text {}",
        result["replyText"],
        generated["text"]
    );

    // The conversation is on screen: text in the DOM and dark pixels in the chat area.
    let chat_text = result["chatText"].as_str().unwrap_or("");
    ensure!(
        chat_text.contains(PROMPT),
        "chat area lacks the prompt: {chat_text:?}"
    );
    let shot = browser.screenshot(&session)?;
    std::fs::write(root.join("target/web/screenshot.png"), &shot)?;
    let (ink, rows) = ink_in(&shot, &result["chatRect"])?;
    eprintln!("[browser] screenshot: {ink} text pixels on {rows} rows in the chat area");
    ensure!(
        ink >= MIN_INK_PIXELS && rows >= MIN_INK_ROWS,
        "the chat area looks empty in target/web/screenshot.png ({ink} dark pixels, {rows} rows)"
    );

    // The interactive path: load from ?model=, type a message, press Send, sampled reply.
    let url = server.url(&format!("/index.html?model=/models/{model_name}"));
    let session = browser.open(&url)?;
    wait_for(&mut browser, &session, "loaded", LOADED_JS)?;
    // Without ?model= the URL field offers Bonsai-1.7B on Hugging Face.
    let default_url = browser.eval(
        &session,
        "document.getElementById('model-url').defaultValue",
    )?;
    ensure!(
        default_url.as_str() == Some(DEFAULT_MODEL_URL),
        "default model URL: {default_url}"
    );
    browser.eval(&session, SEND_JS)?;
    wait_for(&mut browser, &session, "the reply", REPLIED_JS)?;
    let reply = browser.eval(&session, REPLY_JS)?;
    eprintln!("[browser] interactive reply: {reply}");
    ensure!(
        reply["text"].as_str().is_some_and(|t| !t.is_empty()),
        "no reply text: {reply}"
    );
    ensure!(
        reply["stats"].as_str().is_some_and(|t| t.contains("tok/s")),
        "no tokens/s readout: {reply}"
    );

    // Loading a model again in the same page, now with the q8_0 KV cache picked: the old chat's
    // GPU device is released first (chat.releaseGpu()), the new model gets a new one, its memory
    // plan names q8_0, and it answers.
    browser.eval(&session, RELOAD_Q8_JS)?;
    wait_for(&mut browser, &session, "the model loaded again", LOADED_JS)?;
    let notices = browser.eval(&session, NOTICES_JS)?;
    let notices = notices.as_str().unwrap_or("");
    ensure!(
        notices.contains("memory plan:") && notices.contains("q8_0"),
        "after loading with the q8_0 cache the page shows: {notices:?}"
    );
    browser.eval(&session, SEND_JS)?;
    wait_for(
        &mut browser,
        &session,
        "the reply after reloading",
        REPLIED_JS,
    )?;
    let reply = browser.eval(&session, REPLY_JS)?;
    eprintln!("[browser] reply after reloading: {reply}");
    ensure!(
        reply["text"].as_str().is_some_and(|t| !t.is_empty()),
        "no reply text after reloading: {reply}"
    );
    Ok(())
}

/// Picks the q8_0 KV cache and presses *Load URL* again (same model URL); clears the status so
/// LOADED_JS waits for the new load.
const RELOAD_Q8_JS: &str = "(() => { document.getElementById('status').textContent = ''; \
    document.getElementById('cache-type').value = 'q8_0'; \
    document.getElementById('load-url').click(); return true; })()";
/// The text of the chat's notices (model ready, memory plan).
const NOTICES_JS: &str =
    "[...document.querySelectorAll('.msg.notice')].map((m) => m.innerText).join('\\n')";

/// The page finished loading the model (`true`), or shows an error (its text). `null` while the
/// document is still being replaced after a navigation (its elements do not exist yet).
const LOADED_JS: &str = "(() => { const e = document.getElementById('error'); \
    if (!e || !document.getElementById('status')) return null; \
    if (e.classList.contains('shown')) return e.textContent; \
    return document.getElementById('status').textContent.startsWith('loaded') || null; })()";
/// Types a message and presses Send with sampling on and a short reply.
const SEND_JS: &str = "(() => { const $ = (id) => document.getElementById(id); \
    $('max-tokens').value = '8'; $('temperature').value = '0.8'; $('thinking').checked = true; \
    $('prompt').value = 'Tell me about bonsai trees.'; $('send').click(); return true; })()";
/// Generation finished (`true`), or the page shows an error (its text).
const REPLIED_JS: &str = "(() => { const e = document.getElementById('error'); \
    if (!e || !document.getElementById('send')) return null; \
    if (e.classList.contains('shown')) return e.textContent; \
    const done = !document.getElementById('send').disabled \
      && document.querySelectorAll('.msg.assistant').length > 0; return done || null; })()";
const REPLY_JS: &str = "(() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); \
    return { text: m.innerText, stats: document.getElementById('stats').textContent }; })()";

/// Polls `expr` until it returns `true`; a string is the page's error message.
fn wait_for(browser: &mut cdp::Browser, session: &str, what: &str, expr: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        match browser.eval(session, expr)? {
            Value::Bool(true) => {
                eprintln!("[browser] {what} after {:.1?}", t.elapsed());
                return Ok(());
            }
            Value::String(err) => bail!("waiting for {what}: page error: {err}"),
            _ => {}
        }
        ensure!(
            t.elapsed() < PAGE_TIMEOUT,
            "no {what} within {PAGE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `cargo test` for wasm32 over the browser-capable test binaries, with wasm-bindgen-test-runner
/// driving headless Chromium (WebGPU on SwiftShader) through chromedriver.
fn wasm_test_command(root: &Path, driver: &Path, no_run: bool) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        // No default features: the `cli` feature's bonsai-chat binary is native only, and
        // `cargo test` builds the package's binaries for its integration tests.
        .args(["test", "--release", "--no-default-features"])
        .args(["--target", "wasm32-unknown-unknown"])
        .arg("--target-dir")
        .arg(root.join("target/web"))
        .args(BROWSER_TEST_BINARIES.iter().flat_map(|b| ["--test", b]))
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", driver)
        .env(
            "WASM_BINDGEN_TEST_WEBDRIVER_JSON",
            root.join("tests/browser/webdriver.json"),
        )
        .env("WASM_BINDGEN_TEST_TIMEOUT", KERNEL_TESTS_TIMEOUT_S);
    if no_run {
        cmd.arg("--no-run");
    } else {
        // Console output of passing tests too: the adapter line and the measured errors.
        cmd.args(["--", "--nocapture"]);
    }
    cmd
}

/// The kernel unit tests, compiled to wasm32 and run in headless Chromium: every kernel on the
/// browser's WebGPU against the same CPU references and tolerances as natively.
#[test]
fn kernel_tests_in_headless_chromium() -> Result<()> {
    let in_ci = std::env::var_os("CI").is_some();
    let (Some(_), Some(driver), Some(_)) = (
        chromium(),
        chromedriver(),
        find_on_path("wasm-bindgen-test-runner"),
    ) else {
        if in_ci {
            bail!("CI needs chromium, chromedriver and wasm-bindgen-test-runner (see .ci/run)");
        }
        eprintln!("skip: chromium, chromedriver or wasm-bindgen-test-runner not found");
        return Ok(());
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    run(&mut wasm_test_command(&root, &driver, true))?;

    let _one_browser = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let out = wasm_test_command(&root, &driver, false)
        .output()
        .context("starting cargo test --target wasm32-unknown-unknown")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success(),
        "kernel tests failed in the browser: {}",
        out.status
    );
    // Every binary ran and passed something: a runner that found no tests would also exit 0.
    let passed: Vec<usize> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    ensure!(
        passed.len() == BROWSER_TEST_BINARIES.len() && passed.iter().all(|&n| n > 0),
        "expected passing tests from each of {BROWSER_TEST_BINARIES:?}, got {passed:?}"
    );
    ensure!(
        stdout.contains("(BrowserWebGpu)"),
        "the kernel tests did not report a WebGPU adapter"
    );
    eprintln!(
        "[browser] {} wasm-bindgen tests (kernels, JavaScript API) passed in headless Chromium in {:.1?}",
        passed.iter().sum::<usize>(),
        t.elapsed()
    );
    Ok(())
}
