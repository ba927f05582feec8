// The rating page, for every kind of item: compare two, rank several, rate one, correct one.
// Every text goes in with textContent or as a text node (never innerHTML), so a response
// holding <script> or </textarea> is shown as text; a correction is edited as a textarea's
// value, which is never markup. Keys are the terminal's (see the page's help).
// This file holds the page's state, its calls to the server, showing an item, answering and
// the keys; web_page_rank.js ranking, web_page_rate.js rating and correcting,
// web_page_views.js the guidelines and the history (classic scripts sharing one scope, loaded
// in that order).
"use strict";
const token = location.pathname.split("/")[2] || "";
const $ = (id) => document.getElementById(id);
const state = { view: "", item: null, pending: null, revising: null, busy: false,
                typed: [], tieNext: false, drag: null, current: null, score: "",
                limits: { note: 2000, correction: 20000 } };
const LABELS = { t: "tie", n: "both_bad", c: "cant_tell" };
const STRENGTH_KEYS = { "1": "slightly", "2": "clearly", "3": "much" };
const ROLES = { human: "Human", user: "User", assistant: "Assistant", system: "System" };
const KINDS = { compare: "compare-view", rank: "rank-view", rate: "rating-view",
                correct: "correct-view" };
const letter = (j) => (j < 26 ? String.fromCharCode(65 + j) : `#${j + 1}`);
const chars = (s) => [...s].length;  // code points, as the server counts them

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(action, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(`/r/${encodeURIComponent(token)}/api/${action}`, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (!r.ok) {
    const err = new Error(data.error || `HTTP ${r.status}`);
    err.refused = Boolean(data.refused);
    throw err;
  }
  return data;
}

function status(text, error) {
  $("status").textContent = text || "";
  $("status").className = error ? "error" : "";
}

function show(view) {
  state.view = view;
  clearTimeout(state.poll);  // a waiting page asks again only while it waits
  for (const id of ["guidelines", "rate", "waiting", "done", "history"]) $(id).hidden = id !== view;
}

function setProgress(p) {
  if (p) $("progress").textContent = `item ${Math.min(p[0] + 1, p[1])} of ${p[1]} (${p[0]} answered)`;
}

function count(id, text, limit) {
  const n = chars(text);
  $(id).textContent = n ? `${n} of at most ${limit} characters` : "";
  $(id).classList.toggle("over", n > limit);
}

// ------------------------------------------------------------------ showing an item

function showPrompt(turns) {
  const box = $("prompt");
  box.replaceChildren();
  for (const turn of turns) {
    const role = Object.hasOwn(ROLES, turn.role) ? turn.role : "";
    const div = el("div", `turn ${role ? `role-${role}` : "plain"}`);
    if (role) div.append(el("span", "role", ROLES[role]));
    div.append(el("div", "turn-text", turn.text));
    box.append(div);
  }
}

function showItem(item, heading) {
  state.item = item;
  state.pending = null;
  state.typed = [];
  state.tieNext = false;
  state.score = "";
  $("strength").hidden = true;
  $("rate-heading").textContent = heading || "Prompt";
  showPrompt(item.prompt);
  for (const [ask, id] of Object.entries(KINDS)) $(id).hidden = ask !== item.ask;
  const notes = item.notes || [];
  const n = item.responses.length;
  if (item.ask === "compare") {
    $("ask").textContent = "Which response is better?";
    $("left").textContent = item.responses[0];
    $("right").textContent = item.responses[1];
    $("note-left").textContent = notes[0] || "";
    $("note-right").textContent = notes[1] || "";
  } else if (item.ask === "rank") {
    $("ask").textContent = `Put these ${n} responses in order, best first.`;
    buildRank(item.responses, notes);
  } else if (item.ask === "rate") {
    const s = item.scale;
    $("ask").textContent = thumbs(s) ? "Is this response good or bad?"
      : `How good is this response, from ${s.low} to ${s.high}?`;
    $("single").textContent = item.responses[0];
    $("note-single").textContent = notes[0] || "";
    buildScale(s);
  } else {
    $("ask").textContent = "Correct this response: edit it until it is right.";
    $("original").textContent = item.responses[0];
    $("note-original").textContent = notes[0] || "";
    $("correction").value = item.prefill;
    $("diff-panel").hidden = true;
    count("correction-count", item.prefill, state.limits.correction);
  }
  show("rate");
  window.scrollTo(0, 0);  // a new item starts at its top
}

function showNext(next) {
  state.revising = null;
  setProgress(next.progress);
  if (next.limits) state.limits = next.limits;
  if (next.waiting) {  // the rest is on other raters' screens, or more is coming
    state.item = null;
    $("waiting-text").textContent = next.held ? `${next.held} item${next.held === 1 ? " is" : "s are"}` +
      " on other raters' screens now; one comes back here if it is skipped or left too long." : "";
    show("waiting");
    state.poll = setTimeout(loadNext, next.retry_ms || 3000);
  } else if (next.done) {
    state.item = null;
    const s = next.summary || {};
    const mix = Object.entries(s.labels || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    $("summary").textContent = `${s.answers || 0} answers in ${Math.round((s.seconds || 0) / 60)}` +
      ` min (${Math.round(s.per_hour || 0)}/hour); answers: ${mix || "none"}`;
    show("done");
  } else {
    showItem(next);
  }
}

async function loadNext() {
  try { showNext(await api("next")); } catch (e) {
    status(e.message, true);
    if (state.view === "waiting") state.poll = setTimeout(loadNext, 3000);  // keep asking
  }
}

// ------------------------------------------------------------------ answering

async function submit(fields) {
  if (state.busy) return;
  state.busy = true;
  const note = $("note").value;
  $("strength").hidden = true;
  state.pending = null;
  try {
    if (state.revising) {
      const r = await api("revise", { id: state.revising, note, ...fields });
      clearNote();
      status(r.saved);
      await openHistory();
      return;
    }
    if (!state.item || state.item.done) return;
    const r = await api("answer", { nonce: state.item.nonce, note, ...fields });
    clearNote();
    status(r.saved);
    showNext(r.next);
  } catch (e) {
    status(`not saved: ${e.message}`, true);
    if (e.refused) refused(e.message);  // nothing saved: the item stays, to be fixed
    else if (!state.revising) await loadNext();
  } finally {
    state.busy = false;
  }
}

function refused(message) {
  if (/note/.test(message)) { $("note").focus(); return; }
  if (state.item && state.item.ask === "correct") { $("diff-panel").hidden = true; $("correction").focus(); }
  if ($("scale-value") && state.item && state.item.ask === "rate") $("scale-value").focus();
}

function clearNote() {
  $("note").value = "";
  count("note-count", "", state.limits.note);
}

function choose(choice) {
  if (choice === "left" || choice === "right") {
    state.pending = choice;
    $("strength-question").textContent = `${choice === "left" ? "A" : "B"} better - how much?`;
    $("strength").hidden = false;
  } else {
    submit({ choice });
  }
}

async function undo() {
  try {
    const r = await api("undo", {});
    status(r.undone ? `undone: ${r.undone}` : "nothing to undo");
    showNext(r.next);
  } catch (e) { status(e.message, true); }
}

// A note standing alone; written while an item is on screen, it is about that item (its nonce
// names it), as the terminal's `w` is.
async function sendFreeNote() {
  const text = $("free-note").value;
  if (!text.trim()) { status("write the note first", true); return; }
  const onScreen = state.view === "rate" && state.item && !state.revising;
  try {
    const r = await api("note", { text, nonce: onScreen ? state.item.nonce : undefined });
    $("free-note").value = "";
    $("free-note").blur();
    status(r.saved);
  } catch (e) { status(`not saved: ${e.message}`, true); }
}


// ------------------------------------------------------------------ keys

function fieldKey(ev) {
  const t = ev.target;
  if (t === $("correction")) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); showDiff(); }
    else if (ev.key === "Escape") { ev.preventDefault(); t.blur(); }
  } else if (ev.key === "Enter" || ev.key === "Escape") {
    ev.preventDefault();
    if (ev.key === "Escape") t.blur();
    else if (t === $("free-note")) sendFreeNote();
    else if (t.id === "scale-value") sendTyped(t.value);
    else t.blur();
  }
}

