/*
 * Stainless slide list and review page (after common.js, which holds the credential,
 * sign-in and API helpers).
 *
 * Stable test hooks (data-testid):
 *   both pages   those of common.js
 *   index page   slide-list (table), slide-row (data-slide-id, data-status),
 *                slide-link (link to the slide page), study-list, study-row
 *                (data-study-id), study-link (link to the study page)
 *   slide page   slide-title, slide-status, signature, flags, sign (button),
 *                fhir-link, diff-table, diff-<CLASS> (one row per class, e.g.
 *                diff-SNE, with data-count and data-percent), needs-review-count,
 *                queue, queue-cell (data-cell-id, data-class, aria-selected),
 *                queue-empty, selected-cell, review-buttons, action-confirm,
 *                action-poor, action-undo, reclass-<CLASS>, hotkeys, view-toggle, gallery,
 *                gallery-group-<CLASS> (also gallery-group-pending and
 *                gallery-group-poor_quality), gallery-cell (data-cell-id,
 *                data-class, data-review-status)
 *
 * Hotkeys on the slide page (ignored while typing in an input):
 *   1-9, 0, -, =         reclassify the selected queue cell as the n-th class of
 *                        the slide's vocabulary (the legend on the page comes from
 *                        the API: healthy 1 ART … 7 SMU, clinical 1 NE … = ART)
 *   c                    confirm the selected cell's class
 *   p                    mark the selected cell poor quality
 *   u                    undo the last review made on this page (one by one)
 *   ArrowRight/ArrowDown/j   select the next queue cell
 *   ArrowLeft/ArrowUp/k      select the previous queue cell
 * A reviewed cell leaves the queue; the selection moves to the cell after it. A click on
 * a gallery cell selects it instead (every cell can be reviewed, not only the queue's);
 * a click on a queue cell or a move returns to the queue. Sign asks for confirmation and
 * shows what the report will say.
 * Keys pressed while a review is in flight are applied in order afterwards.
 *
 * <body> attributes for tests: data-ready="true" once the page has loaded
 * (it stays true across reloads), data-busy="true" while a review is sent.
 */
"use strict";

const VIEWS = ["stained", "dic", "heatmap"];
const state = {
  slideId: null,
  slide: null,
  queue: [],
  selected: 0,
  cells: [],
  focusId: null, // a gallery cell chosen for review, instead of the queue's selection
  undo: [], // ids of the cells reviewed on this page, latest last
  view: "stained",
  chain: Promise.resolve(),
};

/* ---------- index page ---------- */

async function loadIndex() {
  say("");
  const rows = document.getElementById("slide-rows");
  rows.replaceChildren();
  try {
    if (!(await whoami())) return;
    const slides = await api("/v1/slides");
    for (const slide of slides) {
      rows.append(
        el(
          "tr",
          { "data-testid": "slide-row", "data-slide-id": slide.id, "data-status": slide.status },
          el("td", {}, el("a", { href: `/slides/${slide.id}`, "data-testid": "slide-link", text: slide.external_id })),
          el("td", { text: slide.patient_pseudonym }),
          el("td", { text: slide.status }),
          el("td", { class: "num", text: slide.cells }),
          el("td", { class: "num", text: slide.needs_review }),
          el("td", { text: (slide.created_at || "").slice(0, 16).replace("T", " ") }),
        ),
      );
    }
    if (!slides.length) say("No slides yet.");
    const studies = await api("/v1/studies");
    document.getElementById("study-rows").replaceChildren(
      ...studies.map((found) =>
        el(
          "tr",
          { "data-testid": "study-row", "data-study-id": found.id },
          el("td", {}, el("a", { href: `/studies/${found.id}`, "data-testid": "study-link", text: found.name })),
          el("td", { class: "num", text: found.items }),
          el("td", { text: Object.entries(found.labelled).map(([who, n]) => `${who} (${n})`).join(", ") }),
          el("td", { text: (found.created_at || "").slice(0, 16).replace("T", " ") }),
        ),
      ),
    );
    document.getElementById("studies").hidden = !studies.length;
  } catch (error) {
    say(error.message, true);
  } finally {
    document.body.dataset.ready = "true";
  }
}

/* ---------- slide page ---------- */

