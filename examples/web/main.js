// Bonsai chat page: loads a GGUF (URL or file), runs it with bonsai-wgpu compiled to WebAssembly
// on the browser's WebGPU, and streams replies. No framework, no CDN: the only import is the
// wasm-bindgen output in ./pkg (see README.md for the build).
//
// Test mode (used by tests/browser.rs): index.html?autotest=1&model=URL&prompt=TEXT&n=16[&kv=q8_0]
// loads the model, runs the checks and a greedy generation, renders the conversation, then
// publishes the results as window.__bonsaiTest and POSTs them to /__report.

import init, * as bonsai from "./pkg/bonsai_wgpu.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CACHE_NAME = "bonsai-models-v1";
// wasm32 addresses at most 4 GiB; the model bytes, the tokenizer and working memory share it.
const WASM_MODEL_LIMIT = 3.5 * 2 ** 30;

const state = {
  model: null,
  chat: null,
  busy: false,
  stopRequested: false,
  gpu: null,
};

// ---------------------------------------------------------------- errors and status

function explain(err) {
  const msg = String(err && err.message ? err.message : err);
  if (/navigator\.gpu|no WebGPU/i.test(msg)) {
    return "WebGPU is not available in this browser. Use a recent Chrome or Edge (or Safari 26+, " +
      "Firefox with WebGPU enabled), served over https or from localhost.\n\n" + msg;
  }
  if (/device (was )?lost|DeviceLost|lost the device/i.test(msg)) {
    return "The GPU device was lost (driver reset, another tab took the GPU, or the machine slept). " +
      "Reload the page to start again.\n\n" + msg;
  }
  if (/out of memory|OutOfMemory|allocation failed|RangeError: Array buffer/i.test(msg)) {
    return "Out of memory: the model does not fit in this tab's WebAssembly memory or in GPU memory. " +
      "Try a smaller model or close other tabs.\n\n" + msg;
  }
  if (/largest context that fits/i.test(msg)) {
    return "The context does not fit this GPU: lower the context, or pick the q8_0 KV cache " +
      "(half the memory of f16).\n\n" + msg;
  }
  if (/max_storage_buffer_binding_size|max_buffer_size|maxBufferSize|limit/i.test(msg)) {
    return "The model is too large for this GPU adapter's WebGPU limits.\n\n" + msg;
  }
  return msg;
}

function showError(err) {
  const box = $("error");
  box.textContent = explain(err);
  box.classList.add("shown");
  console.error(err);
}

function clearError() {
  $("error").classList.remove("shown");
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function mib(bytes) {
  return (bytes / 2 ** 20).toFixed(1) + " MiB";
}

function setBusy(busy) {
  state.busy = busy;
  const ready = (!!state.model || !!state.chat) && !busy;
  $("send").disabled = !ready || !state.chat;
  $("reset").disabled = !ready || !state.chat;
  $("stop").disabled = !busy;
  $("load-url").disabled = busy;
  $("pick-file").disabled = busy;
}

// ---------------------------------------------------------------- chat rendering

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "notice" ? "" : role;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  div.append(label, body);
  $("chat").append(div);
  $("chat").scrollTop = $("chat").scrollHeight;
  return div;
}

// An assistant bubble that receives streamed pieces; thinking goes into a collapsible block.
function assistantStream() {
  const div = addMessage("assistant", "");
  const body = div.querySelector(".body");
  let think = null;
  return {
    push(text, kind) {
      if (kind === "thinking") {
        if (!think) {
          think = document.createElement("details");
          think.className = "think";
          think.open = true;
          think.append(Object.assign(document.createElement("summary"), { textContent: "thinking" }));
          think.append(document.createElement("span"));
          div.insertBefore(think, body);
        }
        think.lastChild.textContent += text;
      } else {
        body.textContent += text;
      }
      $("chat").scrollTop = $("chat").scrollHeight;
    },
    element: div,
  };
}

// ---------------------------------------------------------------- loading

async function streamInto(loader, stream, total, label) {
  const reader = stream.getReader();
  const bar = $("progress");
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loader.push(value);
    const now = performance.now();
    if (now - last > 100) {
      last = now;
      bar.max = total || 1;
      bar.value = total ? loader.loaded : 0;
      setStatus(`${label}: ${mib(loader.loaded)}${total ? " of " + mib(total) : ""}`);
    }
  }
  bar.max = 1;
  bar.value = 1;
}

