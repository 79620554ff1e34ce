// The chat page's logic: streams /v1/chat/completions with fetch and a ReadableStream, cancels
// with an AbortController (the server sees the connection close and frees the slot). Everything
// the model writes is put on the page with textContent: text, never HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const turns = [];  // the conversation sent with each request: {role, content}
let controller = null;  // the request in flight, if any
let chatId = 0;  // bumped by "New chat": a reply of an earlier chat is not added to this one

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = "message " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  const meta = document.createElement("div");
  meta.className = "meta";
  box.append(body, meta);
  $("conversation").append(box);
  box.scrollIntoView({block: "end"});
  return {box, body, meta};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function errorMessage(response) {
  try {
    const data = await response.json();
    if (data && data.error && data.error.message) return `${response.status}: ${data.error.message}`;
  } catch (e) { /* not JSON: fall through */ }
  return `${response.status} ${response.statusText}`;
}

function requestHeaders() {
  const headers = {"Content-Type": "application/json"};
  const key = $("api-key").value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

// Reads the server-sent events; onChunk gets each JSON payload, until [DONE].
async function readEvents(response, onChunk) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return false;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data: ")) continue;  // blank separators and ": keep-alive" comments
      const data = line.slice(6);
      if (data === "[DONE]") return true;
      onChunk(JSON.parse(data));
    }
  }
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  const chat = chatId;
  showError("");
  $("prompt").value = "";
  addMessage("user", text);
  turns.push({role: "user", content: text});
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({role: "system", content: system});
  messages.push(...turns);
  const body = {
    messages, stream: true, stream_options: {include_usage: true},
    temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
  };
  const reply = addMessage("assistant", "");
  reply.meta.textContent = "…";
  controller = new AbortController();
  setBusy(true);
  let answer = "", tokens = null, chunks = 0, finished = false;
  const t0 = performance.now();
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: requestHeaders(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    finished = await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        chunks += 1;
        reply.body.textContent = answer;
        reply.box.scrollIntoView({block: "end"});
      }
    });
    const seconds = (performance.now() - t0) / 1000;
    const n = tokens === null ? chunks : tokens;
    reply.meta.textContent = `${n} tokens in ${seconds.toFixed(2)} s, ${(n / seconds).toFixed(1)} tokens/s` +
      (finished ? "" : " (the stream ended early)");
    if (chat === chatId) turns.push({role: "assistant", content: answer});
  } catch (err) {
    if (err.name === "AbortError") {
      reply.meta.textContent = `stopped after ${chunks} tokens`;
      if (chat === chatId) turns.push({role: "assistant", content: answer});
    } else {
      reply.box.classList.add("failed");
      reply.meta.textContent = "failed";
      if (chat === chatId) turns.pop();  // the user's message got no answer: not part of the conversation
      showError(err.message || String(err));
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

async function loadConfig() {
  try {
    const response = await fetch("webui/config.json");
    const config = await response.json();
    $("key-row").hidden = !config.api_key_required;
    if (config.max_tokens) $("max-tokens").value = Math.min(Number($("max-tokens").value), config.max_tokens);
    $("model-name").textContent = config.model || "";
  } catch (err) {
    showError("cannot read the server's settings: " + err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(); }
  });
  $("stop").addEventListener("click", () => { if (controller) controller.abort(); });
  $("new-chat").addEventListener("click", () => {
    if (controller) controller.abort();
    chatId += 1;
    turns.length = 0;
    $("conversation").replaceChildren();
    showError("");
  });
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
  loadConfig().then(() => { document.body.dataset.ready = "1"; });
});