function renderSummary(slide) {
  document.getElementById("slide-title").textContent = `${slide.external_id} · ${slide.patient_pseudonym}`;
  document.getElementById("slide-status").textContent = slide.status;
  document.getElementById("signature").textContent = slide.signed_by
    ? `signed by ${slide.signed_by} at ${slide.signed_at.slice(0, 16).replace("T", " ")}`
    : "";
  const flags = document.getElementById("flags");
  flags.replaceChildren(
    ...slide.flags.pathological.map((code) => el("span", { "data-flag": code, text: `${code} present` })),
  );
  if (slide.flags.needs_review) {
    flags.append(el("span", { "data-flag": "needs_review", text: `${slide.flags.needs_review} to review` }));
  }
  const sign = document.getElementById("sign");
  sign.disabled = slide.status !== "completed" || slide.needs_review > 0;
  sign.title =
    slide.status === "signed"
      ? "already signed"
      : slide.status !== "completed"
        ? `the slide is ${slide.status}`
        : slide.needs_review
          ? `${slide.needs_review} cells still need review`
          : "sign the report";
  document.getElementById("fhir-link").href = `/v1/slides/${slide.id}/fhir`;

  const rows = document.getElementById("diff-rows");
  const diff = slide.differential;
  const share = (code) => {
    const percent = diff.percent[code];
    if (percent !== null && percent !== undefined) {
      const [low, high] = diff.percent_interval[code] || [];
      return `${percent.toFixed(1)} (${low}–${high})`;
    }
    const per100 = diff.per_100_leukocytes[code];
    return per100 === null || per100 === undefined ? "—" : `${per100.toFixed(1)} /100 WBC`;
  };
  rows.replaceChildren(
    ...slide.classes.map((code) => {
      const percent = diff.percent[code];
      return el(
        "tr",
        { "data-testid": `diff-${code}`, "data-count": diff.counts[code] ?? 0, "data-percent": percent ?? "" },
        el("td", { text: code, title: slide.class_names[code] || code }),
        el("td", { text: slide.class_names[code] || "" }),
        el("td", { class: "num", text: diff.counts[code] ?? 0 }),
        el("td", { class: "num", text: share(code) }),
      );
    }),
  );
  const apart = slide.apart_classes;
  const found = slide.flags;
  const flagged = [
    ...found.pathological.map((code) => `${code} present`),
    ...found.abnormal.map((each) => each.text),
  ];
  document.getElementById("diff-note").textContent =
    `${diff.leukocytes} leukocytes (${slide.leukocyte_classes.join(", ")}) are the denominator, ` +
    `each percentage with its 95% interval; ${apart.join(" and ")} are counted apart. ` +
    `${diff.poor_quality} poor quality, ${diff.pending} pending. ` +
    (flagged.length ? `Flags: ${flagged.join("; ")}.` : "No flags.") +
    (found.proportions_assessed ? "" : ` Proportions are not flagged below a full differential.`);
  document.getElementById("queue-count").textContent = `(${slide.needs_review})`;
}

function className(code) {
  const name = state.slide && state.slide.class_names[code];
  return name ? `${code} — ${name}` : code || "—";
}

function selectedCell() {
  if (state.focusId) return state.cells.find((cell) => cell.id === state.focusId) || null;
  return state.queue[state.selected] || null;
}

function renderReviewButtons(slide) {
  const container = document.getElementById("review-buttons");
  const buttons = slide.classes.map((code, i) =>
    el("button", { type: "button", "data-testid": `reclass-${code}`, title: slide.class_names[code] || code,
      onclick: () => act("reclassify", code) },
      el("kbd", { text: CLASS_KEYS[i] || "" }), ` ${code}`),
  );
  container.replaceChildren(
    el("button", { type: "button", "data-testid": "action-confirm", onclick: () => act("confirm") },
      el("kbd", { text: "c" }), " confirm"),
    el("button", { type: "button", "data-testid": "action-poor", onclick: () => act("poor_quality") },
      el("kbd", { text: "p" }), " poor quality"),
    el("button", { type: "button", "data-testid": "action-undo", onclick: () => undo(),
      disabled: state.undo.length === 0 ? "" : null, title: "undo the last review made on this page" },
      el("kbd", { text: "u" }), " undo"),
    ...buttons,
  );
  document.getElementById("hotkeys").textContent =
    "Keys: " + slide.classes.map((code, i) => `${CLASS_KEYS[i] || ""} ${code} (${slide.class_names[code] || code})`).join(", ") +
    "; c confirm; p poor quality; u undo; ←/→, ↑/↓ or j/k move. Click a gallery cell to review it.";
}

function renderQueue() {
  const queue = document.getElementById("queue");
  if (state.selected >= state.queue.length) state.selected = Math.max(0, state.queue.length - 1);
  queue.replaceChildren(
    ...state.queue.map((cell, i) => {
      const img = el("img", { alt: cell.class || "pending" });
      showImage(img, cell.images.stained || cell.images.dic);
      return el(
        "div",
        {
          class: "queue-cell",
          "data-testid": "queue-cell",
          "data-cell-id": cell.id,
          "data-class": cell.class || "",
          "aria-selected": i === state.selected ? "true" : "false",
          onclick: () => select(i),
        },
        img,
      );
    }),
  );
  document.getElementById("queue-empty").hidden = state.queue.length > 0;
  renderSelected();
}

