// The rating page: ranking several responses, by keys, by dragging, or by each card's buttons.
// (Loaded after web_page.js, whose state and helpers it uses.)
"use strict";

function buildRank(responses, notes) {
  const list = $("rank-list");
  list.replaceChildren();
  state.current = null;
  responses.forEach((text, j) => {
    const card = el("li", "card");
    card.dataset.index = String(j);
    card.dataset.tied = "0";
    const handle = el("div", "handle");
    handle.title = `drag to move, or press ${letter(j).toLowerCase()}, then \u2191 \u2193 to move it`;
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

// The card the arrow keys move: the last one typed, dragged or moved by its buttons.
function setCurrent(card) {
  state.current = card;
  for (const c of cards()) c.classList.toggle("current", c === card);
}

function moveCard(card, delta) {
  setCurrent(card);
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
  setCurrent(card);
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
  setCurrent(card);
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
// The arrow keys move the last card typed (or dragged, or moved by its buttons) up or down.
function rankKey(k) {
  const j = /^[a-z]$/.test(k) ? k.charCodeAt(0) - 97 : -1;
  if (j >= 0 && j < cards().length) placeNext(j);
  else if (k === "=" && state.typed.length) state.tieNext = true;
  else if (k === "Backspace" && state.typed.length) {
    cardOf(state.typed.pop().index).dataset.tied = "0";
    state.tieNext = false;
    const last = state.typed[state.typed.length - 1];
    setCurrent(last ? cardOf(last.index) : null);
    renumber();
  } else if (k === "Escape") { forgetTyped(); setCurrent(null); }
  else if ((k === "ArrowUp" || k === "ArrowDown") && state.current) {
    moveCard(state.current, k === "ArrowUp" ? -1 : 1);
  } else if (k === "Enter") submit({ places: rankPlaces() });
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
  setCurrent(cardOf(j));
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
