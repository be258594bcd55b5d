/* The device's own page (served by edge/api/page.py): live view, status, detections, threshold and
   the model store, over the device's REST API (docs/rest-api.md). Plain script: no framework, no
   build, nothing from the internet.

   Without the token the page is read-only. The token typed in #token is kept in sessionStorage (this
   tab only) and sent as `Authorization: Bearer`; GET /mqtt, which always needs it and changes
   nothing, tells whether it is right. The live view reads /stream with fetch() (see startLive). Text
   from the device is only ever set as textContent. */
"use strict";

const TOKEN_KEY = "deeplens-token";
const STATUS_MS = 2000, DETECTIONS_MS = 500, LIVE_RETRY_MS = 1000, LIVE_SIZE = 960;
const READ_TIMEOUT_MS = 5000, CHANGE_TIMEOUT_MS = 120000;  // an activate answers once the model serves
const BUSY_SWAP = ["loading", "warming", "watching"];
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  tokenChecked: false,
  tokenOk: false,          // the device accepted the token: controls on
  readable: true,          // reads answer (false while they need a token we lack or got wrong)
  down: false,             // the last /status failed: the banner shows
  busy: false,             // a change is in flight
  swapBusy: false,         // the device is loading, warming or watching a model
  dragging: false,         // a slider is held: refreshes leave the sliders alone
  pending: 0,              // threshold changes not answered yet
  thresholdChain: Promise.resolve(),  // they go one after another: the device ends at the last one
  classes: [],
  threshold: {default: null, per_class: {}},
  liveMode: null,          // "stream" while reads answer, else null
  liveGen: 0,              // bumped to stop the running stream reader
  liveAbort: null,
  modelsKey: "",
  refreshing: null,        // the refresh in flight
  again: false,            // one more refresh is due after it
};

class HttpError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

function authHeaders() {
  return state.token ? {Authorization: `Bearer ${state.token}`} : {};
}

function timeout(ms) {
  return AbortSignal.timeout ? AbortSignal.timeout(ms) : undefined;
}

/* One REST call: the JSON answer, HttpError for an error answer, TypeError/AbortError when the device
   does not answer. */
async function api(method, path, body, ms = READ_TIMEOUT_MS) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, cache: "no-store", signal: timeout(ms),
                                      body: body === undefined ? undefined : JSON.stringify(body)});
  const doc = await response.json().catch(() => null);
  if (!response.ok) {
    throw new HttpError(response.status, (doc && doc.error) || {code: `http_${response.status}`});
  }
  return doc;
}

const refused = (err) => err instanceof HttpError && (err.status === 401 || err.status === 403);

function say(text, kind = "ok") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

// -- token -----------------------------------------------------------------------------------------
function showTokenState(text, kind = "") {
  $("token-state").textContent = text;
  $("token-state").className = kind;
}

async function checkToken() {
  if (!state.token) {
    state.tokenOk = false;
    showTokenState("read-only: enter the device token to change settings");
  } else {
    try {
      await api("GET", "/mqtt");
      state.tokenOk = true;
    } catch (err) {
      if (err instanceof HttpError && err.code === "no_broker") {
        state.tokenOk = true;  // the token passed; the device just runs without MQTT
      } else if (err instanceof HttpError && err.code === "no_token_configured") {
        state.tokenOk = false;
        showTokenState("the device has no token configured: changes are off", "error");
      } else if (refused(err)) {
        tokenWrong();
      } else {
        return;  // not answering: check again on the next refresh
      }
    }
    if (state.tokenOk) showTokenState("token accepted: controls on", "good");
  }
  state.tokenChecked = true;
  renderControls();
}

function tokenWrong() {
  state.tokenOk = false;
  showTokenState(state.token ? "the token is wrong" : "this needs the device token", "error");
  renderControls();
}

function useToken(token) {
  state.token = token.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = state.token;
  state.tokenChecked = false;
  state.tokenOk = false;
  state.modelsKey = "";
  say("");
  showTokenState(state.token ? "checking the token…" : "");
  refresh();
}

