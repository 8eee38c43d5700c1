/*
 * Stainless review page: vanilla JS, no build step. Talks to the results API
 * with a credential kept in sessionStorage ("stainless.apiKey": gone when the tab closes,
 * never in localStorage): an API key, sent as X-API-Key, or the ID token of a sign-in at
 * the hospital's identity provider, sent as Authorization: Bearer. "Sign out" forgets it
 * at once, and so does a 401 (leave it empty when the server sets an anonymous role).
 *
 * Sign-in (offered when /v1/auth/config names a provider): the authorization code flow
 * with PKCE (S256). The state, nonce, code verifier and the page to return to wait in
 * sessionStorage ("stainless.oidcLogin") while the browser is at the provider; the
 * provider sends it back to the index page (redirect URI: the origin + "/"), which checks
 * the state, exchanges the code at the token endpoint, checks the ID token's nonce and
 * removes code and state from the address.
 *
 * Stable test hooks (data-testid):
 *   both pages   api-key (input), api-key-save, api-key-clear, api-key-form, whoami,
 *                message, oidc-login (shown when a provider is set and nobody is signed in)
 *   index page   slide-list (table), slide-row (data-slide-id, data-status),
 *                slide-link (link to the slide page)
 *   slide page   slide-title, slide-status, signature, flags, sign (button),
 *                fhir-link, diff-table, diff-<CLASS> (one row per class, e.g.
 *                diff-SNE, with data-count and data-percent), needs-review-count,
 *                queue, queue-cell (data-cell-id, data-class, aria-selected),
 *                queue-empty, selected-cell, review-buttons, action-confirm,
 *                action-poor, reclass-<CLASS>, hotkeys, view-toggle, gallery,
 *                gallery-group-<CLASS> (also gallery-group-pending and
 *                gallery-group-poor_quality), gallery-cell (data-cell-id,
 *                data-class, data-review-status)
 *
 * Hotkeys on the slide page (ignored while typing in an input):
 *   1-7                  reclassify the selected queue cell as the n-th class
 *                        in CellClass order: 1 ART, 2 BA, 3 EO, 4 LY, 5 MO,
 *                        6 SNE, 7 SMU (the legend on the page comes from the API)
 *   c                    confirm the selected cell's class
 *   p                    mark the selected cell poor quality
 *   ArrowRight/ArrowDown/j   select the next queue cell
 *   ArrowLeft/ArrowUp/k      select the previous queue cell
 * A reviewed cell leaves the queue; the selection moves to the cell after it.
 * Keys pressed while a review is in flight are applied in order afterwards.
 *
 * <body> attributes for tests: data-ready="true" once the page has loaded
 * (it stays true across reloads), data-busy="true" while a review is sent.
 */
"use strict";

const KEY_STORAGE = "stainless.apiKey";
const LOGIN_STORAGE = "stainless.oidcLogin";
const auth = { oidc: null }; // {issuer, client_id, scopes} from /v1/auth/config, or null
const VIEWS = ["stained", "dic", "heatmap"];
const CLASS_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "-", "="]; // the twelve clinical classes
const state = {
  slideId: null,
  slide: null,
  queue: [],
  selected: 0,
  view: "stained",
  chain: Promise.resolve(),
  blobs: new Map(),
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function credential() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

/* A token has three dot-separated parts; an API key starts with srk_. */
function isToken(value) {
  return value.split(".").length === 3 && !value.startsWith("srk_");
}

function headers(extra = {}) {
  const value = credential();
  if (!value) return extra;
  return isToken(value) ? { Authorization: `Bearer ${value}`, ...extra } : { "X-API-Key": value, ...extra };
}

function showSignIn(signedIn) {
  document.getElementById("oidc-login").hidden = !auth.oidc || signedIn;
}

/* A refused credential is dropped: the sign-in choices show again. */
function forgetCredential() {
  sessionStorage.removeItem(KEY_STORAGE);
  state.blobs.clear();
  showSignIn(false);
}

function say(text, isError = false) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.classList.toggle("error", Boolean(isError));
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    if (response.status === 401 && credential()) forgetCredential();
    const detail = body && body.detail ? body.detail : response.statusText;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/* <img> cannot send the key header: images are fetched and shown as blob URLs. */
async function imageUrl(path) {
  if (!state.blobs.has(path)) {
    state.blobs.set(
      path,
      fetch(path, { headers: headers() }).then((response) =>
        response.ok ? response.blob().then((blob) => URL.createObjectURL(blob)) : "",
      ),
    );
  }
  return state.blobs.get(path);
}

function showImage(img, path) {
  img.dataset.src = path || "";
  if (!path) {
    img.removeAttribute("src");
    return;
  }
  imageUrl(path).then((url) => {
    if (img.dataset.src === path && url) img.src = url;
  });
}

function setupKeyForm(onChange) {
  const input = document.getElementById("api-key");
  input.value = isToken(credential()) ? "" : credential();
  localStorage.removeItem(KEY_STORAGE); // where earlier versions kept it
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    state.blobs.clear();
    input.blur();
    onChange();
  });
  document.getElementById("key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(LOGIN_STORAGE);
    input.value = "";
    forgetCredential();
    onChange();
  });
}

