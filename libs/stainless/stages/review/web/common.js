/*
 * Stainless pages, shared part (loaded before app.js or study.js): vanilla JS, no build
 * step. Talks to the results API with a credential kept in sessionStorage
 * ("stainless.apiKey": gone when the tab closes, never in localStorage): an API key, sent
 * as X-API-Key, or the ID token of a sign-in at the hospital's identity provider, sent as
 * Authorization: Bearer. "Sign out" forgets it at once, and so does a 401 (leave it empty
 * when the server sets an anonymous role).
 *
 * Sign-in (offered when /v1/auth/config names a provider): the authorization code flow
 * with PKCE (S256). The state, nonce, code verifier and the page to return to wait in
 * sessionStorage ("stainless.oidcLogin") while the browser is at the provider; the
 * provider sends it back to the index page (redirect URI: the origin + "/"), which checks
 * the state, exchanges the code at the token endpoint, checks the ID token's nonce and
 * removes code and state from the address.
 *
 * Stable test hooks (data-testid) on every page: api-key (input), api-key-save,
 * api-key-clear, api-key-form, whoami, message, oidc-login (shown when a provider is set
 * and nobody is signed in).
 */
"use strict";

const KEY_STORAGE = "stainless.apiKey";
const LOGIN_STORAGE = "stainless.oidcLogin";
const auth = { oidc: null }; // {issuer, client_id, scopes} from /v1/auth/config, or null
const blobs = new Map(); // image path -> Promise of a blob URL
const CLASS_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "-", "="]; // up to twelve classes

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
  blobs.clear();
  showSignIn(false);
}

function say(text, isError = false) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.classList.toggle("error", Boolean(isError));
}

/* A request answered after the credential changed (a key saved while the page was still
   loading without one) is stale: error.stale is set, and the answer forgets nothing. */
async function api(path, options = {}) {
  const sent = credential();
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const stale = sent !== credential();
    if (response.status === 401 && sent && !stale) forgetCredential();
    const detail = body && body.detail ? body.detail : response.statusText;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    error.stale = stale;
    throw error;
  }
  return body;
}

/* <img> cannot send the key header: images are fetched and shown as blob URLs. */
async function imageUrl(path) {
  if (!blobs.has(path)) {
    blobs.set(
      path,
      fetch(path, { headers: headers() }).then((response) =>
        response.ok ? response.blob().then((blob) => URL.createObjectURL(blob)) : "",
      ),
    );
  }
  return blobs.get(path);
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
    blobs.clear();
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
    if (error.stale) return null; // the load that follows the new credential says who
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

/* Loads the sign-in options, finishes a sign-in under way, then runs the page. The key
   form works from the first moment: a key saved before the page has loaded is kept. */
async function start(load) {
  setupKeyForm(load);
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
  await load();
  if (failure) say(failure, true);
}