// Downloads (or reads from Cache Storage) `url` straight into wasm memory.
async function modelFromUrl(url, useCache) {
  const cache = useCache && "caches" in self ? await caches.open(CACHE_NAME).catch(() => null) : null;
  let response = cache ? await cache.match(url) : undefined;
  const cached = !!response;
  let cachePut = Promise.resolve();
  if (!response) {
    response = await fetch(url);
    if (!response.ok) throw new Error(`download of ${url} failed: HTTP ${response.status}`);
  }
  const total = Number(response.headers.get("content-length")) || 0;
  if (total > WASM_MODEL_LIMIT) {
    throw new Error(`out of memory: the model is ${mib(total)}, more than WebAssembly (wasm32) can hold`);
  }
  let body = response.body;
  if (cache && !cached) {
    const [forUs, forCache] = body.tee();
    body = forUs;
    cachePut = cache
      .put(url, new Response(forCache, { headers: response.headers }))
      .catch((e) => console.warn("not cached:", e));
  }
  const loader = new bonsai.ModelLoader(total);
  await streamInto(loader, body, total, cached ? "reading cache" : "downloading");
  await cachePut;
  setStatus("parsing…");
  return loader.finish();
}

async function modelFromFile(file) {
  if (file.size > WASM_MODEL_LIMIT) {
    throw new Error(`out of memory: ${file.name} is ${mib(file.size)}, more than WebAssembly (wasm32) can hold`);
  }
  const loader = new bonsai.ModelLoader(file.size);
  await streamInto(loader, file.stream(), file.size, "reading " + file.name);
  setStatus("parsing…");
  return loader.finish();
}

function describeGpu(g) {
  const l = g.limits;
  return [
    `${g.name || "(unnamed adapter)"} — ${g.backend}`,
    g.driver ? `driver: ${g.driver} ${g.driverInfo || ""}` : null,
    `shader-f16: ${g.features.shaderF16 ? "yes" : "no"}, subgroups: ${g.features.subgroups ? "yes" : "no"}` +
      (g.features.subgroups ? ` (${g.subgroupMinSize}–${g.subgroupMaxSize})` : ""),
    `max storage binding: ${mib(l.maxStorageBufferBindingSize)}`,
    `max buffer: ${mib(l.maxBufferSize)}`,
  ].filter(Boolean).join("\n");
}

function describeModel(m) {
  return [
    m.name || "(no general.name)",
    `${m.nLayer} layers, n_embd ${m.nEmbd}, n_ff ${m.nFf}`,
    `${m.nHead} q / ${m.nHeadKv} kv heads × ${m.headDim}`,
    `vocab ${m.nVocab}, trained context ${m.nCtxTrain}`,
    `${m.nTensors} tensors, ${mib(m.weightBytes)} of weights`,
  ].join("\n");
}

async function probeGpu() {
  if (!state.gpu) {
    state.gpu = await bonsai.gpuInfo();
    $("gpu-info").textContent = describeGpu(state.gpu);
  }
  return state.gpu;
}

