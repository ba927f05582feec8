// The rating page: every text goes in with textContent (never innerHTML), so a response
// holding <script> or "><img onerror=...> is shown as text. Keys are the terminal's.
"use strict";
const token = location.pathname.split("/")[2] || "";
const $ = (id) => document.getElementById(id);
const state = { view: "", pair: null, pending: null, revising: null, started: false };
const LABELS = { t: "tie", n: "both_bad", c: "cant_tell", s: "skip" };
const STRENGTH_KEYS = { "1": "slightly", "2": "clearly", "3": "much" };

async function api(action, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(`/r/${encodeURIComponent(token)}/api/${action}`, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function status(text, error) {
  $("status").textContent = text || "";
  $("status").className = error ? "error" : "";
}

function show(view) {
  state.view = view;
  for (const id of ["guidelines", "rate", "done", "history"]) $(id).hidden = id !== view;
}

function setProgress(p) {
  if (p) $("progress").textContent = `item ${Math.min(p[0] + 1, p[1])} of ${p[1]} (${p[0]} answered)`;
}

function showPair(pair, heading) {
  state.pending = null;
  $("strength").hidden = true;
  $("rate-heading").textContent = heading || "Prompt";
  $("prompt").textContent = pair.prompt;
  $("left").textContent = pair.left;
  $("right").textContent = pair.right;
  $("note-left").textContent = (pair.notes || ["", ""])[0];
  $("note-right").textContent = (pair.notes || ["", ""])[1];
  show("rate");
}

function showNext(next) {
  state.pair = next;
  state.revising = null;
  setProgress(next.progress);
  if (next.done) {
    const s = next.summary || {};
    const mix = Object.entries(s.labels || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    $("summary").textContent = `${s.answers || 0} answers in ${Math.round((s.seconds || 0) / 60)}` +
      ` min (${Math.round(s.per_hour || 0)}/hour); labels: ${mix || "none"}`;
    show("done");
  } else {
    showPair(next);
  }
}

async function loadNext() {
  try { showNext(await api("next")); } catch (e) { status(e.message, true); }
}

async function submit(choice, strength) {
  const comment = $("comment").value;
  $("strength").hidden = true;
  state.pending = null;
  try {
    if (state.revising) {
      const r = await api("revise", { id: state.revising, choice, strength, comment });
      $("comment").value = "";
      status(r.saved);
      await openHistory();
      return;
    }
    if (!state.pair || state.pair.done) return;
    const r = await api("answer", { nonce: state.pair.nonce, choice, strength, comment });
    $("comment").value = "";
    status(r.saved);
    showNext(r.next);
  } catch (e) {
    status(`not saved: ${e.message}`, true);
    if (!state.revising) await loadNext();
  }
}

function choose(choice) {
  if (choice === "left" || choice === "right") {
    state.pending = choice;
    $("strength-question").textContent = `${choice === "left" ? "A" : "B"} better - how much?`;
    $("strength").hidden = false;
  } else {
    submit(choice, null);
  }
}

async function undo() {
  try {
    const r = await api("undo", {});
    status(r.undone ? `undone: ${r.undone}` : "nothing to undo");
    showNext(r.next);
  } catch (e) { status(e.message, true); }
}

async function openGuidelines() {
  try {
    const g = await api("guidelines");
    $("guidelines-text").textContent = g.text || "(no guidelines file)";
    $("guidelines-version").textContent = `guidelines ${g.version}; rating as ${g.rater}`;
    $("title").textContent = `rlhf rating: ${g.rater}`;
    show("guidelines");
  } catch (e) { status(e.message, true); }
}

async function openHistory() {
  try {
    const h = await api("history");
    const list = $("history-list");
    list.replaceChildren();
    for (const row of h.answers) {
      const li = document.createElement("li");
      const what = document.createElement("p");
      what.textContent = `${row.answer}${row.revised ? " (revised)" : ""}`;
      const prompt = document.createElement("pre");
      prompt.className = "text";
      prompt.textContent = row.prompt;
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = "revise";
      btn.className = "revise";
      btn.addEventListener("click", () => {
        state.revising = row.id;
        showPair({ prompt: row.prompt, left: row.left, right: row.right, notes: ["", ""] },
                 `Revising your answer (was: ${row.answer})`);
      });
      li.append(what, prompt, btn);
      list.append(li);
    }
    if (!h.answers.length) list.textContent = "no answers yet";
    state.revising = null;
    show("history");
  } catch (e) { status(e.message, true); }
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target === $("comment")) {
    if (ev.key === "Enter" || ev.key === "Escape") { ev.preventDefault(); $("comment").blur(); }
    return;
  }
  const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  if (["Shift", "Control", "Alt", "Meta", "Tab"].includes(k)) return;
  if (state.view === "guidelines") { ev.preventDefault(); start(); return; }
  if (state.view === "done") { if (k === "u") undo(); return; }
  if (state.view === "history") { if (k === "Escape") start(); return; }
  if (state.view !== "rate") return;
  ev.preventDefault();
  if (state.pending) { submit(state.pending, STRENGTH_KEYS[k] || null); return; }
  if (k === "a") choose("left");
  else if (k === "b") choose("right");
  else if (LABELS[k]) choose(LABELS[k]);
  else if (k === "u" && !state.revising) undo();
  else if (k === "m") $("comment").focus();
  else if (k === "h" || k === "?") openGuidelines();
  else status(`unknown key ${JSON.stringify(k)}: h for the guidelines`, true);
}

function start() {
  state.started = true;
  status("");
  loadNext();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.addEventListener("click", () => choose(b.dataset.choice));
  }
  for (const b of document.querySelectorAll("[data-strength]")) {
    b.addEventListener("click", () => submit(state.pending, b.dataset.strength || null));
  }
  $("undo").addEventListener("click", undo);
  $("undo-last").addEventListener("click", undo);
  $("start").addEventListener("click", start);
  $("nav-rate").addEventListener("click", start);
  $("nav-history").addEventListener("click", openHistory);
  $("nav-guidelines").addEventListener("click", openGuidelines);
  document.addEventListener("keydown", onKey);
  openGuidelines();
});
