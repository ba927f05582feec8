// The rating page, for every kind of item: compare two, rank several, rate one, correct one.
// Every text goes in with textContent or as a text node (never innerHTML), so a response
// holding <script> or </textarea> is shown as text; a correction is edited as a textarea's
// value, which is never markup. The guidelines come as a tree of blocks (raters/guidelines.py)
// turned into elements from a fixed list. Keys are the terminal's (see the page's help).
"use strict";
const token = location.pathname.split("/")[2] || "";
const $ = (id) => document.getElementById(id);
const state = { view: "", item: null, pending: null, revising: null, busy: false,
                typed: [], tieNext: false, drag: null,
                limits: { note: 2000, correction: 20000 } };
const LABELS = { t: "tie", n: "both_bad", c: "cant_tell" };
const STRENGTH_KEYS = { "1": "slightly", "2": "clearly", "3": "much" };
const ROLES = { human: "Human", user: "User", assistant: "Assistant", system: "System" };
const KINDS = { compare: "compare-view", rank: "rank-view", rate: "rating-view",
                correct: "correct-view" };
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
const letter = (j) => (j < 26 ? String.fromCharCode(65 + j) : `#${j + 1}`);
const chars = (s) => [...s].length;  // code points, as the server counts them

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Control characters as visible escapes (as feedback.text.visible does on the server).
function shownText(s) {
  return s.replace(/\r\n/g, "\n").replace(CONTROL, (c) => {
    const o = c.charCodeAt(0);
    return o < 0x100 ? `\\x${o.toString(16).padStart(2, "0")}`
                     : `\\u${o.toString(16).padStart(4, "0")}`;
  });
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
  for (const id of ["guidelines", "rate", "done", "history"]) $(id).hidden = id !== view;
}

function setProgress(p) {
  if (p) $("progress").textContent = `item ${Math.min(p[0] + 1, p[1])} of ${p[1]} (${p[0]} answered)`;
}

function count(id, text, limit) {
  const n = chars(text);
  $(id).textContent = n ? `${n} of at most ${limit} characters` : "";
  $(id).classList.toggle("over", n > limit);
}

// ------------------------------------------------------------------ the guidelines (a tree)

