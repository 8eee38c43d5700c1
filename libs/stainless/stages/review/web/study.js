/*
 * Stainless study page (after common.js): an expert labels the stained cells of a blinded
 * validation study by keyboard; a study lead sees each expert's progress and the report.
 *
 * The expert sees one stained cell at a time, in the expert's own order, and nothing else
 * about it. A label is shown at once and the next unlabelled cell comes up while the label
 * is saved; keys pressed meanwhile are saved in order. A label that fails to save is said
 * and its cell shown again.
 *
 * Hotkeys (ignored while typing in an input):
 *   1-9, 0, -, =   the n-th class of the study (as the buttons show)
 *   p              poor quality: the image cannot be classified
 *   ArrowRight/j   the next cell; ArrowLeft/k the previous one
 *
 * Stable test hooks (data-testid), besides those of common.js: study-title,
 * study-progress (data-done, data-total), study-cell (data-item-id, data-label),
 * study-buttons, label-<CODE> (aria-pressed on the cell's label), study-done,
 * study-experts, study-expert (data-expert, data-labelled), study-report-link, and in
 * the report shown below it: summary, agreement, kappa (data-first, data-second,
 * data-kappa), confusion (data-rater; cells with data-reference, data-label, data-count),
 * poor-quality.
 * <body>: data-ready="true" once loaded, data-busy="true" while labels are being saved.
 */
"use strict";

const POOR_QUALITY = "PQ";
const study = { id: null, data: null, position: 0, chain: Promise.resolve(), pending: 0 };

function hasRole(me, ...roles) {
  return me.role.split("+").some((role) => roles.includes(role));
}

function labelled() {
  return study.data.items.filter((item) => item.label).length;
}

function keyOf(code) {
  if (code === POOR_QUALITY) return "p";
  const classes = study.data.classes.filter((entry) => entry.code !== POOR_QUALITY);
  return CLASS_KEYS[classes.findIndex((entry) => entry.code === code)] || "";
}

function renderButtons() {
  const target = document.getElementById("study-buttons");
  target.replaceChildren(
    ...study.data.classes.map((entry) =>
      el(
        "button",
        {
          type: "button",
          "data-testid": `label-${entry.code}`,
          onclick: () => label(entry.code),
        },
        el("kbd", { text: keyOf(entry.code) }),
        ` ${entry.code} — ${entry.name}`,
      ),
    ),
  );
}

function render() {
  const items = study.data.items;
  const done = labelled();
  const progress = document.getElementById("progress");
  progress.textContent = `${done} of ${items.length} cells labelled`;
  progress.dataset.done = String(done);
  progress.dataset.total = String(items.length);
  document.getElementById("study-done").hidden = done < items.length;
  const item = items[study.position];
  const img = document.getElementById("study-cell");
  img.dataset.itemId = item ? item.id : "";
  img.dataset.label = item && item.label ? item.label : "";
  showImage(img, item ? item.image : null);
  document.getElementById("study-position").textContent = item ? `cell ${study.position + 1} of ${items.length}` : "";
  for (const button of document.querySelectorAll("#study-buttons button")) {
    const code = button.dataset.testid.slice("label-".length);
    button.setAttribute("aria-pressed", String(Boolean(item && item.label === code)));
  }
  const next = items[study.position + 1];
  if (next) imageUrl(next.image); // fetched ahead of the key press
}

/* The first unlabelled cell after ``from`` (wrapping), or ``from`` itself when none is left. */
function nextUnlabelled(from) {
  const items = study.data.items;
  for (let step = 1; step <= items.length; step++) {
    const index = (from + step) % items.length;
    if (!items[index].label) return index;
  }
  return from;
}

function label(code) {
  const item = study.data.items[study.position];
  if (!item) return;
  const previous = item.label;
  const position = study.position;
  item.label = code;
  study.position = nextUnlabelled(position);
  render();
  study.pending += 1;
  document.body.dataset.busy = "true";
  study.chain = study.chain.then(async () => {
    try {
      await api(`/v1/studies/${study.id}/items/${item.id}/label`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ label: code }),
      });
    } catch (error) {
      item.label = previous;
      study.position = position;
      render();
      say(`The label of cell ${position + 1} was not saved: ${error.message}`, true);
    } finally {
      study.pending -= 1;
      if (!study.pending) document.body.dataset.busy = "false";
    }
  });
}

function move(step) {
  const count = study.data.items.length;
  study.position = Math.min(count - 1, Math.max(0, study.position + step));
  render();
}

function onKey(event) {
  if (!study.data || event.target.closest("input, textarea, select")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const classes = study.data.classes.filter((entry) => entry.code !== POOR_QUALITY);
  const slot = CLASS_KEYS.indexOf(event.key);
  let handled = true;
  if (slot >= 0 && slot < classes.length) label(classes[slot].code);
  else if (event.key === "p") label(POOR_QUALITY);
  else if (event.key === "ArrowRight" || event.key === "j") move(1);
  else if (event.key === "ArrowLeft" || event.key === "k") move(-1);
  else handled = false;
  if (handled) event.preventDefault();
}

async function loadLead() {
  const studies = await api("/v1/studies");
  const found = studies.find((entry) => entry.id === study.id);
  if (!found) throw new Error(`no study ${study.id}`);
  document.getElementById("study-title").textContent = `${found.name} · ${found.items} cells`;
  document.getElementById("expert-rows").replaceChildren(
    ...Object.entries(found.labelled).map(([expert, count]) =>
      el(
        "tr",
        { "data-testid": "study-expert", "data-expert": expert, "data-labelled": count },
        el("td", { text: expert }),
        el("td", { class: "num", text: `${count} of ${found.items}` }),
      ),
    ),
  );
  document.getElementById("lead").hidden = false;
}

/* The report's body shown in the page (its own style is the page's: the policy allows no
   inline style here). */
async function showReport() {
  try {
    const response = await fetch(`/v1/studies/${study.id}/report.html`, { headers: headers() });
    if (!response.ok) throw new Error(`${response.status}: ${(await response.json()).detail}`);
    const report = new DOMParser().parseFromString(await response.text(), "text/html");
    document.getElementById("report").replaceChildren(...report.body.childNodes);
  } catch (error) {
    say(error.message, true);
  }
}

async function loadStudy() {
  say("");
  document.getElementById("labelling").hidden = true;
  document.getElementById("lead").hidden = true;
  study.data = null;
  try {
    const me = await whoami();
    if (!me) return;
    if (hasRole(me, "reviewer", "admin")) {
      study.data = await api(`/v1/studies/${study.id}/items`);
      document.getElementById("study-title").textContent = `${study.data.name} · ${me.name}`;
      study.position = study.data.items.findIndex((item) => !item.label);
      if (study.position < 0) study.position = 0;
      renderButtons();
      render();
      document.getElementById("labelling").hidden = false;
    }
    if (hasRole(me, "scientist", "admin")) await loadLead();
  } catch (error) {
    say(error.message, true);
  } finally {
    document.body.dataset.ready = "true";
  }
}

study.id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
document.addEventListener("keydown", onKey);
document.getElementById("report-link").addEventListener("click", showReport);
start(loadStudy);
