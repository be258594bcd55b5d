// Devices view: the list, the add form, and one device's live view, status, detections,
// threshold sliders, stored models and health-gate outcome, polled while the view is shown.
import { ApiError, del, describe, enc, get, post, put } from './api.js';
import { $, Poller, clear, fmtBytes, fmtNum, fmtTime, h, say, shortVersion } from './ui.js';
import { devices, loadDevices, on } from './state.js';

const BLANK = 'data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7';
let ctx = null;
let selected = null;            // the selected device id
let visible = false;
let reach = 'unknown';          // ok | unreachable | auth | unknown
let liveBroken = false;         // the live view failed and should restart on the next good status
let classes = [];               // the active model's classes
let threshold = null;           // {default, per_class} in force
let thresholdBusy = false;
let lastModelsKey = '';
let noDetections = false;
let statusCount = 0;
let swapBusy = false;          // a model change is in progress on the device: changes wait
const armed = new Set();      // model versions whose delete button was clicked once
const MAX_DETECTIONS = 10;
const base = () => `/api/devices/${enc(selected)}`;

const statusPoller = new Poller(pollStatus, 2000);
const detectionsPoller = new Poller(pollDetections, 500);

export function init(context) {
  ctx = context;
  $('#device-form').addEventListener('submit', addDevice);
  $('#device-token-form').addEventListener('submit', fixToken);
  $('#device-rollback').addEventListener('click', () => modelAction('rollback'));
  const live = $('#device-live');
  live.addEventListener('error', () => {
    if (!live.src.startsWith('data:')) {
      liveBroken = true;
      live.src = BLANK;
      $('#device-live-note').textContent = 'live view interrupted — it restarts when the device answers';
    }
  });
  live.addEventListener('load', () => {
    if (!live.src.startsWith('data:')) $('#device-live-note').textContent = '';
  });
  on('devices', () => visible && renderList());
}

export const routeArg = () => selected || '';

export async function show(arg) {
  visible = true;
  try {
    await loadDevices();
  } catch (exc) {
    ctx.pageMessage(`cannot list the devices: ${describe(exc)}`);
  }
  if (!visible) return;
  const wanted = arg && devices.some((d) => d.id === arg) ? arg : (devices.some((d) => d.id === selected) ? selected : (devices[0] || {}).id);
  select(wanted || null, true);
}

export function hide() {
  visible = false;
  statusPoller.stop();
  detectionsPoller.stop();
  stopLive();
}

function renderList() {
  const list = clear($('#device-list'));
  if (!devices.length) list.append(h('li', { class: 'muted small' }, 'no device yet'));
  for (const device of devices) {
    list.append(h('li', {
      class: `device-item${device.id === selected ? ' selected' : ''}`, dataset: { device: device.id },
      tabindex: 0, role: 'button', title: device.url,
      onclick: () => select(device.id),
      onkeydown: (e) => { if (e.key === 'Enter') select(device.id); },
    },
    h('span', { class: `dot${device.id === selected ? ' ' + reach : ''}` }),
    h('span', { class: 'name' }, device.name || device.url),
    h('span', { class: 'small muted' }, ` ${device.source === 'devices.yaml' ? 'devices.yaml' : ''}${device.token ? ' 🔑' : ''}`)));
  }
  $('#device-empty').hidden = devices.length > 0;
}

function select(id, force = false) {
  if (id === selected && !force && statusPoller.running) return;
  const changed = id !== selected;
  selected = id;
  ctx.setRoute('devices', id || '');
  renderList();
  $('#device-panel').hidden = !id;
  statusPoller.stop();
  detectionsPoller.stop();
  stopLive();
  if (!id) return;
  if (changed || reach !== 'ok') {
    reach = 'unknown';
    classes = [];
    threshold = null;
    lastModelsKey = '';
    noDetections = false;
    clear($('#device-thresholds'));
    clear($('#device-models'));
    for (const key of ['model', 'fps', 'inference', 'dropped', 'camera', 'mqtt', 'health']) $(`#device-${key}`).textContent = '–';
    $('#device-detections').textContent = '–';
    say($('#threshold-message'), '');
    say($('#models-message'), '');
    setNotice(null);
  }
  const device = devices.find((d) => d.id === id);
  $('#device-title').textContent = device ? (device.name && device.name !== device.url ? `${device.name} — ${device.url}` : device.url) : id;
  startLive();
  loadThreshold();
  loadModels();
  statusPoller.start();
  detectionsPoller.start();
}