// -- status, models, threshold: every STATUS_MS --------------------------------------------------
/* One refresh at a time; a refresh asked for during one runs right after it (so it sees a change
   that has just been made). */
function refresh() {
  if (state.refreshing) {
    state.again = true;
    return state.refreshing;
  }
  state.refreshing = (async () => {
    do {
      state.again = false;
      try {
        await refreshOnce();
      } catch (err) {
        console.error("refresh failed", err);  // an unexpected document: try again on the next tick
      }
    } while (state.again);
  })().finally(() => { state.refreshing = null; });
  return state.refreshing;
}

async function refreshOnce() {
  let status;
  try {
    status = await api("GET", "/status");
  } catch (err) {
    if (refused(err)) {
      readsRefused(err);
    } else if (!(err instanceof HttpError) || err.status >= 500) {
      setDown(true);
    }
    return;
  }
  setDown(false);
  state.readable = true;
  $("auth-needed").hidden = true;
  showStatus(status);
  if (!state.tokenChecked) await checkToken();
  try {
    showModels(await api("GET", "/models"));
  } catch (err) {
    if (refused(err)) readsRefused(err);
  }
  startLive();
}

function readsRefused(err) {
  setDown(false);
  state.readable = false;
  const note = $("auth-needed");
  if (err.code === "no_token_configured") {
    showTokenState("the device has no token configured", "error");
    note.textContent = `This device protects reads but has no token: ${err.message}`;
  } else {
    if (state.token) tokenWrong();
    else showTokenState("this device protects reads: enter its token", "error");
    note.textContent = state.token ? "the token is wrong: this device protects reads; enter its token above"
      : "This device protects reads: enter its token above to see it.";
  }
  if (note.hidden) {
    note.hidden = false;
    $("token").focus();
  }
  startLive();
  renderControls();
}

function setDown(down) {
  state.down = down;
  $("banner").hidden = !down;
  document.body.classList.toggle("down", down);
}

function showStatus(doc) {
  $("device-id").textContent = doc.device_id;
  $("status-device").textContent = doc.device_id;
  $("status-model").textContent = doc.model ? `${doc.model.name} ${doc.model.version}`
    : `no model${doc.model_error ? `: ${doc.model_error}` : ""}`;
  $("status-fps").textContent = doc.fps.toFixed(1);
  const p50 = doc.inference_ms && doc.inference_ms.p50;
  $("status-inference").textContent = p50 == null ? "—" : `${p50.toFixed(1)} ms`;
  $("status-dropped").textContent = String(doc.frames_dropped);
  const cam = doc.camera || {};
  $("status-camera").textContent = `${cam.source}: ${cam.connected ? "connected" : `not connected${cam.error ? ` (${cam.error})` : ""}`}`;
  const mqtt = doc.mqtt || {};
  $("status-mqtt").textContent = !mqtt.broker ? "off" : mqtt.connected ? `connected to ${mqtt.broker}`
    : `not connected to ${mqtt.broker}${mqtt.reason ? ` (${mqtt.reason})` : ""}`;
  const models = doc.models || {};
  const swap = models.swap || {state: "idle"};
  state.swapBusy = BUSY_SWAP.includes(swap.state);
  $("status-swap").textContent = swap.version ? `${swap.state}: ${swap.kind} ${swap.version}` : swap.state;
  $("last-swap").textContent = swapText(models.last_swap);
  $("last-rollback").textContent = rollbackText(models.last_rollback);
  if (doc.crop && doc.crop.region == null) $("region").textContent = "model sees: nothing (no model runs)";
  setClasses(doc.model ? doc.model.classes : []);
  showThreshold(doc.threshold);
}

function swapText(swap) {
  if (!swap) return "none";
  const result = {ok: "ok", watching: "watching its first frames", rolled_back: "rolled back"}[swap.result] || swap.result;
  return `${swap.kind} ${swap.from || "none"} → ${swap.to}: ${result} (${swap.at}, warm-up ${swap.warm_ms} ms)`;
}

function rollbackText(rollback) {
  if (!rollback) return "none";
  return `${rollback.from} → ${rollback.to}${rollback.automatic ? " (automatic)" : ""}: ${rollback.reason} (${rollback.at})`;
}