function itemKey(k) {
  const ask = state.item ? state.item.ask : "";
  if (state.pending) { submit({ choice: state.pending, strength: STRENGTH_KEYS[k] || null }); return true; }
  if (ask === "rank" && rankKey(k)) return true;
  if (ask === "rate" && rateKey(k)) return true;
  if (ask === "correct" && correctKey(k)) return true;
  if (ask === "compare" && (k === "a" || k === "b")) { choose(k === "a" ? "left" : "right"); return true; }
  if (ask === "compare" && LABELS[k]) { choose(LABELS[k]); return true; }
  if (k === "s" && !state.revising) choose("skip");
  else if (k === "u" && !state.revising) undo();
  else if (k === "m") $("note").focus();
  else if (k === "w") $("free-note").focus();
  else if (k === "h" || k === "?") openGuidelines();
  else return false;
  return true;
}

function onKey(ev) {
  const t = ev.target;
  if (t === $("note") || t === $("free-note") || t === $("correction") || t.id === "scale-value") {
    fieldKey(ev);
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  if (["Shift", "Control", "Alt", "Meta", "Tab"].includes(k)) return;
  if (t.tagName === "BUTTON" && (k === "Enter" || k === " ")) return;  // the button's click
  if (state.view === "guidelines") { ev.preventDefault(); start(); return; }
  if (state.view === "done" || state.view === "waiting") {
    if (k === "u") undo();
    else if (k === "w") { ev.preventDefault(); $("free-note").focus(); }
    return;
  }
  if (state.view === "history") { if (k === "Escape") start(); return; }
  if (state.view !== "rate" || state.busy) return;
  if (itemKey(k)) { ev.preventDefault(); return; }
  if (!/^(Arrow|Page|Home|End| )/.test(k)) {  // (those scroll the page)
    status(`unknown key ${JSON.stringify(k)}: h for the guidelines and the keys`, true);
  }
}

function start() {
  status("");
  loadNext();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.addEventListener("click", () => choose(b.dataset.choice));
  }
  for (const b of document.querySelectorAll("[data-strength]")) {
    b.addEventListener("click", () => submit({ choice: state.pending, strength: b.dataset.strength || null }));
  }
  $("undo").addEventListener("click", undo);
  $("undo-last").addEventListener("click", undo);
  $("start").addEventListener("click", start);
  $("nav-rate").addEventListener("click", start);
  $("nav-history").addEventListener("click", openHistory);
  $("nav-guidelines").addEventListener("click", openGuidelines);
  $("rank-send").addEventListener("click", () => submit({ places: rankPlaces() }));
  $("diff-show").addEventListener("click", showDiff);
  $("diff-send").addEventListener("click", () => submit({ text: $("correction").value }));
  $("diff-back").addEventListener("click", editAgain);
  $("free-note-send").addEventListener("click", sendFreeNote);
  $("note").addEventListener("input", () => count("note-count", $("note").value, state.limits.note));
  $("correction").addEventListener("input", () => {
    $("diff-panel").hidden = true;  // a changed text is checked again before it is sent
    count("correction-count", $("correction").value, state.limits.correction);
  });
  document.addEventListener("keydown", onKey);
  document.addEventListener("pointermove", moveDrag);
  document.addEventListener("pointerup", endDrag);
  document.addEventListener("pointercancel", endDrag);
  openGuidelines();
});
