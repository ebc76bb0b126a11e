//! The JavaScript API (src/wasm.rs) in the browser, as a page calls it: adapter info, streamed
//! model loading, chat with streaming, stop and reset, both KV cache types, and the errors a page
//! must explain (no WebGPU, out of wasm memory, a broken file, an unknown cache type). wasm32
//! only: run by tests/browser.rs through wasm-bindgen-test in headless Chromium; natively this
//! file is empty.
#![cfg(target_arch = "wasm32")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use bonsai_wgpu::cache_type::CacheType;
use bonsai_wgpu::cpu::{CpuModel, CpuSession};
use bonsai_wgpu::engine::Engine;
use bonsai_wgpu::wasm::{Model, ModelLoader, gpu_info};
use common::TINY_MODEL_BYTES as FIXTURE;
use common::TINY_TERNARY_BYTES as TERNARY;
use js_sys::{Function, JSON, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// Chunk size of the streamed load (a fetch() stream delivers chunks of this order).
const CHUNK: usize = 1 << 20;
/// Greedy tokens compared with the CPU reference.
const N_GREEDY: usize = 6;

/// The message of a `JsError` as JavaScript sees it (`error.message`).
fn message(e: JsError) -> String {
    let v = JsValue::from(e);
    String::from(js_sys::Error::from(v).message())
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

fn json(text: &str) -> JsValue {
    JSON::parse(text).expect("JSON")
}

fn load_fixture() -> Model {
    load_streamed(FIXTURE)
}

fn load_streamed(file: &[u8]) -> Model {
    let mut loader = ModelLoader::new(file.len() as f64).expect("reserve");
    for chunk in file.chunks(CHUNK) {
        loader.push(chunk).expect("push");
    }
    assert_eq!(loader.loaded(), file.len() as f64);
    loader.finish().expect("the fixture loads")
}

/// `N_GREEDY` greedy tokens after `prompt` from the CPU reference (in this wasm module) on `file`,
/// its cache rounded through `cache_type` when given.
async fn cpu_greedy(file: &[u8], prompt: &[u32], cache_type: Option<CacheType>) -> Vec<u32> {
    let gguf = bonsai_wgpu::gguf::Gguf::from_bytes(file.to_vec()).expect("fixture");
    let model = CpuModel::from_gguf(&gguf).expect("cpu model");
    let mut cpu = CpuSession::with_cache_type(model, prompt.len() + N_GREEDY, cache_type).unwrap();
    cpu.feed(prompt).await.unwrap();
    let mut want = Vec::new();
    for _ in 0..N_GREEDY {
        let t = cpu.greedy().await.unwrap();
        want.push(t);
        cpu.feed(&[t]).await.unwrap();
    }
    want
}

/// A JavaScript `onPiece(text, kind)` that records pieces and returns `keep_going`.
fn on_piece(
    pieces: Rc<RefCell<Vec<(String, String)>>>,
    keep_going: bool,
) -> Closure<dyn FnMut(String, String) -> bool> {
    Closure::new(move |text: String, kind: String| {
        pieces.borrow_mut().push((text, kind));
        keep_going
    })
}

#[wasm_bindgen_test]
async fn gpu_info_describes_the_webgpu_adapter() {
    let info = gpu_info().await.map_err(message).expect("gpuInfo");
    assert_eq!(
        get(&info, "backend").as_string().as_deref(),
        Some("BrowserWebGpu")
    );
    let limits = get(&info, "limits");
    let binding = get(&limits, "maxStorageBufferBindingSize")
        .as_f64()
        .unwrap_or(0.0);
    assert!(binding >= (128 << 20) as f64, "binding limit {binding}");
    assert!(
        get(&get(&info, "features"), "shaderF16")
            .as_bool()
            .is_some()
    );
}

/// Puts `navigator.gpu` back however the test ends.
struct HiddenWebGpu;

impl HiddenWebGpu {
    fn hide() -> HiddenWebGpu {
        let nav = get(&js_sys::global(), "navigator");
        let desc = json(r#"{"configurable": true}"#);
        Reflect::set(&desc, &"value".into(), &JsValue::UNDEFINED).unwrap();
        js_sys::Object::define_property(&nav.into(), &"gpu".into(), &desc.into());
        HiddenWebGpu
    }
}

impl Drop for HiddenWebGpu {
    fn drop(&mut self) {
        let nav = get(&js_sys::global(), "navigator");
        Reflect::delete_property(&nav.into(), &"gpu".into()).unwrap();
    }
}

#[wasm_bindgen_test]
async fn no_webgpu_is_a_clear_error() {
    let err = {
        let _hidden = HiddenWebGpu::hide();
        assert!(get(&get(&js_sys::global(), "navigator"), "gpu").is_undefined());
        gpu_info().await.err().map(message)
    };
    let err = err.expect("gpuInfo without navigator.gpu must fail");
    assert!(err.contains("no WebGPU"), "{err}");
    assert!(err.contains("navigator.gpu"), "{err}");
    // Back again for the other tests.
    assert!(!get(&get(&js_sys::global(), "navigator"), "gpu").is_undefined());
}

#[wasm_bindgen_test]
fn a_model_larger_than_wasm_memory_fails_before_the_download() {
    // wasm32 addresses 4 GiB at most: a 6 GB file cannot be held, and the loader says so up front.
    let err = message(
        ModelLoader::new(6e9)
            .err()
            .expect("6 GB reservation must fail"),
    );
    assert!(err.starts_with("out of memory"), "{err}");
    assert!(err.contains("MiB"), "{err}");
}

#[wasm_bindgen_test]
fn broken_files_are_clear_errors() {
    let err = message(
        Model::load(FIXTURE[..4096].to_vec())
            .err()
            .expect("truncated"),
    );
    assert!(err.contains("truncated GGUF"), "{err}");
    let err = message(
        Model::load(b"<!DOCTYPE html><html>".to_vec())
            .err()
            .expect("html"),
    );
    assert!(err.contains("not a GGUF file"), "{err}");
}

/// Streamed load, then a greedy chat turn whose tokens equal the CPU reference's (run in wasm
/// on the same prompt), the streamed pieces equal the reply, stop from the callback, and reset.
#[wasm_bindgen_test]
async fn streamed_load_chat_stop_and_reset() {
    let mut model = load_fixture();
    let info = model.info().map_err(message).expect("info");
    assert_eq!(get(&info, "nVocab").as_f64(), Some(151_669.0), "{info:?}");

    let mut chat = model
        .create_chat(256, None)
        .await
        .map_err(message)
        .expect("createChat");
    assert_eq!(chat.n_ctx(), 256);
    assert_eq!(chat.cache_type(), CacheType::default().name());
    chat.set_thinking(false);
    let pieces = Rc::new(RefCell::new(Vec::new()));
    let cb = on_piece(pieces.clone(), true);
    let opts = json(&format!(r#"{{"temperature": 0, "maxTokens": {N_GREEDY}}}"#));
    let out = chat
        .send(
            "Hello!".into(),
            opts,
            cb.as_ref().unchecked_ref::<Function>().clone(),
        )
        .await
        .map_err(message)
        .expect("send");
    assert_eq!(
        get(&out, "stopReason").as_string().as_deref(),
        Some("max tokens")
    );
    let tokens: Vec<u32> = js_sys::Array::from(&get(&out, "tokens"))
        .iter()
        .map(|t| t.as_f64().expect("token id") as u32)
        .collect();
    assert_eq!(tokens.len(), N_GREEDY);
    let streamed: String = pieces.borrow().iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(Some(streamed), get(&out, "text").as_string());
    assert!(pieces.borrow().iter().all(|(_, k)| k == "answer"));
    let n_prompt = get(&out, "nPrompt").as_f64().expect("nPrompt") as usize;
    // The cache holds the prompt and every generated token (the next turn continues from it).
    assert_eq!(
        chat.n_past(),
        n_prompt + N_GREEDY,
        "KV cache after the reply"
    );

    // The same prompt through the CPU reference, in this wasm module.
    let prompt_text = model
        .chat_prompt(
            json(r#"[{"role": "user", "content": "Hello!"}]"#),
            true,
            false,
        )
        .map_err(message)
        .expect("chatPrompt");
    let prompt = model
        .tokenize(&prompt_text, true)
        .map_err(message)
        .expect("tokenize");
    assert_eq!(prompt.len(), n_prompt);
    let want = cpu_greedy(FIXTURE, &prompt, None).await;
    assert_eq!(tokens, want, "greedy tokens: WebGPU vs CPU reference");

    // onPiece returning false stops the reply at once.
    let stopped = Rc::new(RefCell::new(Vec::new()));
    let stop_cb = on_piece(stopped.clone(), false);
    let opts = json(r#"{"temperature": 0.8, "seed": 7, "maxTokens": 32}"#);
    let out = chat
        .send(
            "More.".into(),
            opts,
            stop_cb.as_ref().unchecked_ref::<Function>().clone(),
        )
        .await
        .map_err(message)
        .expect("send");
    assert_eq!(
        get(&out, "stopReason").as_string().as_deref(),
        Some("stopped")
    );
    assert_eq!(stopped.borrow().len(), 1);

    chat.reset();
    assert_eq!(chat.n_past(), 0);
}

/// A device lost under a chat (here destroyed on purpose by `releaseGpu`, as a driver reset would)
/// fails the chat's next `send` with a clear error ("GPU: device lost (Destroyed): …"); the model
/// then opens a new device.
#[wasm_bindgen_test]
async fn a_lost_device_is_a_clear_error_and_the_model_recovers() {
    let mut model = load_fixture();
    let mut chat = model
        .create_chat(64, None)
        .await
        .map_err(message)
        .expect("createChat");
    let ignore = on_piece(Rc::new(RefCell::new(Vec::new())), true);
    let opts = || json(r#"{"temperature": 0, "maxTokens": 2}"#);
    let cb = || ignore.as_ref().unchecked_ref::<Function>().clone();
    chat.release_gpu();
    let err = chat
        .send("Hi".into(), opts(), cb())
        .await
        .err()
        .map(message);
    let err = err.expect("send on a destroyed device must fail");
    wasm_bindgen_test::console_log!("send after releaseGpu: {err}");
    assert!(err.starts_with("GPU: device lost (Destroyed)"), "{err}");

    let mut fresh = model
        .create_chat(64, None)
        .await
        .map_err(message)
        .expect("createChat again");
    let out = fresh
        .send("Hi".into(), opts(), cb())
        .await
        .map_err(message)
        .expect("send");
    assert_eq!(get(&out, "nGen").as_f64(), Some(2.0));
}

/// A Ternary-Bonsai (Q2_0) file in the browser: streamed load, the Q2_0 matvec kernel on one of
/// its weights against the CPU reference (`checkGpu`), and a greedy chat turn whose tokens equal
/// the CPU reference's in this wasm module.
#[wasm_bindgen_test]
async fn ternary_model_loads_and_chats_like_the_cpu_reference() {
    let mut model = load_streamed(TERNARY);
    let check = model
        .check_gpu("blk.1.ffn_down.weight")
        .await
        .map_err(message)
        .expect("checkGpu");
    assert_eq!(get(&check, "ok").as_bool(), Some(true), "{check:?}");

    let mut chat = model
        .create_chat(128, None)
        .await
        .map_err(message)
        .expect("createChat");
    chat.set_thinking(false);
    let ignore = on_piece(Rc::new(RefCell::new(Vec::new())), true);
    let opts = json(&format!(r#"{{"temperature": 0, "maxTokens": {N_GREEDY}}}"#));
    let out = chat
        .send(
            "Hello!".into(),
            opts,
            ignore.as_ref().unchecked_ref::<Function>().clone(),
        )
        .await
        .map_err(message)
        .expect("send");
    let tokens: Vec<u32> = js_sys::Array::from(&get(&out, "tokens"))
        .iter()
        .map(|t| t.as_f64().expect("token id") as u32)
        .collect();
    let prompt_text = model
        .chat_prompt(
            json(r#"[{"role": "user", "content": "Hello!"}]"#),
            true,
            false,
        )
        .map_err(message)
        .expect("chatPrompt");
    let prompt = model
        .tokenize(&prompt_text, true)
        .map_err(message)
        .expect("tokenize");
    let want = cpu_greedy(TERNARY, &prompt, None).await;
    assert_eq!(
        tokens, want,
        "ternary greedy tokens: WebGPU vs CPU reference"
    );
}

/// `createChat(nCtx, "q8_0")`: the Q8_0 KV cache on WebGPU, a greedy turn whose tokens equal the
/// CPU reference's with the same cache rounding, the memory plan naming the type; an unknown
/// type is an error naming it, before anything is uploaded.
#[wasm_bindgen_test]
async fn q8_0_cache_chats_like_the_cpu_reference() {
    let mut model = load_fixture();
    let err = model
        .create_chat(64, Some("q4_0".into()))
        .await
        .err()
        .map(message)
        .expect("an unknown cache type must fail");
    assert!(err.contains("cache type `q4_0`"), "{err}");
    assert!(err.contains("f16 or q8_0"), "{err}");

    let mut chat = model
        .create_chat(128, Some("q8_0".into()))
        .await
        .map_err(message)
        .expect("createChat q8_0");
    assert_eq!(chat.cache_type(), "q8_0");
    let plan = chat.memory_plan();
    assert!(plan.contains("q8_0"), "{plan}");
    chat.set_thinking(false);
    let ignore = on_piece(Rc::new(RefCell::new(Vec::new())), true);
    let opts = json(&format!(r#"{{"temperature": 0, "maxTokens": {N_GREEDY}}}"#));
    let out = chat
        .send(
            "Hello!".into(),
            opts,
            ignore.as_ref().unchecked_ref::<Function>().clone(),
        )
        .await
        .map_err(message)
        .expect("send");
    let tokens: Vec<u32> = js_sys::Array::from(&get(&out, "tokens"))
        .iter()
        .map(|t| t.as_f64().expect("token id") as u32)
        .collect();
    let prompt_text = model
        .chat_prompt(
            json(r#"[{"role": "user", "content": "Hello!"}]"#),
            true,
            false,
        )
        .map_err(message)
        .expect("chatPrompt");
    let prompt = model
        .tokenize(&prompt_text, true)
        .map_err(message)
        .expect("tokenize");
    let want = cpu_greedy(FIXTURE, &prompt, Some(CacheType::Q8_0)).await;
    assert_eq!(tokens, want, "q8_0 greedy tokens: WebGPU vs CPU reference");
}
