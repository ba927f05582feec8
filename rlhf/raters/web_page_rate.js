// The rating page: rating one response on a scale, and correcting one.
// (Loaded after web_page.js, whose state and helpers it uses.)
"use strict";

// ------------------------------------------------------------------ rating

function thumbs(s) { return s.low === 0 && s.high === 1; }

// Whether each score is one key (a scale within 0-9); past 9 a score is typed, then Enter.
function oneKey(s) { return s.low >= 0 && s.high <= 9; }

function buildScale(s) {
  const box = $("scale");
  box.replaceChildren();
  showScore();
  const words = s.anchors || {};
  if (s.high - s.low > 20) {  // a wide scale: a number box rather than a row of buttons
    const input = el("input");
    input.type = "number";
    input.min = String(s.low);
    input.max = String(s.high);
    input.id = "scale-value";
    const send = el("button", "primary", "send this score");
    send.type = "button";
    send.addEventListener("click", () => sendTyped(input.value));
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

// A score typed (keys, or the number box): sent when it is a whole number, else refused here
// (an empty box is no score; the server refuses one out of range).
function sendTyped(text) {
  const s = state.item.scale;
  if (!/^-?[0-9]+$/.test(text.trim())) {
    status(`type a whole number from ${s.low} to ${s.high}`, true);
    return;
  }
  state.score = "";
  showScore();
  submit({ value: Number(text.trim()) });
}

function showScore() {
  $("rate-typed").textContent = state.score ? `typed: ${state.score}_ (Enter sends it)` : "";
}

// Keys, as in the terminal: thumbs `+` / `-` (or 1 / 0); a scale within 0-9 the digit, sent at
// once; a wider one the digits (and a leading `-`), then Enter (Backspace takes a digit back,
// Esc forgets them).
function rateKey(k) {
  const s = state.item.scale;
  if (thumbs(s) && (k === "+" || k === "-")) { submit({ value: k === "+" ? 1 : 0 }); return true; }
  if (oneKey(s)) {
    if (!/^[0-9]$/.test(k) || Number(k) < s.low || Number(k) > s.high) return false;
    submit({ value: Number(k) });
    return true;
  }
  if (/^[0-9]$/.test(k) || (k === "-" && !state.score)) state.score += k;
  else if (k === "Backspace" && state.score) state.score = state.score.slice(0, -1);
  else if (k === "Escape" && state.score) state.score = "";
  else if (k === "Enter") { sendTyped(state.score); return true; }
  else return false;
  showScore();
  return true;
}

// ------------------------------------------------------------------ correcting

// The change, word by word, as the server computes it (the terminal's word diff, every text
// through `visible`): shown before the correction is sent, unless the text changed meanwhile.
async function showDiff() {
  const item = state.item;
  const text = $("correction").value;
  let runs;
  try {
    runs = (await api("diff", { nonce: item.nonce, text })).runs;
  } catch (e) {
    status(`not shown: ${e.message}`, true);
    if (e.refused) refused(e.message);
    return;
  }
  if (state.item !== item || $("correction").value !== text) return;
  const box = $("diff");
  box.replaceChildren();
  for (const [op, t] of runs) {
    box.append(op === "=" ? document.createTextNode(t) : el(op === "-" ? "del" : "ins", "", t));
  }
  if (!runs.some(([op]) => op !== "=")) box.prepend(el("p", "note", "(no changes)"));
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