async function renderSelected() {
  const target = document.getElementById("selected");
  const cell = selectedCell();
  if (!cell) {
    target.replaceChildren();
    return;
  }
  target.dataset.cellId = cell.id;
  const figures = VIEWS.map((kind) => {
    const img = el("img", { alt: kind });
    showImage(img, cell.images[kind]);
    const caption = el("figcaption", { text: kind === "heatmap" ? "uncertainty heat map" : kind });
    if (kind === "heatmap") {
      caption.append(
        el("div", { class: "magma-scale", "data-testid": "heatmap-scale", title: "colour scale of the heat map" }),
        el("div", { class: "scale-labels" }, el("span", { text: "0" }), el("span", { text: "this cell's largest variance" })),
      );
    }
    return el("figure", {}, img, caption);
  });
  const details = el("dl", {});
  target.replaceChildren(...figures, details);
  try {
    const full = await api(`/v1/cells/${cell.id}`);
    if (target.dataset.cellId !== cell.id) return;
    const top = Object.entries(full.probabilities || {})
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([code, p]) => `${code} ${(100 * p).toFixed(0)}%`)
      .join(", ");
    const rows = [
      ["class", className(full.class)],
      ["predicted", className(full.predicted_class)],
      ["why in review", reasonsText(full.review_reasons)],
      ["δ confidence", full.confidence?.toFixed(2) ?? "—"],
      ["γ uncertainty", full.uncertainty?.toFixed(3) ?? "—"],
      ["probabilities", top || "—"],
    ];
    details.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  } catch (error) {
    say(error.message, true);
  }
}

const REASONS = {
  "low-delta": "the stain may be unreliable (δ under the model's review threshold)",
  "uncertain-class": "the class is uncertain (top probability under the review setting)",
  pathological: "a pathological class is always checked",
};

function reasonsText(reasons) {
  return (reasons || []).map((r) => REASONS[r] || r).join("; ") || "—";
}

function select(index) {
  state.focusId = null;
  markFocus();
  if (!state.queue.length) return;
  state.selected = Math.min(Math.max(index, 0), state.queue.length - 1);
  for (const [i, node] of document.querySelectorAll('[data-testid="queue-cell"]').entries()) {
    node.setAttribute("aria-selected", i === state.selected ? "true" : "false");
    if (i === state.selected) node.scrollIntoView({ block: "nearest" });
  }
  renderSelected();
}

function renderGallery(cells) {
  const groups = new Map();
  const pathological = state.slide.flags.pathological;  // pathological cells first
  const order = [...pathological, ...state.slide.classes.filter((c) => !pathological.includes(c)), "poor_quality", "pending"];
  for (const cell of cells) {
    const group = cell.review_status === "poor_quality" ? "poor_quality" : cell.class || "pending";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(cell);
  }
  const names = [...order.filter((g) => groups.has(g)), ...[...groups.keys()].filter((g) => !order.includes(g))];
  document.getElementById("gallery").replaceChildren(
    ...names.map((group) =>
      el(
        "div",
        { class: "group", "data-testid": `gallery-group-${group}` },
        el("h3", { text: `${group.replace("_", " ")} (${groups.get(group).length})` }),
        el("div", { class: "cells" }, ...groups.get(group).map(galleryCell)),
      ),
    ),
  );
}

function focus(cell) {
  state.focusId = cell.id;
  markFocus();
  for (const node of document.querySelectorAll('[data-testid="queue-cell"]')) node.setAttribute("aria-selected", "false");
  renderSelected();
}

function markFocus() {
  for (const node of document.querySelectorAll('[data-testid="gallery-cell"]')) {
    node.setAttribute("aria-selected", node.dataset.cellId === state.focusId ? "true" : "false");
  }
}

function galleryCell(cell) {
  const img = el("img", { alt: cell.class || "pending", "data-view": state.view });
  const current = () => cell.images[state.view] || cell.images.stained || cell.images.dic;
  showImage(img, current());
  return el(
    "div",
    {
      class: "gallery-cell",
      "data-testid": "gallery-cell",
      "data-cell-id": cell.id,
      "data-class": cell.class || "",
      "data-review-status": cell.review_status,
      "aria-selected": cell.id === state.focusId ? "true" : "false",
      onclick: () => focus(cell),
      title: `${className(cell.class)} · δ ${cell.confidence?.toFixed(2) ?? "—"} · γ ${cell.uncertainty?.toFixed(3) ?? "—"}` +
        (cell.review_reasons?.length ? ` · in review: ${reasonsText(cell.review_reasons)}` : ""),
      onmouseenter: () => showImage(img, cell.images.dic || current()),
      onmouseleave: () => showImage(img, current()),
    },
    img,
  );
}