// -- live view --------------------------------------------------------------------------------
function startLive() {
  if (!selected || !visible) return;
  const live = $('#device-live');
  liveBroken = false;
  live.src = BLANK;
  const url = `${base()}/stream`;
  setTimeout(() => { if (visible && selected && `${base()}/stream` === url) live.src = url; }, 30);
}

function stopLive() {
  $('#device-live').src = BLANK;
}

// -- reachability -----------------------------------------------------------------------------
function setNotice(kind, text) {
  const notice = $('#device-notice');
  notice.hidden = !kind;
  notice.dataset.kind = kind || '';
  $('#device-notice-text').textContent = text || '';
  $('#device-token-form').hidden = kind !== 'auth';
}

function setReach(state, message) {
  const before = reach;
  reach = state;
  if (state === 'unreachable') {
    setNotice('unreachable', 'device not answering — reconnecting…');
    if (before !== 'unreachable') stopLive();
  } else if (state === 'auth') {
    setNotice('auth', `the token is wrong: ${message || 'the device refused it'} — enter the device's token:`);
  } else if (state === 'ok') {
    setNotice(null);
    if (before === 'unreachable' || before === 'auth' || liveBroken) {
      startLive();
      if (before !== 'unknown') {
        loadThreshold();
        loadModels(true);
      }
    }
  }
  const dot = document.querySelector(`.device-item[data-device="${CSS.escape(selected || '')}"] .dot`);
  if (dot) dot.className = `dot ${state}`;
}

/** Deal with the errors every device request shares; true when it was one of them. */
function deviceTrouble(exc) {
  if (!(exc instanceof ApiError)) return false;
  if (exc.status === 0) {            // the studio itself is not answering
    ctx.pageMessage(describe(exc));
    return true;
  }
  if (exc.status === 502 || exc.code === 'device_unreachable') {
    setReach('unreachable');
    return true;
  }
  if (exc.status === 401) {
    setReach('auth', exc.message);
    return true;
  }
  return false;
}

async function addDevice(event) {
  event.preventDefault();
  const url = $('#device-url').value.trim();
  const token = $('#device-token').value;
  if (!url) return;
  say($('#device-form-message'), 'adding…');
  try {
    const answer = await post('/api/devices', { url, token: token || null });
    await loadDevices();
    const found = (answer && answer.id && devices.find((d) => d.id === answer.id))
      || devices.find((d) => d.url === url || d.url === url.replace(/\/+$/, '')) || devices[devices.length - 1];
    say($('#device-form-message'), `added ${found ? found.url : url}`, 'ok');
    $('#device-url').value = '';
    $('#device-token').value = '';
    if (found) select(found.id, true);
  } catch (exc) {
    say($('#device-form-message'), describe(exc), 'error');
  }
}

async function fixToken(event) {
  event.preventDefault();
  const device = devices.find((d) => d.id === selected);
  if (!device) return;
  try {
    await post('/api/devices', { url: device.url, token: $('#device-token-fix').value });
    $('#device-token-fix').value = '';
    await loadDevices();
    setNotice('auth', 'token saved — checking…');
    statusPoller.poke();
    loadThreshold();
    loadModels(true);
  } catch (exc) {
    setNotice('auth', `could not save the token: ${describe(exc)}`);
  }
}