async function load(source) {
  clearError();
  setBusy(true);
  try {
    await probeGpu();
    if (state.chat) {
      // The old model's weights leave GPU memory now, not at the next garbage collection.
      state.chat.releaseGpu();
      state.chat.free();
      state.chat = null;
    }
    if (state.model) {
      state.model.free();
      state.model = null;
    }
    const t0 = performance.now();
    const model = typeof source === "string"
      ? await modelFromUrl(source, $("use-cache").checked)
      : await modelFromFile(source);
    const info = model.info();
    $("model-info").textContent = describeModel(info);
    setStatus("uploading weights to the GPU…");
    try {
      state.chat = await model.createChat(Number($("n-ctx").value), $("cache-type").value);
    } finally {
      // The weights now live on the GPU (or failed to): release the file's bytes in wasm memory.
      model.free();
    }
    $("chat").textContent = "";
    addMessage("notice", `${info.name || "Model"} is ready on the GPU ` +
      `(KV cache ${state.chat.nCtx} tokens, ${state.chat.cacheType}). Say something.`);
    addMessage("notice", state.chat.memoryPlan);
    setStatus(`loaded ${info.name || "model"} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    setStatus("load failed");
    showError(e);
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------- generation

function samplingOptions() {
  return {
    temperature: Number($("temperature").value),
    topK: Number($("top-k").value),
    topP: Number($("top-p").value),
    minP: Number($("min-p").value),
    repeatPenalty: Number($("repeat-penalty").value),
    seed: Number($("seed").value),
    maxTokens: Number($("max-tokens").value),
  };
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || !state.chat || state.busy) return;
  clearError();
  $("prompt").value = "";
  addMessage("user", text);
  const out = assistantStream();
  state.stopRequested = false;
  setBusy(true);
  try {
    state.chat.setSystem($("system").value);
    state.chat.setThinking($("thinking").checked);
    const t0 = performance.now();
    let n = 0;
    let tFirst = 0;
    const outcome = await state.chat.send(text, samplingOptions(), (piece, kind) => {
      n += 1;
      out.push(piece, kind);
      const now = performance.now();
      if (n === 1) tFirst = now;
      const rate = n > 1 ? ((n - 1) * 1000 / (now - tFirst)).toFixed(1) : "–";
      $("stats").textContent = `first token after ${((tFirst - t0) / 1000).toFixed(2)} s · ${rate} pieces/s`;
      return !state.stopRequested;
    });
    $("stats").textContent =
      `prompt ${outcome.nPrompt} tokens, first token after ${(outcome.promptMs / 1000).toFixed(2)} s · ` +
      `reply ${outcome.nGen} tokens at ${outcome.genTps.toFixed(1)} tok/s · ${outcome.stopReason}`;
  } catch (e) {
    showError(e);
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------- test mode

async function report(result) {
  window.__bonsaiTest = result;
  try {
    await fetch("/__report", { method: "POST", body: JSON.stringify(result) });
  } catch (e) {
    console.warn("report not delivered:", e);
  }
}

async function autotest() {
  const url = params.get("model");
  const prompt = params.get("prompt") || "Hello! Who are you?";
  const nTokens = Number(params.get("n") || 16);
  const result = { done: true, ok: false };
  try {
    result.gpu = await probeGpu();
    $("model-url").value = url;
    const model = await modelFromUrl(url, params.get("cache") !== "0");
    state.model = model;
    result.model = model.info();
    $("model-info").textContent = describeModel(result.model);
    const promptText = model.chatPrompt([{ role: "user", content: prompt }], true, false);
    result.promptTokens = Array.from(model.tokenize(promptText, true));
    addMessage("user", prompt);
    result.checks = [];
    for (const tensor of ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"]) {
      result.checks.push(await model.checkGpu(tensor));
    }
    // ?kv=f16|q8_0 picks the KV cache type (default: the library's).
    const chat = await model.createChat(512, params.get("kv") || undefined);
    state.chat = chat;
    result.cacheType = chat.cacheType;
    result.memoryPlan = chat.memoryPlan;
    addMessage("notice", chat.memoryPlan);
    chat.setThinking(false);
    const out = assistantStream();
    const outcome = await chat.send(prompt, { temperature: 0, maxTokens: nTokens }, (piece, kind) => {
      out.push(piece, kind);
      return true;
    });
    result.generated = outcome;
    result.replyText = out.element.querySelector(".body").textContent;
    $("stats").textContent = `greedy: ${outcome.nGen} tokens, first after ${outcome.promptMs.toFixed(0)} ms, ` +
      `${outcome.genTps.toFixed(1)} tok/s`;
    result.ok = result.checks.every((c) => c.ok) && !!result.generated;
    setStatus("test finished");
    // Let the page paint before the screenshot.
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const chatBox = $("chat").getBoundingClientRect();
    result.chatRect = { x: chatBox.x, y: chatBox.y, width: chatBox.width, height: chatBox.height };
    result.chatText = $("chat").innerText;
  } catch (e) {
    result.error = String(e && e.message ? e.message : e);
    showError(e);
  }
  await report(result);
}

// ---------------------------------------------------------------- wiring

async function main() {
  await init();
  $("load-url").onclick = () => {
    const url = $("model-url").value.trim();
    if (url) load(url);
  };
  $("pick-file").onclick = () => $("model-file").click();
  $("model-file").onchange = () => {
    const f = $("model-file").files[0];
    if (f) load(f);
  };
  $("clear-cache").onclick = async () => {
    if ("caches" in self) await caches.delete(CACHE_NAME);
    setStatus("cache cleared");
  };
  $("send").onclick = send;
  $("stop").onclick = () => {
    state.stopRequested = true;
  };
  $("reset").onclick = () => {
    if (state.chat) state.chat.reset();
    $("chat").textContent = "";
    $("stats").textContent = "";
  };
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  if (params.has("model")) $("model-url").value = params.get("model");
  if (params.has("autotest")) {
    await autotest();
    return;
  }
  probeGpu().catch(showError);
  if (params.has("model")) load(params.get("model"));
}

main().catch((e) => {
  showError(e);
  if (params.has("autotest")) report({ done: true, ok: false, error: String(e && e.message ? e.message : e) });
});