async function loadSlide() {
  say("");
  try {
    if (!(await whoami())) return;
    const [slide, queue, cells] = await Promise.all([
      api(`/v1/slides/${state.slideId}`),
      api(`/v1/slides/${state.slideId}/cells?review_status=needs_review`),
      api(`/v1/slides/${state.slideId}/cells`),
    ]);
    state.slide = slide;
    state.queue = queue;
    state.cells = cells;
    renderSummary(slide);
    renderReviewButtons(slide);
    renderQueue();
    renderGallery(cells);
  } catch (error) {
    say(error.message, true);
  } finally {
    document.body.dataset.ready = "true";
  }
}

/* Actions run one after the other: a key pressed while one is in flight applies to
   the cell selected once it has finished (the next one in the queue). */
function act(action, newClass = null) {
  state.chain = state.chain.then(() => runAction(action, newClass));
  return state.chain;
}

async function runAction(action, newClass) {
  const cell = selectedCell();
  if (!cell) return;
  document.body.dataset.busy = "true";
  try {
    const body = newClass ? { action, new_class: newClass } : { action };
    const result = await api(`/v1/cells/${cell.id}/reviews`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (action === "undo") state.undo.pop();
    else state.undo.push(cell.id);
    await loadSlide();
    say(`Cell ${cell.id.slice(0, 8)}: ${result.review_status.replace("_", " ")} as ${className(result.class)}.`);
  } catch (error) {
    say(error.message, true);
  } finally {
    document.body.dataset.busy = "false";
  }
}

/* Undo the last review made on this page: the cell is back in the state before it. */
function undo() {
  state.chain = state.chain.then(async () => {
    const cellId = state.undo[state.undo.length - 1];
    if (!cellId) return;
    const focused = state.focusId;
    state.focusId = cellId;
    try {
      await runAction("undo", null);
    } finally {
      state.focusId = focused;
    }
  });
  return state.chain;
}

function reportPreview(slide) {
  const diff = slide.differential;
  const counted = slide.classes
    .filter((code) => (diff.counts[code] || 0) > 0)
    .map((code) => `${className(code)}: ${diff.counts[code]}` + (diff.percent[code] != null ? ` (${diff.percent[code].toFixed(1)}%)` : ""));
  const found = [...slide.flags.pathological.map((code) => `${code} present`), ...slide.flags.abnormal.map((each) => each.text)];
  return (
    `Sign the report of ${slide.external_id}? It will report, final and unchangeable:\n` +
    `${counted.join("\n")}\n` +
    `${diff.poor_quality} poor quality; flags: ${found.join("; ") || "none"}.`
  );
}

async function sign() {
  if (!window.confirm(reportPreview(state.slide))) {
    say("Not signed.");
    return;
  }
  try {
    const slide = await api(`/v1/slides/${state.slideId}/sign`, { method: "POST" });
    await loadSlide();
    say(`Signed by ${slide.signed_by}.`);
  } catch (error) {
    say(error.message, true);
  }
}

function onKey(event) {
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
  const classes = state.slide ? state.slide.classes : [];
  const key = event.key;
  let handled = true;
  const slot = CLASS_KEYS.indexOf(key);
  if (slot >= 0 && slot < classes.length) act("reclassify", classes[slot]);
  else if (key === "c") act("confirm");
  else if (key === "p") act("poor_quality");
  else if (key === "u") undo();
  else if (key === "ArrowRight" || key === "ArrowDown" || key === "j") select(state.selected + 1);
  else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") select(state.selected - 1);
  else handled = false;
  if (handled) event.preventDefault();
}

function setupSlidePage() {
  state.slideId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  document.getElementById("sign").addEventListener("click", sign);
  document.getElementById("fhir-link").addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const report = await api(`/v1/slides/${state.slideId}/fhir`);
      const url = URL.createObjectURL(new Blob([JSON.stringify(report, null, 2)], { type: "application/json" }));
      window.open(url, "_blank");
    } catch (error) {
      say(error.message, true);
    }
  });
  document.getElementById("view-toggle").addEventListener("click", (event) => {
    state.view = VIEWS[(VIEWS.indexOf(state.view) + 1) % VIEWS.length];
    event.currentTarget.textContent = `Showing: ${state.view}`;
    event.currentTarget.blur();
    loadSlide();
  });
  document.addEventListener("keydown", onKey);
  start(loadSlide);
}

if (document.body.dataset.page === "slide") setupSlidePage();
else start(loadIndex);
