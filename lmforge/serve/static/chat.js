// The lmforge chat page: talks to the server's own OpenAI API (no framework, no build step).
"use strict";
const $ = (id) => document.getElementById(id);
const RUN = document.body.dataset.run, KIND = document.body.dataset.kind;
const history = [];          // {role, content} of the conversation so far
let controller = null;       // AbortController of the request in flight (Stop)

// ------------------------------------------------------------------ settings and tabs
for (const id of ["system", "max-tokens", "temperature", "api-key"]) {
  const saved = localStorage.getItem("lmforge." + id);
  if (saved !== null) $(id).value = saved;
  $(id).addEventListener("change", () => localStorage.setItem("lmforge." + id, $(id).value));
}
function show(view) {
  for (const b of document.querySelectorAll("nav button"))
    b.setAttribute("aria-selected", String(b.dataset.view === view));
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
}
for (const b of document.querySelectorAll("nav button")) b.onclick = () => show(b.dataset.view);
if (KIND === "classifier") {
  $("tab-chat").hidden = $("tab-complete").hidden = true;
  for (const el of document.querySelectorAll(".lm-only")) el.hidden = true;
  show("classify");
}
else { $("tab-classify").hidden = true; show("chat"); }

function headers() {
  const h = { "content-type": "application/json" };
  if ($("api-key").value) h.authorization = "Bearer " + $("api-key").value;
  return h;
}
function options() {
  return { model: RUN, max_tokens: Number($("max-tokens").value) || 128,
           temperature: Number($("temperature").value), stream: true,
           stream_options: { include_usage: true } };
}
function setBusy(busy) {
  $("send").disabled = $("complete-run").disabled = busy;
  $("stop").disabled = $("complete-stop").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}
const status = (text) => { $("status").textContent = text; };

// POST a streaming request; onText(piece) per chunk. Resolves to {finish, tokens, seconds}.
async function streamRequest(url, body, pick, onText) {
  controller = new AbortController();
  const started = performance.now();
  let finish = null, tokens = 0, chunks = 0;
  const res = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body),
                                 signal: controller.signal });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    throw new Error((err.error && err.error.message) || `HTTP ${res.status}`);
  }
  const reader = res.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const event = JSON.parse(line.slice(6));
      if (event.error) throw new Error(event.error.message);
      if (event.usage) tokens = event.usage.completion_tokens;
      for (const choice of event.choices || []) {
        const text = pick(choice);
        if (text) { chunks += 1; onText(text); }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      const seconds = (performance.now() - started) / 1000;
      status(`${tokens || chunks} tokens · ${((tokens || chunks) / seconds).toFixed(1)} tokens/s`);
    }
  }
  return { finish, tokens: tokens || chunks, seconds: (performance.now() - started) / 1000 };
}
function stop() { if (controller) controller.abort(); }
$("stop").onclick = $("complete-stop").onclick = stop;

// ------------------------------------------------------------------ chat
function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.appendChild(body);
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}
function tools(div, text) {
  const bar = document.createElement("div");
  bar.className = "tools";
  const copy = document.createElement("button");
  copy.className = "small"; copy.textContent = "Copy"; copy.type = "button";
  copy.onclick = async () => {
    try { await navigator.clipboard.writeText(text); copy.textContent = "Copied"; }
    catch { copy.textContent = "Copy failed"; }
  };
  const again = document.createElement("button");
  again.className = "small regenerate"; again.textContent = "Regenerate"; again.type = "button";
  again.onclick = () => regenerate(div);
  bar.append(copy, again);
  div.appendChild(bar);
}
function renderEmpty() {
  if ($("messages").children.length) return;
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = `Chat with ${RUN}. Replies stream as they are generated.`;
  $("messages").appendChild(p);
}
async function answer() {
  const div = bubble("assistant streaming", "");
  const text = div.querySelector(".text");
  let reply = "";
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(history);
  setBusy(true);
  try {
    const r = await streamRequest("/v1/chat/completions", { ...options(), messages },
                                  (c) => c.delta && c.delta.content, (piece) => {
      reply += piece; text.textContent = reply; div.scrollIntoView({ block: "end" }); });
    status(`${r.tokens} tokens · ${(r.tokens / r.seconds).toFixed(1)} tokens/s · ${r.finish}`);
  } catch (err) {
    if (err.name === "AbortError") status("stopped");
    else { bubble("error", err.message); status("error"); }
  } finally {
    div.classList.remove("streaming");
    history.push({ role: "assistant", content: reply });
    tools(div, reply);
    setBusy(false);
    controller = null;
  }
}
function regenerate(div) {
  if (controller) return;
  const all = [...$("messages").querySelectorAll(".msg.assistant")];
  if (all[all.length - 1] !== div) return;   // only the last answer can be regenerated
  history.pop();
  div.remove();
  answer();
}
$("chat-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || controller) return;
  $("messages").querySelector(".empty")?.remove();
  $("chat-input").value = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  answer();
};
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
});
renderEmpty();

// ------------------------------------------------------------------ completion
$("complete-run").onclick = async () => {
  const out = $("completion"), prompt = $("prompt").value;
  out.innerHTML = "";
  const shown = document.createElement("span");
  shown.className = "prompt"; shown.textContent = prompt;
  const gen = document.createElement("span");
  out.append(shown, gen);
  setBusy(true);
  try {
    const r = await streamRequest("/v1/completions", { ...options(), prompt }, (c) => c.text,
                                  (piece) => { gen.textContent += piece; });
    status(`${r.tokens} tokens · ${(r.tokens / r.seconds).toFixed(1)} tokens/s · ${r.finish}`);
  } catch (err) {
    status(err.name === "AbortError" ? "stopped" : "error: " + err.message);
  } finally { setBusy(false); controller = null; }
};

// ------------------------------------------------------------------ classify
$("classify-run").onclick = async () => {
  const texts = $("classify-input").value.split("\n").map((t) => t.trim()).filter(Boolean);
  if (!texts.length) return;
  $("classify-run").disabled = true;
  try {
    const res = await fetch("/v1/classify", { method: "POST", headers: headers(),
                                              body: JSON.stringify({ model: RUN, input: texts }) });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error ? data.error.message : `HTTP ${res.status}`);
    const box = $("predictions");
    box.innerHTML = "";
    data.predictions.forEach((p, i) => {
      const card = document.createElement("div");
      card.className = "pred";
      const title = document.createElement("div");
      title.textContent = texts[i];
      card.appendChild(title);
      for (const [label, prob] of Object.entries(p.probabilities).sort((a, b) => b[1] - a[1])) {
        const bar = document.createElement("div");
        bar.className = "bar" + (label === p.label ? " top" : "");
        bar.innerHTML = `<span></span><span><span class="fill" style="width:${(prob * 100).toFixed(1)}%"></span></span><span>${(prob * 100).toFixed(1)}%</span>`;
        bar.firstChild.textContent = label;
        card.appendChild(bar);
      }
      box.appendChild(card);
    });
    status(`${texts.length} text(s) classified`);
  } catch (err) { status("error: " + err.message); }
  finally { $("classify-run").disabled = false; }
};