// -- status -----------------------------------------------------------------------------------
async function pollStatus() {
  const id = selected;
  if (!id) return;
  try {
    const status = await get(`${base()}/status`);
    if (id !== selected) return;
    const fresh = reach !== 'ok';
    if ($('#message').textContent.startsWith('the studio is not answering')) ctx.pageMessage('');
    setReach('ok');
    renderStatus(status);
    if (fresh && !threshold) loadThreshold();
  } catch (exc) {
    if (id !== selected) return;
    if (!deviceTrouble(exc)) setNotice('error', `status: ${describe(exc)}`);
  }
}

function renderStatus(s) {
  const model = s.model;
  $('#device-model').textContent = model ? `${model.name} ${shortVersion(model.version)}` : `no model${s.model_error ? ` (${s.model_error})` : ' (capture only)'}`;
  $('#device-model').title = model ? `version ${model.version}; classes ${(model.classes || []).join(', ')}` : '';
  $('#device-fps').textContent = s.fps === null || s.fps === undefined ? '–' : Number(s.fps).toFixed(1);
  const inf = s.inference_ms;
  $('#device-inference').textContent = inf && inf.p50 !== null && inf.p50 !== undefined ? `${fmtNum(inf.p50, 1)} ms${inf.p99 !== undefined && inf.p99 !== null ? ` (p99 ${fmtNum(inf.p99, 1)} ms)` : ''}` : '–';
  $('#device-dropped').textContent = s.frames_dropped === undefined ? '–' : `${s.frames_dropped} of ${s.frames_processed ?? '?'} processed`;
  const cam = s.camera || {};
  $('#device-camera').textContent = `${cam.source || '?'} — ${cam.connected ? 'connected' : 'not connected'}${cam.fps ? `, ${fmtNum(cam.fps, 1)} fps` : ''}${cam.error ? ` — ${cam.error}` : ''}`;
  $('#device-camera').dataset.connected = String(!!cam.connected);
  const mqtt = s.mqtt || {};
  $('#device-mqtt').textContent = !mqtt.broker ? 'off' : `${mqtt.connected ? 'connected' : 'not connected'} to ${mqtt.broker}${mqtt.tls ? ' (TLS)' : ''}`;
  $('#device-mqtt').dataset.connected = String(!!mqtt.connected);
  renderHealth(s.models || {});
  const state = s.models && s.models.swap && s.models.swap.state;
  swapBusy = ['loading', 'warming', 'watching'].includes(state);
  const newClasses = model ? model.classes || [] : [];
  if (newClasses.join('\u0000') !== classes.join('\u0000')) {
    classes = newClasses;
    renderThreshold();
  }
  if (s.threshold && !thresholdBusy && !sliderActive()) {
    const same = threshold && JSON.stringify(threshold) === JSON.stringify(s.threshold);
    if (!same) { threshold = s.threshold; renderThreshold(); }
  }
  const key = JSON.stringify([s.models && s.models.active, s.models && s.models.swap && s.models.swap.state, model && model.version]);
  statusCount += 1;
  if (key !== lastModelsKey || statusCount % 3 === 0) { lastModelsKey = key; loadModels(); }   // uploads from elsewhere too
}

