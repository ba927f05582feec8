// The rating page's other views: the guidelines (a tree of blocks from raters/guidelines.py,
// turned into elements from a fixed list) and the rater's history of answers.
// (Loaded after web_page.js, whose state and helpers it uses.)
"use strict";

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