// -- threshold -------------------------------------------------------------------------------------
function setClasses(classes) {
  if (JSON.stringify(classes) === JSON.stringify(state.classes)) return;
  state.classes = classes;
  const box = $("threshold-classes");
  box.replaceChildren();
  classes.forEach((label, i) => {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = label;
    const input = document.createElement("input");
    Object.assign(input, {type: "range", min: "0", max: "1", step: "0.01", id: `threshold-class-${i}`});
    input.dataset.label = label;
    const out = document.createElement("output");
    out.id = `threshold-class-${i}-value`;
    const clear = document.createElement("button");
    Object.assign(clear, {type: "button", id: `threshold-class-${i}-clear`, textContent: "use default",
                          title: `${label} follows the default threshold`});
    clear.addEventListener("click", () => applyThreshold(label, null));
    hookSlider(input, out, label);
    row.append(name, input, out, clear);
    box.append(row);
  });
  showThreshold(state.threshold, true);
}

function hookSlider(input, out, label) {
  input.addEventListener("pointerdown", () => { state.dragging = true; });
  input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(2); });
  input.addEventListener("change", () => {
    state.dragging = false;
    applyThreshold(label, Number(input.value));
  });
}

function showThreshold(doc, force = false) {
  if (!doc || doc.default == null || (!force && (state.dragging || state.pending))) return;
  state.threshold = {default: doc.default, per_class: {...doc.per_class}};
  const put = (input, out, value, inherited) => {
    input.value = String(value);
    out.textContent = `${Number(value).toFixed(2)}${inherited ? " (default)" : ""}`;
  };
  put($("threshold-default"), $("threshold-default-value"), doc.default, false);
  state.classes.forEach((label, i) => {
    const own = doc.per_class[label];
    put($(`threshold-class-${i}`), $(`threshold-class-${i}-value`), own ?? doc.default, own == null);
    $(`threshold-class-${i}`).classList.toggle("inherits", own == null);
  });
  renderControls();
}

/* label null: the default; value null: drop that class's own value. Changes are sent in order, each
   built on the answer to the one before (per_class replaces the whole map). */
function applyThreshold(label, value) {
  state.pending += 1;
  state.thresholdChain = state.thresholdChain.then(() => sendThreshold(label, value));
}

async function sendThreshold(label, value) {
  const body = {};
  if (label === null) {
    body.default = value;
  } else {
    const perClass = {...state.threshold.per_class};
    if (value === null) delete perClass[label];
    else perClass[label] = value;
    body.per_class = perClass;
  }
  try {
    const doc = await api("PUT", "/threshold", body, CHANGE_TIMEOUT_MS);
    state.pending -= 1;
    if (state.pending) state.threshold = {default: doc.default, per_class: {...doc.per_class}};
    else showThreshold(doc, true);
    say(`threshold saved: ${label === null ? "default" : label} ${value === null ? "follows the default" : value.toFixed(2)}`);
  } catch (err) {
    state.pending -= 1;
    changeFailed("the threshold change", err);
    showThreshold(state.threshold, true);
  }
}

// -- models ----------------------------------------------------------------------------------------
function showModels(list) {
  const key = JSON.stringify([list, state.tokenOk, state.busy, state.swapBusy]);
  if (key === state.modelsKey) return;
  state.modelsKey = key;
  const rows = list.versions.map((v) => {
    const tr = document.createElement("tr");
    tr.dataset.version = v.version;
    const active = v.version === list.active;
    tr.classList.toggle("active", active);
    const what = v.bad ? `bad: ${v.bad.reason}` : active ? (list.trial ? "active (on trial)" : "active")
      : v.version === list.rollback_to ? "rollback target" : "";
    const cells = [v.version, v.name, (v.classes || []).join(", "), v.input ? `${v.input.width}x${v.input.height}` : "",
                   v.added, `${(v.bytes / 1048576).toFixed(2)} MB`, what];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text ?? "";
      tr.append(td);
    }
    const td = document.createElement("td");
    td.append(button("activate", "activate", active || Boolean(v.bad),
                     () => change(`activating ${v.version}`, "POST", `/models/${encodeURIComponent(v.version)}/activate`,
                                  (doc) => `${doc.active} is active; ${swapText(doc.last_swap)}`)),
              button("delete", "delete", active, () => {
                if (!window.confirm(`Delete model version ${v.version} from the device?`)) return;
                change(`deleting ${v.version}`, "DELETE", `/models/${encodeURIComponent(v.version)}`,
                       (doc) => `deleted ${doc.deleted}`);
              }));
    tr.append(td);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 8;
    td.className = "none";
    td.textContent = "no model versions stored (deeplens-ctl swap-model uploads one)";
    tr.append(td);
    rows.push(tr);
  }
  $("models").tBodies[0].replaceChildren(...rows);
  const back = $("rollback");
  back.dataset.target = list.rollback_to || "";
  back.textContent = list.rollback_to ? `roll back to ${list.rollback_to}` : "roll back (no earlier good version)";
  renderControls();
}