function renderHealth(models) {
  const el = clear($('#device-health'));
  const swap = models.swap || {};
  const last = models.last_swap;
  const back = models.last_rollback;
  let result = 'none';
  if (swap.state && !['idle', 'confirmed', 'rolled_back'].includes(swap.state)) {
    result = swap.state;
    el.append(h('p', { class: 'health-line checking' }, `checking now: ${swap.state}${swap.kind ? ` (${swap.kind})` : ''}${swap.version ? ` of ${shortVersion(swap.version)}` : ''}${swap.since ? ` since ${fmtTime(swap.since)}` : ''}`));
  }
  if (last) {
    if (result === 'none') result = last.result || 'none';
    const what = `${last.kind || 'swap'} ${shortVersion(last.from)} → ${shortVersion(last.to)}`;
    const text = last.result === 'ok' ? `passed: ${what} confirmed`
      : last.result === 'rolled_back' ? `failed: ${what} was rolled back${back && back.reason ? ` — ${back.reason}` : ''}`
        : last.result === 'watching' ? `watching: ${what}, health check running` : `${what}: ${last.result}`;
    el.append(h('p', { class: `health-line ${last.result || ''}` }, text,
      h('span', { class: 'small muted' }, ` (${fmtTime(last.at)}${last.warm_ms !== undefined && last.warm_ms !== null ? `, warm-up ${fmtNum(last.warm_ms, 0)} ms` : ''})`)));
  }
  if (back) {
    el.append(h('p', { class: 'health-line small' }, `last rollback: ${shortVersion(back.from)} → ${shortVersion(back.to)} ${back.automatic ? '(automatic)' : '(by hand)'}${back.reason ? ` — ${back.reason}` : ''} `,
      h('span', { class: 'muted' }, fmtTime(back.at))));
  }
  if (!el.childNodes.length) el.append(h('span', { class: 'muted' }, 'no model change yet'));
  el.dataset.result = result;
}

// -- detections -------------------------------------------------------------------------------
async function pollDetections() {
  const id = selected;
  if (!id || noDetections) return 2000;
  if (reach === 'unreachable' || reach === 'auth') return 2000;
  try {
    const doc = await get(`${base()}/detections`);
    if (id !== selected) return;
    renderDetections(doc);
  } catch (exc) {
    if (id !== selected) return 2000;
    if (deviceTrouble(exc)) return 2000;
    const el = $('#device-detections');
    if (exc.status === 404 || exc.status === 405) {
      noDetections = true;
      el.textContent = `the device does not report detections (${describe(exc)})`;
    } else {
      el.textContent = describe(exc);
    }
    return 2000;
  }
  return undefined;
}

function renderDetections(doc) {
  const el = clear($('#device-detections'));
  const list = Array.isArray(doc) ? doc : (doc && Array.isArray(doc.detections) ? doc.detections : null);
  if (!list) {
    el.append(h('span', { class: 'muted' }, doc ? JSON.stringify(doc).slice(0, 300) : 'none yet'));
    return;
  }
  el.classList.toggle('muted', !list.length);
  el.dataset.count = String(list.length);
  const meta = [];
  if (doc && doc.seq !== undefined) meta.push(`frame ${doc.seq}`);
  if (doc && doc.ts) meta.push(fmtTime(doc.ts));
  if (doc && doc.inference_ms !== undefined && doc.inference_ms !== null) meta.push(`${fmtNum(doc.inference_ms, 1)} ms`);
  if (meta.length) el.append(h('div', { class: 'small muted' }, meta.join(' · ')));
  if (!list.length) {
    el.append(h('div', {}, 'nothing above the threshold'));
    return;
  }
  const shown = list.slice(0, MAX_DETECTIONS);
  el.append(h('table', { class: 'table compact' }, shown.map((d) => h('tr', { class: 'detection', dataset: { class: d.label ?? '' } },
    h('td', {}, d.label ?? d.class_id), h('td', { class: 'num' }, fmtNum(d.score, 2)),
    h('td', { class: 'small muted' }, Array.isArray(d.box) ? d.box.map((v) => fmtNum(v, 3)).join(', ') : '')))));
  if (list.length > shown.length) el.append(h('div', { class: 'small muted' }, `… and ${list.length - shown.length} more (${list.length} in all)`));
  el.dataset.count = String(list.length);
}

// -- threshold --------------------------------------------------------------------------------
function sliderActive() {
  const el = document.activeElement;
  return el && el.closest && el.closest('#device-thresholds') && el.dataset.dragging === '1';
}

async function loadThreshold() {
  const id = selected;
  if (!id) return;
  try {
    const answer = await get(`${base()}/threshold`);
    if (id !== selected) return;
    threshold = answer;
    renderThreshold();
  } catch (exc) {
    if (id !== selected) return;
    if (!deviceTrouble(exc)) say($('#threshold-message'), `threshold: ${describe(exc)}`, 'error');
  }
}