/* Who the credential is; null (and the reason said) when it is nobody. */
async function whoami() {
  const target = document.getElementById("whoami");
  try {
    const me = await api("/v1/me");
    target.textContent = `${me.name} (${me.role})`;
    showSignIn(true);
    return me;
  } catch (error) {
    target.textContent = error.status === 401 ? (auth.oidc ? "not signed in" : "no valid key") : "";
    showSignIn(false);
    say(error.message, true);
    return null;
  }
}

/* ---------- sign-in at the identity provider (authorization code + PKCE) ---------- */

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

function randomText() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

function redirectUri() {
  return `${location.origin}/`;
}

function tokenClaims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const padded = part.padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

async function discovery() {
  const response = await fetch(`${auth.oidc.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`the identity provider answered ${response.status}`);
  return response.json();
}

async function signIn() {
  try {
    if (!crypto.subtle) throw new Error("the page must be served over https");
    const provider = await discovery();
    const login = { state: randomText(), nonce: randomText(), verifier: randomText(), back: location.pathname };
    const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(login.verifier)));
    sessionStorage.setItem(LOGIN_STORAGE, JSON.stringify(login));
    const target = new URL(provider.authorization_endpoint);
    const query = {
      response_type: "code",
      client_id: auth.oidc.client_id,
      redirect_uri: redirectUri(),
      scope: auth.oidc.scopes,
      state: login.state,
      nonce: login.nonce,
      code_challenge: challenge,
      code_challenge_method: "S256",
    };
    for (const [name, value] of Object.entries(query)) target.searchParams.set(name, value);
    location.assign(target.toString());
  } catch (error) {
    say(`Sign-in failed: ${error.message}`, true);
  }
}

/* Back from the provider (?code&state or ?error&state): keep the ID token. True when the
   browser goes on to the page where the sign-in began. */
async function finishSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has("state") || !(params.has("code") || params.has("error"))) return false;
  const login = JSON.parse(sessionStorage.getItem(LOGIN_STORAGE) || "null");
  sessionStorage.removeItem(LOGIN_STORAGE);
  history.replaceState(null, "", location.pathname); // code and state leave the address
  if (!login || params.get("state") !== login.state) throw new Error("the answer is not for this tab's sign-in");
  if (params.has("error")) throw new Error(params.get("error_description") || params.get("error"));
  if (!auth.oidc) throw new Error("no identity provider is set");
  const provider = await discovery();
  const response = await fetch(provider.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: auth.oidc.client_id,
      code_verifier: login.verifier,
    }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.id_token) throw new Error(`the identity provider refused: ${body.error || response.status}`);
  if (tokenClaims(body.id_token).nonce !== login.nonce) throw new Error("the ID token is not this sign-in's");
  sessionStorage.setItem(KEY_STORAGE, body.id_token);
  const back = /^\/(?!\/)/.test(login.back) ? login.back : "/";
  if (back === location.pathname) return false;
  location.replace(back);
  return true;
}

/* Loads the sign-in options, finishes a sign-in under way, then runs the page. */
async function start(load) {
  try {
    const answer = await fetch("/v1/auth/config");
    auth.oidc = answer.ok ? (await answer.json()).oidc : null;
  } catch {
    auth.oidc = null;
  }
  document.getElementById("oidc-login").addEventListener("click", signIn);
  let failure = "";
  try {
    if (await finishSignIn()) return;
  } catch (error) {
    failure = `Sign-in failed: ${error.message}`;
  }
  setupKeyForm(load);
  await load();
  if (failure) say(failure, true);
}

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
  const counted = new Set([...slide.leukocyte_classes, ...Object.keys(diff.per_100_leukocytes)]);
  const apart = slide.classes.filter((code) => !counted.has(code));
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
    ...buttons,
  );
  document.getElementById("hotkeys").textContent =
    "Keys: " + slide.classes.map((code, i) => `${CLASS_KEYS[i] || ""} ${code} (${slide.class_names[code] || code})`).join(", ") +
    "; c confirm; p poor quality; ←/→, ↑/↓ or j/k move.";
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
  const cell = state.queue[state.selected];
  if (!cell) {
    target.replaceChildren();
    return;
  }
  target.dataset.cellId = cell.id;
  const figures = VIEWS.map((kind) => {
    const img = el("img", { alt: kind });
    showImage(img, cell.images[kind]);
    return el("figure", {}, img, el("figcaption", { text: kind }));
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
      ["class", full.class],
      ["predicted", full.predicted_class],
      ["δ confidence", full.confidence?.toFixed(3) ?? "—"],
      ["γ uncertainty", full.uncertainty?.toFixed(3) ?? "—"],
      ["probabilities", top || "—"],
    ];
    details.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  } catch (error) {
    say(error.message, true);
  }
}

function select(index) {
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
      title: `${cell.class || "pending"} · δ ${cell.confidence ?? "—"} · γ ${cell.uncertainty ?? "—"}`,
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
  const cell = state.queue[state.selected];
  if (!cell) return;
  document.body.dataset.busy = "true";
  try {
    const body = newClass ? { action, new_class: newClass } : { action };
    const result = await api(`/v1/cells/${cell.id}/reviews`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    await loadSlide();
    say(`Cell ${cell.id.slice(0, 8)}: ${result.review_status} as ${result.class}.`);
  } catch (error) {
    say(error.message, true);
  } finally {
    document.body.dataset.busy = "false";
  }
}

async function sign() {
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