function button(text, cls, off, onClick) {
  const b = document.createElement("button");
  Object.assign(b, {type: "button", textContent: text, className: cls});
  b.dataset.off = off ? "1" : "";
  b.addEventListener("click", onClick);
  return b;
}

async function change(doing, method, path, done) {
  state.busy = true;
  renderControls();
  say(`${doing}…`, "working");
  try {
    say(done(await api(method, path, undefined, CHANGE_TIMEOUT_MS)));
  } catch (err) {
    changeFailed(doing, err);
  } finally {
    state.busy = false;
    state.modelsKey = "";
    await refresh();
  }
}

function changeFailed(doing, err) {
  if (refused(err)) {
    if (err.code === "no_token_configured") say(`${doing}: ${err.message}`, "error");
    else { tokenWrong(); say(`${doing} refused: the token is wrong`, "error"); }
  } else if (err instanceof HttpError) {
    say(`${doing} refused: ${err.message}`, "error");
  } else {
    say(`${doing} failed: the device is not answering`, "error");
  }
}

/* Controls work only with an accepted token, when nothing else is changing. */
function renderControls() {
  const on = state.tokenOk && state.readable;
  const free = on && !state.busy && !state.swapBusy;
  document.body.classList.toggle("read-only", !on);
  $("threshold-default").disabled = !on;
  state.classes.forEach((label, i) => {
    $(`threshold-class-${i}`).disabled = !on;
    $(`threshold-class-${i}-clear`).disabled = !on || state.threshold.per_class[label] == null;
  });
  for (const b of $("models").querySelectorAll("button")) b.disabled = !free || Boolean(b.dataset.off);
  $("rollback").disabled = !free || !$("rollback").dataset.target;
}

// -- detections and the live view ------------------------------------------------------------------
async function detectionsLoop() {
  for (;;) {
    if (state.readable && !state.down) {
      try {
        showDetections(await api("GET", "/detections"));
      } catch (err) {
        if (err instanceof HttpError && err.code === "no_frame_yet") $("detections-meta").textContent = "no frame yet";
        else if (!(err instanceof HttpError) && !(err instanceof TypeError) && err.name !== "AbortError" &&
                 err.name !== "TimeoutError") console.error("detections failed", err);
      }
    }
    await sleep(DETECTIONS_MS);
  }
}