function slider(name, value, isDefault, overridden) {
  const input = h('input', {
    type: 'range', min: '0', max: '1', step: '0.01', value: String(value),
    class: isDefault ? 'threshold-slider-default' : 'threshold-slider',
    id: isDefault ? 'threshold-default' : null,
    dataset: isDefault ? {} : { class: name },
    'aria-label': isDefault ? 'default threshold' : `threshold of ${name}`,
  });
  const shown = h('output', { class: 'threshold-value', dataset: isDefault ? { class: '' } : { class: name } }, Number(value).toFixed(2));
  input.addEventListener('pointerdown', () => { input.dataset.dragging = '1'; });
  input.addEventListener('input', () => { shown.textContent = Number(input.value).toFixed(2); });
  input.addEventListener('change', () => {
    input.dataset.dragging = '';
    const v = Math.round(Number(input.value) * 100) / 100;
    if (isDefault) applyThreshold({ default: v });
    else applyThreshold({ per_class: { ...(threshold && threshold.per_class) || {}, [name]: v } });
  });
  const row = h('div', { class: `threshold-row${overridden === false ? ' inherits' : ''}` },
    h('label', { class: 'name' }, isDefault ? 'default' : name), input, shown);
  if (!isDefault) {
    row.append(overridden
      ? h('button', { type: 'button', class: 'threshold-reset small', dataset: { class: name }, title: 'use the default for this class',
        onclick: () => {
          const rest = { ...(threshold.per_class || {}) };
          delete rest[name];
          applyThreshold({ per_class: rest });
        } }, 'use default')
      : h('span', { class: 'small muted' }, '(default)'));
  }
  return row;
}

function renderThreshold() {
  const el = clear($('#device-thresholds'));
  if (!threshold) {
    el.append(h('span', { class: 'muted' }, '–'));
    return;
  }
  const perClass = threshold.per_class || {};
  el.append(slider('default', threshold.default ?? 0.5, true));
  const names = [...classes, ...Object.keys(perClass).filter((n) => !classes.includes(n))];
  for (const name of names) {
    const overridden = Object.prototype.hasOwnProperty.call(perClass, name);
    el.append(slider(name, overridden ? perClass[name] : threshold.default ?? 0.5, false, overridden));
  }
  if (!names.length) el.append(h('p', { class: 'small muted' }, 'per-class sliders appear when the device runs a model'));
}

async function applyThreshold(change) {
  const id = selected;
  thresholdBusy = true;
  say($('#threshold-message'), 'applying…');
  try {
    const answer = await put(`${base()}/threshold`, change);
    if (id !== selected) return;
    threshold = answer && answer.default !== undefined ? answer : { ...threshold, ...change };
    renderThreshold();
    say($('#threshold-message'), `applied: default ${Number(threshold.default).toFixed(2)}${Object.keys(threshold.per_class || {}).length
      ? '; ' + Object.entries(threshold.per_class).map(([k, v]) => `${k} ${Number(v).toFixed(2)}`).join(', ') : ''}`, 'ok');
  } catch (exc) {
    if (id !== selected) return;
    if (!deviceTrouble(exc)) say($('#threshold-message'), `not applied: ${describe(exc)}`, 'error');
    loadThreshold();
  } finally {
    thresholdBusy = false;
  }
}

// -- models -----------------------------------------------------------------------------------
let modelsLoading = false;
async function loadModels(force = false) {
  const id = selected;
  if (!id || (modelsLoading && !force)) return;
  modelsLoading = true;
  try {
    const doc = await get(`${base()}/models`);
    if (id === selected) renderModels(doc);
  } catch (exc) {
    if (id === selected && !deviceTrouble(exc)) say($('#models-message'), `models: ${describe(exc)}`, 'error');
  } finally {
    modelsLoading = false;
  }
}