function block(node) {
  if (typeof node === "string") return document.createTextNode(node);
  const tags = { p: "p", ul: "ul", ol: "ol", li: "li", pre: "pre", quote: "blockquote",
                 hr: "hr", em: "em", strong: "strong", code: "code", br: "br" };
  let tag = tags[node.t] || "span";
  if (node.t === "h") tag = `h${Math.min(6, Math.max(1, Number(node.level) || 1))}`;
  const safe = node.t === "a" && typeof node.href === "string" && /^https?:\/\//i.test(node.href);
  const e = el(safe ? "a" : tag);
  if (safe) { e.href = node.href; e.rel = "noopener noreferrer"; e.target = "_blank"; }
  if (node.t === "ol" && Number(node.start) > 1) e.start = Number(node.start);
  for (const c of node.c || []) e.append(block(c));
  return e;
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
  if (next.done) {
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
  try { showNext(await api("next")); } catch (e) { status(e.message, true); }
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

async function sendFreeNote() {
  const text = $("free-note").value;
  if (!text.trim()) { status("write the note first", true); return; }
  try {
    const r = await api("note", { text });
    $("free-note").value = "";
    $("free-note").blur();
    status(r.saved);
  } catch (e) { status(`not saved: ${e.message}`, true); }
}

// ------------------------------------------------------------------ ranking

function buildRank(responses, notes) {
  const list = $("rank-list");
  list.replaceChildren();
  responses.forEach((text, j) => {
    const card = el("li", "card");
    card.dataset.index = String(j);
    card.dataset.tied = "0";
    const handle = el("div", "handle");
    handle.title = `drag to move, or press ${letter(j).toLowerCase()} and use the arrow keys`;
    handle.append(el("span", "grip", "\u2807\u2807"), el("span", "letter", letter(j)));
    handle.addEventListener("pointerdown", (ev) => startDrag(ev, card));
    const body = el("div", "card-body");
    body.append(el("p", "place"), el("p", "note", notes[j] || ""), el("pre", "text", text));
    const buttons = el("div", "card-buttons");
    const up = el("button", "up", "\u2191");
    const down = el("button", "down", "\u2193");
    const tie = el("button", "tie", "= tie with the one above");
    for (const b of [up, down, tie]) b.type = "button";
    up.addEventListener("click", () => moveCard(card, -1));
    down.addEventListener("click", () => moveCard(card, 1));
    tie.addEventListener("click", () => toggleTie(card));
    buttons.append(up, down, tie);
    card.append(handle, body, buttons);
    list.append(card);
  });
  renumber();
}

function cards() { return [...$("rank-list").children]; }

// Places top to bottom: 1 for the top card, the same place as the card above when tied.
function renumber() {
  let place = 0;
  cards().forEach((card, i) => {
    const tied = i > 0 && card.dataset.tied === "1";
    if (!tied) place += 1;
    card.dataset.place = String(place);
    card.querySelector(".place").textContent = tied ? `place ${place} (tied with the one above)`
      : `place ${place}`;
    const tie = card.querySelector(".tie");
    tie.disabled = i === 0;
    tie.setAttribute("aria-pressed", String(tied));
  });
}

// Each response's place, in the order shown (what the server's `places` means).
function rankPlaces() {
  const places = [];
  for (const card of cards()) places[Number(card.dataset.index)] = Number(card.dataset.place);
  return places;
}

function moveCard(card, delta) {
  const list = $("rank-list");
  const to = delta < 0 ? card.previousElementSibling : card.nextElementSibling;
  if (!to) return;
  list.insertBefore(card, delta < 0 ? to : to.nextElementSibling);
  card.dataset.tied = "0";
  forgetTyped();
  renumber();
  card.scrollIntoView({ block: "nearest" });
}

function toggleTie(card) {
  if (card === cards()[0]) return;
  card.dataset.tied = card.dataset.tied === "1" ? "0" : "1";
  forgetTyped();
  renumber();
}

// A drag follows the pointer on the whole document (moving the card in the list would end a
// pointer capture on its handle).
function startDrag(ev, card) {
  if (ev.button !== 0) return;
  ev.preventDefault();
  state.drag = card;
  forgetTyped();
  card.classList.add("dragging");
}

// While dragging, the card goes before the first other card whose middle is below the pointer.
function moveDrag(ev) {
  const card = state.drag;
  if (!card) return;
  const next = cards().find((c) => {
    if (c === card) return false;
    const r = c.getBoundingClientRect();
    return ev.clientY < r.top + r.height / 2;
  }) || null;
  if (card.nextElementSibling !== next) {
    $("rank-list").insertBefore(card, next);
    card.dataset.tied = "0";
    renumber();
  }
}

function endDrag() {
  if (!state.drag) return;
  state.drag.classList.remove("dragging");
  state.drag = null;
  renumber();
}

// Keys, as in the terminal: the letters best first, `=` between ties (`b a = c d`: B best, A
// and C next, D last); each letter moves its response to the next place at once. Backspace
// takes the last letter back, Esc forgets them all (the order stays), Enter sends the order.
function rankKey(k) {
  const j = /^[a-z]$/.test(k) ? k.charCodeAt(0) - 97 : -1;
  if (j >= 0 && j < cards().length) placeNext(j);
  else if (k === "=" && state.typed.length) state.tieNext = true;
  else if (k === "Backspace" && state.typed.length) {
    cardOf(state.typed.pop().index).dataset.tied = "0";
    state.tieNext = false;
    renumber();
  } else if (k === "Escape") forgetTyped();
  else if (k === "Enter") submit({ places: rankPlaces() });
  else return k === "=" || k === "Backspace";
  showTyped();
  return true;
}

function cardOf(j) { return cards().find((c) => Number(c.dataset.index) === j); }

function placeNext(j) {
  if (state.typed.some((t) => t.index === j)) {
    status(`${letter(j)} is placed already (Backspace takes the last letter back)`, true);
    return;
  }
  state.typed.push({ index: j, tied: state.tieNext });
  state.tieNext = false;
  const placed = state.typed.map((t) => cardOf(t.index));
  state.typed.forEach((t, n) => { placed[n].dataset.tied = n > 0 && t.tied ? "1" : "0"; });
  const rest = cards().filter((c) => !placed.includes(c));
  $("rank-list").replaceChildren(...placed, ...rest);
  renumber();
}

function forgetTyped() {
  state.typed = [];
  state.tieNext = false;
  showTyped();
}

function showTyped() {
  const placed = new Set(state.typed.map((t) => t.index));
  for (const c of cards()) c.classList.toggle("placed", placed.has(Number(c.dataset.index)));
  const typed = state.typed.map((t, n) => (n ? (t.tied ? " = " : " > ") : "") + letter(t.index));
  $("rank-typed").textContent = typed.length
    ? `typed: ${typed.join("")}${state.tieNext ? " =" : ""}` : "";
}

// ------------------------------------------------------------------ rating

function thumbs(s) { return s.low === 0 && s.high === 1; }

function buildScale(s) {
  const box = $("scale");
  box.replaceChildren();
  const words = s.anchors || {};
  if (s.high - s.low > 20) {  // a wide scale: a number box rather than a row of buttons
    const input = el("input");
    input.type = "number";
    input.min = String(s.low);
    input.max = String(s.high);
    input.id = "scale-value";
    const send = el("button", "primary", "send this score");
    send.type = "button";
    send.addEventListener("click", () => submit({ value: Number(input.value) }));
    box.append(input, send);
    return;
  }
  for (let v = s.low; v <= s.high; v++) {
    const b = el("button", "score");
    b.type = "button";
    b.dataset.value = String(v);
    if (thumbs(s)) b.append(el("span", "key", v ? "[+] or [1]" : "[-] or [0]"));
    b.append(el("span", "value", thumbs(s) ? (v ? "\u2713 up" : "\u2717 down") : String(v)));
    if (words[String(v)]) b.append(el("span", "anchor", words[String(v)]));
    b.addEventListener("click", () => submit({ value: v }));
    box.append(b);
  }
}

function rateKey(k) {
  const s = state.item.scale;
  let v = null;
  if (thumbs(s) && (k === "+" || k === "-")) v = k === "+" ? 1 : 0;
  else if (/^[0-9]$/.test(k) && Number(k) >= s.low && Number(k) <= s.high) v = Number(k);
  if (v === null) return false;
  submit({ value: v });
  return true;
}

// ------------------------------------------------------------------ correcting

// A word-level difference: [["=" | "-" | "+", text], ...]. Common ends are trimmed first; the
// middle is a longest common subsequence of words and spaces (when it is not too large).
function wordDiff(a, b) {
  const A = a.match(/\s+|\S+/g) || [];
  const B = b.match(/\s+|\S+/g) || [];
  let p = 0;
  while (p < A.length && p < B.length && A[p] === B[p]) p++;
  let s = 0;
  while (s < A.length - p && s < B.length - p && A[A.length - 1 - s] === B[B.length - 1 - s]) s++;
  const ops = [["=", A.slice(0, p).join("")]];
  const a2 = A.slice(p, A.length - s);
  const b2 = B.slice(p, B.length - s);
  const n = a2.length;
  const m = b2.length;
  if (n * m > 4e6) {
    ops.push(["-", a2.join("")], ["+", b2.join("")]);
  } else {
    const L = new Uint32Array((n + 1) * (m + 1));  // L[i, j]: common words of a2[i:], b2[j:]
    const at = (i, j) => i * (m + 1) + j;
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[at(i, j)] = a2[i] === b2[j] ? L[at(i + 1, j + 1)] + 1
          : Math.max(L[at(i + 1, j)], L[at(i, j + 1)]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a2[i] === b2[j]) { ops.push(["=", a2[i++]]); j++; }
      else if (j >= m || (i < n && L[at(i + 1, j)] >= L[at(i, j + 1)])) ops.push(["-", a2[i++]]);
      else ops.push(["+", b2[j++]]);
    }
  }
  ops.push(["=", A.slice(A.length - s).join("")]);
  const out = [];
  for (const [op, text] of ops) {
    if (!text) continue;
    if (out.length && out[out.length - 1][0] === op) out[out.length - 1][1] += text;
    else out.push([op, text]);
  }
  return out;
}

function showDiff() {
  const ops = wordDiff(state.item.prefill.replace(/\r\n?/g, "\n"), $("correction").value);
  const box = $("diff");
  box.replaceChildren();
  for (const [op, text] of ops) {
    const t = shownText(text);
    box.append(op === "=" ? document.createTextNode(t) : el(op === "-" ? "del" : "ins", "", t));
  }
  if (!ops.some(([op]) => op !== "=")) box.prepend(el("p", "note", "(no changes)"));
  $("diff-panel").hidden = false;
  $("correction").blur();
  $("diff-send").focus();
}

function editAgain() {
  $("diff-panel").hidden = true;
  $("correction").focus();
}

function correctKey(k) {
  if (!$("diff-panel").hidden) {
    if (k === "y" || k === "Enter") submit({ text: $("correction").value });
    else if (k === "e" || k === "Escape") editAgain();
    else return false;
    return true;
  }
  if (k === "e" || k === "Enter") editAgain();
  else if (k === "d") showDiff();
  else return false;
  return true;
}

// ------------------------------------------------------------------ other views

async function openGuidelines() {
  try {
    const g = await api("guidelines");
    const box = $("guidelines-text");
    box.replaceChildren(...(g.blocks || []).map(block));
    if (!box.childNodes.length) box.textContent = "(no guidelines file)";
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
      const li = el("li");
      li.append(el("p", "", `${row.answer}${row.revised ? " (revised)" : ""}`),
                el("pre", "text", row.prompt));
      if (row.kind === "comparison") {
        const btn = el("button", "revise", "revise");
        btn.type = "button";
        btn.addEventListener("click", () => {
          state.revising = row.id;
          showItem({ ask: "compare", prompt: [{ role: "", text: row.prompt }],
                     responses: [row.left, row.right], notes: ["", ""] },
                   `Revising your answer (was: ${row.answer})`);
        });
        li.append(btn);
      }
      list.append(li);
    }
    if (!h.answers.length) list.textContent = "no answers yet";
    state.revising = null;
    show("history");
  } catch (e) { status(e.message, true); }
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
    else if (t.id === "scale-value") submit({ value: Number(t.value) });
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
  if (state.view === "done") {
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