function showDetections(doc) {
  $("detections-meta").textContent = `frame ${doc.seq}, ${doc.model ? `${doc.model.name} ${doc.model.version}` : "no model"}`;
  $("region").textContent = regionText(doc.region, doc.frame);
  const items = doc.detections.map((d) => {
    const li = document.createElement("li");
    li.dataset.label = d.label;
    const pct = d.box.map((v) => Math.round(v * 100));
    li.textContent = `${d.label} ${d.score.toFixed(2)} at ${pct[0]}–${pct[2]}% × ${pct[1]}–${pct[3]}%`;
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = doc.model ? "nothing above the threshold" : "no model runs";
    items.push(li);
  }
  $("detections").replaceChildren(...items);
}

function regionText(region, frame) {
  if (!region) return "model sees: nothing (no model runs)";
  const [x, y, w, h] = region;
  const W = frame.width, H = frame.height;
  if (w >= 0.999 && h >= 0.999) return `model sees: the whole ${W}x${H} frame`;
  const size = `${Math.round(w * W)}x${Math.round(h * H)}`;
  const centred = Math.abs(x + w / 2 - 0.5) < 0.01 && Math.abs(y + h / 2 - 0.5) < 0.01;
  const where = centred ? `centre ${size}` : `${size} at (${Math.round(x * W)}, ${Math.round(y * H)})`;
  return `model sees: ${where} of ${W}x${H} (outlined on the live view)`;
}

/* The live view reads /stream with fetch() and shows each JPEG part as it comes: unlike
   <img src=/stream> this sends the token (for devices that protect reads), sees the stream end
   (camera gone, service restarted) and reconnects, where a browser would keep showing the image
   it already loaded from that URL. */
function startLive() {
  const want = state.readable ? "stream" : null;
  if (want === state.liveMode) return;
  state.liveMode = want;
  const gen = ++state.liveGen;
  if (state.liveAbort) state.liveAbort.abort();
  if (want) {
    streamLoop(gen);
  } else {
    showFrame(null, "");
  }
}

async function streamLoop(gen) {
  while (gen === state.liveGen) {
    const abort = new AbortController();
    state.liveAbort = abort;
    try {
      const response = await fetch(`/stream?size=${LIVE_SIZE}`, {headers: authHeaders(), cache: "no-store",
                                                                 signal: abort.signal});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.getReader();
      let buffer = new Uint8Array(0);
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = joined(buffer, value);
        for (let part = takePart(buffer); part; part = takePart(buffer)) {
          buffer = part.rest;
          if (gen === state.liveGen) showFrame(part.jpeg, part.seq);
        }
      }
    } catch (err) {
      // refused (503: no frame yet, live slots full), cut off or aborted: try again below
    }
    abort.abort();
    if (gen === state.liveGen) await sleep(LIVE_RETRY_MS);
  }
}

function joined(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/* The first whole part of a multipart buffer (`--boundary`, headers with Content-Length and
   X-Frame-Seq, a blank line, the JPEG), or null until it has all arrived. */
function takePart(buffer) {
  let end = -1;
  for (let i = 0; i + 3 < buffer.length; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
      end = i;
      break;
    }
  }
  if (end < 0) return null;
  const head = new TextDecoder().decode(buffer.subarray(0, end));
  const length = /content-length:\s*(\d+)/i.exec(head);
  if (!length) throw new Error("a stream part without Content-Length");
  const start = end + 4, stop = start + Number(length[1]);
  if (buffer.length < stop) return null;
  const seq = /x-frame-seq:\s*(\d+)/i.exec(head);
  return {jpeg: buffer.slice(start, stop), seq: seq ? seq[1] : "", rest: buffer.subarray(stop)};
}

function showFrame(jpeg, seq) {
  const img = $("live");
  const old = img.dataset.blob;
  if (jpeg) {
    img.dataset.blob = URL.createObjectURL(new Blob([jpeg], {type: "image/jpeg"}));
    img.src = img.dataset.blob;
  } else {
    delete img.dataset.blob;
    img.removeAttribute("src");
  }
  img.dataset.seq = seq;
  if (old) URL.revokeObjectURL(old);
}

// -- start -----------------------------------------------------------------------------------------
async function statusLoop() {
  for (;;) {
    await refresh();
    await sleep(STATUS_MS);
  }
}

function start() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useToken($("token").value);
  });
  $("token-forget").addEventListener("click", () => useToken(""));
  hookSlider($("threshold-default"), $("threshold-default-value"), null);
  for (const end of ["pointerup", "pointercancel"]) window.addEventListener(end, () => { state.dragging = false; });
  $("rollback").addEventListener("click", () => change(`rolling back to ${$("rollback").dataset.target}`, "POST",
                                                        "/models/rollback", (doc) => `rolled back: ${doc.active} is active`));
  showTokenState(state.token ? "checking the token…" : "");
  renderControls();
  statusLoop();
  detectionsLoop();
}

window.addEventListener("load", start);  // after load: an endless MJPEG <img> must not hold the load event