function renderModels(doc) {
  const table = clear($('#device-models'));
  const versions = (doc && doc.versions) || [];
  const busy = swapBusy || (doc && doc.trial);
  $('#device-rollback').disabled = !(doc && doc.rollback_to) || busy;
  $('#device-rollback').title = busy ? 'a model change is in progress (health check)' : doc && doc.rollback_to ? `go back to ${doc.rollback_to}` : 'no earlier good version stored';
  table.append(h('tr', {}, ['version', 'name', 'classes', 'added', 'size', 'state', ''].map((t) => h('th', {}, t))));
  if (!versions.length) {
    table.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'no model stored on the device')));
    return;
  }
  for (const v of versions) {
    const active = v.version === doc.active;
    const state = [];
    if (active) state.push(doc.trial ? 'active (health check)' : 'active');
    if (v.version === doc.rollback_to) state.push('rollback target');
    if (v.bad) state.push(`bad: ${v.bad.reason || ''}`);
    const isArmed = armed.has(v.version);
    const remove = h('button', { type: 'button', class: 'model-delete small', dataset: { version: v.version, armed: isArmed ? '1' : '' }, disabled: active || busy, title: 'delete this version from the device (click twice)' }, isArmed ? 'really delete?' : 'delete');
    remove.addEventListener('click', () => {
      if (!armed.has(v.version)) {   // the first click arms it for a few seconds (the table may be redrawn meanwhile)
        armed.add(v.version);
        remove.dataset.armed = '1';
        remove.textContent = 'really delete?';
        setTimeout(() => {
          armed.delete(v.version);
          const button = document.querySelector(`.model-delete[data-version="${CSS.escape(v.version)}"]`);
          if (button) { button.dataset.armed = ''; button.textContent = 'delete'; }
        }, 5000);
        return;
      }
      armed.delete(v.version);
      modelAction('delete', v.version);
    });
    table.append(h('tr', { class: `model-row${active ? ' active' : ''}${v.bad ? ' bad' : ''}`, dataset: { version: v.version } },
      h('td', { title: v.version }, h('code', {}, shortVersion(v.version))),
      h('td', {}, v.name || ''),
      h('td', { class: 'small' }, (v.classes || []).join(', ')),
      h('td', { class: 'small' }, fmtTime(v.added || v.created)),
      h('td', { class: 'small num' }, fmtBytes(v.bytes)),
      h('td', { class: 'small' }, state.join('; ')),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'model-activate small', dataset: { version: v.version }, disabled: active || !!v.bad || busy, onclick: () => modelAction('activate', v.version) }, 'activate'),
        remove)));
  }
}

async function modelAction(kind, version) {
  const id = selected;
  const buttons = document.querySelectorAll('#device-models button, #device-rollback');
  buttons.forEach((b) => { b.disabled = true; });
  const doing = { activate: `activating ${shortVersion(version)} — loading, warming up…`, rollback: 'rolling back…', delete: `deleting ${shortVersion(version)}…` }[kind];
  say($('#models-message'), doing);
  try {
    let answer;
    if (kind === 'activate') answer = await post(`${base()}/models/${enc(version)}/activate`);
    else if (kind === 'rollback') answer = await post(`${base()}/rollback`);
    else answer = await del(`${base()}/models/${enc(version)}`);
    if (id !== selected) return;
    if (kind === 'delete') say($('#models-message'), `deleted ${shortVersion(version)}`, 'ok');
    else {
      const last = answer && answer.last_swap;
      say($('#models-message'), `${kind === 'activate' ? 'activated' : 'rolled back to'} ${shortVersion(answer && answer.active)}${last ? ` — health check: ${last.result}` : ''}`, 'ok');
      if (answer) renderHealth(answer);
    }
  } catch (exc) {
    if (id === selected && !deviceTrouble(exc)) say($('#models-message'), `${kind} failed: ${describe(exc)}`, 'error');
  } finally {
    if (id === selected) {
      loadModels(true);
      statusPoller.poke();
    }
  }
}
