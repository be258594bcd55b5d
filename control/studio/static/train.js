// Train view: start a run, follow it (loss and mAP curves), read its evaluation, deploy it to a
// device and roll back.
import { describe, enc, get, post, put } from './api.js';
import { $, Poller, clear, fillSelect, fmtBytes, fmtNum, fmtTime, h, jsonView, say, shortVersion } from './ui.js';
import { deviceOptions, loadDevices, on } from './state.js';
import { followJob, jobError, jobId } from './jobs.js';
import { lineChart } from './charts.js';

const FINAL = ['done', 'stopped', 'failed'];
const PHASES = ['upload', 'activate', 'health', 'detections'];
let ctx = null;
let visible = false;
let runs = [];
let selected = null;
let run = null;                 // the selected run's document
let prFor = null;               // the run whose PR image is shown
let deploying = null;

const listPoller = new Poller(loadRuns, 5000);
const runPoller = new Poller(pollRun, 1500);

export function init(context) {
  ctx = context;
  $('#train-form').addEventListener('submit', start);
  $('#run-stop').addEventListener('click', stop);
  $('#deploy').addEventListener('click', deploy);
  $('#rollback').addEventListener('click', rollback);
  $('#deploy-device').addEventListener('change', () => localStorage.setItem('studio.deployDevice', $('#deploy-device').value));
  $('#pr-image').addEventListener('error', () => {
    $('#pr-image').hidden = true;
    drawPrFallback();
  });
  $('#pr-image').addEventListener('load', () => { $('#pr-image').hidden = false; $('#pr-chart').hidden = true; });
  on('devices', fillDevices);
  window.addEventListener('resize', () => { if (visible && run) drawCharts(run); });
}

export const routeArg = () => selected || '';

export async function show(arg) {
  visible = true;
  if (!$('#train-name').value) $('#train-name').value = defaultName();
  loadDevices().catch(() => {});
  fillDevices();
  listPoller.start();
  if (arg && arg !== selected) select(arg);
  else if (selected) { ctx.setRoute('train', selected); runPoller.start(); }
}

export function hide() {
  visible = false;
  listPoller.stop();
  runPoller.stop();
}

function defaultName() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return `run-${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}`;
}

function fillDevices() {
  const options = deviceOptions();
  const select = $('#deploy-device');
  fillSelect(select, options.length ? options : [{ value: '', text: 'no device: add one under Devices' }]);
  const remembered = localStorage.getItem('studio.deployDevice');
  if (remembered && options.some((o) => o.value === remembered)) select.value = remembered;
  updateButtons();
}

// -- runs -------------------------------------------------------------------------------------
async function loadRuns() {
  try {
    runs = (await get('/api/runs')) || [];
  } catch (exc) {
    say($('#train-message'), `cannot list the runs: ${describe(exc)}`, 'error');
    return;
  }
  const list = clear($('#run-list'));
  if (!runs.length) list.append(h('li', { class: 'muted small' }, 'no run yet'));
  for (const r of runs) {
    const score = r.map50 ?? (r.evaluation && r.evaluation.map50);
    list.append(h('li', {
      class: `run-item${r.name === selected ? ' selected' : ''}`, dataset: { run: r.name, state: r.state || '' }, role: 'button', tabindex: 0,
      onclick: () => select(r.name), onkeydown: (e) => { if (e.key === 'Enter') select(r.name); },
    },
    h('span', { class: 'name' }, r.name), h('span', { class: `badge state ${r.state || ''}` }, r.state || '?'),
    score !== undefined && score !== null ? h('span', { class: 'small muted' }, ` mAP ${fmtNum(score, 3)}`) : null));
  }
  const init = $('#train-init');
  const choices = runs.filter((r) => ['done', 'stopped'].includes(r.state)).map((r) => ({ value: r.name, text: `run ${r.name}` }));
  fillSelect(init, [{ value: '', text: 'nothing (from scratch)' }, ...choices]);
}

function select(name) {
  selected = name;
  run = null;
  prFor = null;
  ctx.setRoute('train', name || '');
  for (const el of document.querySelectorAll('#run-list .run-item')) el.classList.toggle('selected', el.dataset.run === name);
  $('#run-empty').hidden = !!name;
  $('#run-detail').hidden = !name;
  $('#run-name').textContent = name || '';
  $('#run-state').textContent = '…';
  say($('#run-reason'), '');
  $('#evaluation').hidden = true;
  runPoller.stop();
  if (name) runPoller.start();
}

async function pollRun() {
  const name = selected;
  if (!name) return;
  let doc;
  try {
    doc = await get(`/api/runs/${enc(name)}`);
  } catch (exc) {
    if (name === selected) say($('#run-reason'), `cannot read the run: ${describe(exc)}`, 'error');
    return exc.status === 404 ? 5000 : undefined;
  }
  if (name !== selected) return;
  const wasFinal = run && FINAL.includes(run.state);
  run = doc;
  renderRun(doc);
  if (FINAL.includes(doc.state)) {
    if (!wasFinal) loadRuns();
    return doc.evaluation || doc.state === 'failed' ? 15000 : 2000;   // evaluation may still be written
  }
  return undefined;
}

function renderRun(r) {
  const stateEl = $('#run-state');
  stateEl.textContent = r.state;
  stateEl.dataset.state = r.state;
  stateEl.className = `badge state ${r.state}`;
  if (r.state === 'failed') say($('#run-reason'), `failed: ${r.reason || 'no reason given'}`, 'error');
  else if (r.reason) say($('#run-reason'), r.reason, 'info');
  else say($('#run-reason'), '');
  const o = r.options || {};
  const described = Object.entries(o).filter(([k, v]) => k !== 'name' && v !== null && v !== undefined && typeof v !== 'object').map(([k, v]) => `${k} ${v}`);
  if (o.frames && typeof o.frames === 'object') described.push(`frames ${Object.entries(o.frames).map(([k, v]) => `${v} ${k}`).join(' / ')}`);
  if (Array.isArray(o.classes)) described.push(`classes ${o.classes.join(', ')}`);
  $('#run-options').textContent = described.join(' · ');
  const metrics = r.metrics || [];
  const last = metrics[metrics.length - 1];
  const parts = [];
  if (last) {
    parts.push(`epoch ${last.epoch}`);
    if (last.loss !== undefined) parts.push(`loss ${fmtNum(last.loss, 4)}`);
    if (last.map50 !== undefined && last.map50 !== null) parts.push(`mAP@0.5 ${fmtNum(last.map50, 3)}`);
    const best = Math.max(...metrics.map((m) => (m.map50 ?? -1)));
    if (best >= 0) parts.push(`best ${fmtNum(best, 3)}`);
    if (last.time !== undefined) parts.push(`${fmtNum(last.time, 0)} s${o.minutes ? ` of ${fmtNum(o.minutes * 60, 0)} s` : ''}`);
  } else if (r.state === 'running') {
    parts.push('preparing the data…');
  }
  if (r.state === 'stopping') parts.push('stopping after this epoch…');
  if (['done', 'stopped'].includes(r.state) && !r.evaluation) parts.push('evaluating…');
  $('#run-progress').textContent = parts.join(' · ');
  $('#run-stop').hidden = !['running'].includes(r.state);
  $('#run-stop').disabled = r.state !== 'running';
  drawCharts(r);
  renderEvaluation(r);
  const p = r.package;
  $('#run-package').textContent = p ? `package: ${p.name || ''} ${p.version || ''}${p.folder ? ` (${p.folder})` : ''}` : '';
  updateButtons();
}

function drawCharts(r) {
  const metrics = r.metrics || [];
  lineChart($('#loss-chart'), [{ name: 'loss', color: '#c0392b', points: metrics.map((m) => [m.epoch, m.loss]) }],
    { xLabel: 'epoch', yLabel: 'loss', xInteger: true, empty: r.state === 'running' ? 'waiting for the first epoch…' : 'no epoch' });
  lineChart($('#map-chart'), [
    { name: 'mAP@0.5', color: '#2563eb', points: metrics.map((m) => [m.epoch, m.map50]) },
    { name: 'mAP@[.5:.95]', color: '#16a34a', dashed: true, points: metrics.map((m) => [m.epoch, m.map_coco]) },
  ], { xLabel: 'epoch', yLabel: 'mAP', yMin: 0, yMax: 1, xInteger: true, empty: r.state === 'running' ? 'waiting for the first epoch…' : 'no epoch' });
}

async function start(event) {
  event.preventDefault();
  const body = {
    name: $('#train-name').value.trim(),
    minutes: Number($('#train-minutes').value) || 1,
    arch: $('#train-arch').value,
    size: Number($('#train-size').value) || 300,
    flip: $('#train-flip').value,
    init: $('#train-init').value || null,
  };
  say($('#train-message'), 'starting…');
  $('#train-start').disabled = true;
  try {
    const answer = await post('/api/runs', body);
    say($('#train-message'), `started ${answer.name || body.name}`, 'ok');
    $('#train-name').value = '';
    await loadRuns();
    select(answer.name || body.name);
    $('#train-name').value = defaultName() === body.name ? `${body.name}-2` : defaultName();
  } catch (exc) {
    say($('#train-message'), `not started: ${describe(exc)}`, 'error');
  } finally {
    $('#train-start').disabled = false;
  }
}

async function stop() {
  if (!selected) return;
  $('#run-stop').disabled = true;
  try {
    await post(`/api/runs/${enc(selected)}/stop`);
    say($('#run-reason'), 'stopping after the current epoch; the best weights are still exported and evaluated', 'info');
    runPoller.poke();
  } catch (exc) {
    say($('#run-reason'), `cannot stop: ${describe(exc)}`, 'error');
    $('#run-stop').disabled = false;
  }
}

// -- evaluation -------------------------------------------------------------------------------
const SUMMARY = [
  ['map50', 'mAP@0.5'], ['map50_voc07', 'mAP@0.5 (VOC07)'], ['map_coco', 'mAP@[.5:.95]'],
  ['precision', 'precision @ threshold'], ['recall', 'recall @ threshold'], ['threshold', 'threshold'],
  ['best_f1', 'best F1'], ['best_threshold', 'best-F1 threshold'],
];
const COLUMN = { name: 'class', images: 'images', boxes: 'boxes', ap50: 'AP@0.5', ap50_voc07: 'AP@0.5 VOC07', ap_coco: 'AP@[.5:.95]', precision: 'P @thr', recall: 'R @thr' };

function renderEvaluation(r) {
  const ev = r.evaluation;
  const box = $('#evaluation');
  if (!ev || typeof ev !== 'object') {
    box.hidden = true;
    return;
  }
  const key = JSON.stringify([r.name, ev.map50, ev.best_threshold, (ev.per_class || []).length]);
  if (box.dataset.key === key && !box.hidden) return;
  box.dataset.key = key;
  box.hidden = false;
  const main = ev.per_class || ev.map50 !== undefined ? ev : Object.values(ev).find((v) => v && typeof v === 'object' && (v.per_class || v.map50 !== undefined)) || ev;

  const summary = clear($('#eval-summary'));
  const cards = h('div', { class: 'cards' });
  const known = new Set(SUMMARY.map(([k]) => k));
  for (const [k, title] of SUMMARY) {
    if (typeof main[k] === 'number') cards.append(h('div', { class: 'card', dataset: { key: k } }, h('div', { class: 'value' }, fmtNum(main[k], 3)), h('div', { class: 'small muted' }, title)));
  }
  for (const [k, v] of Object.entries(main)) {
    if (!known.has(k) && (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean')) {
      cards.append(h('div', { class: 'card', dataset: { key: k } }, h('div', { class: 'value' }, typeof v === 'number' ? fmtNum(v, 3) : String(v)), h('div', { class: 'small muted' }, k)));
    }
  }
  summary.append(cards);

  const best = $('#eval-best-threshold');
  clear(best);
  if (typeof main.best_threshold === 'number') {
    best.append(`Best F1 ${fmtNum(main.best_f1, 3)} at threshold ${fmtNum(main.best_threshold, 2)}. `,
      h('button', { type: 'button', id: 'apply-best-threshold', class: 'small', onclick: () => applyBest(main.best_threshold) }, 'use it as the device default'),
      h('span', { id: 'apply-best-result', class: 'small muted' }, ''));
  }

  const perClass = clear($('#eval-per-class'));
  const rows = Array.isArray(main.per_class) ? main.per_class : [];
  if (rows.length) {
    const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
    const order = Object.keys(COLUMN);
    const rank = (c) => (order.includes(c) ? order.indexOf(c) : order.length);
    columns.sort((a, b) => rank(a) - rank(b));
    perClass.append(h('tr', {}, columns.map((c) => h('th', {}, COLUMN[c] || c))));
    for (const row of rows) {
      perClass.append(h('tr', { dataset: { class: row.name ?? '' } }, columns.map((c) => h('td', { class: typeof row[c] === 'number' ? 'num' : '' }, typeof row[c] === 'number' ? fmtNum(row[c], 3) : row[c] ?? ''))));
    }
  }

  const confusion = clear($('#eval-confusion'));
  const matrix = Array.isArray(main.confusion) ? main.confusion : null;
  if (matrix && matrix.length) {
    const names = Array.isArray(main.classes) ? main.classes : rows.map((row) => row.name);
    const k = matrix.length;
    const rowNames = names.length === k - 1 ? [...names, 'background'] : matrix.map((_, i) => String(i));
    const colNames = names.length === (matrix[0] || []).length - 1 ? [...names, 'missed'] : (matrix[0] || []).map((_, i) => String(i));
    const max = Math.max(1, ...matrix.flat());
    confusion.append(h('tr', {}, h('th', { class: 'corner' }, 'truth \\ predicted'), colNames.map((n) => h('th', {}, n))));
    matrix.forEach((row, i) => {
      confusion.append(h('tr', {}, h('th', {}, rowNames[i]), row.map((v, j) => {
        const diagonal = i === j && i < names.length;
        const alpha = v ? 0.12 + 0.6 * (v / max) : 0;
        return h('td', { class: 'num', style: { background: v ? (diagonal ? `rgba(22,163,74,${alpha})` : `rgba(220,38,38,${alpha})`) : '' } }, String(v));
      })));
    });
  }

  const extra = clear($('#eval-extra'));
  const skip = new Set(['per_class', 'confusion', 'pr_curves', 'classes', ...Object.keys(main).filter((k2) => typeof main[k2] !== 'object' || main[k2] === null)]);
  const rest = Object.fromEntries(Object.entries(main).filter(([k2]) => !skip.has(k2)));
  if (Object.keys(rest).length) extra.append(h('details', {}, h('summary', {}, 'more'), jsonView(rest)));

  if (prFor !== r.name) {
    prFor = r.name;
    $('#pr-chart').hidden = true;
    $('#pr-image').hidden = false;
    $('#pr-image').src = `/api/runs/${enc(r.name)}/pr.png?t=${Date.now()}`;
  }
}

function drawPrFallback() {
  const ev = run && run.evaluation;
  const curves = ev && ev.pr_curves;
  if (!curves || !Object.keys(curves).length) return;
  const canvas = $('#pr-chart');
  canvas.hidden = false;
  const colors = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4'];
  lineChart(canvas, Object.entries(curves).map(([name, [recall, precision]], i) => ({
    name, color: colors[i % colors.length], points: recall.map((x, j) => [x, precision[j]]),
  })), { xLabel: 'recall', yLabel: 'precision', xMin: 0, xMax: 1, yMin: 0, yMax: 1 });
}

async function applyBest(value) {
  const device = $('#deploy-device').value;
  const out = $('#apply-best-result');
  if (!device) {
    out.textContent = ' choose a device below first';
    return;
  }
  try {
    const answer = await put(`/api/devices/${enc(device)}/threshold`, { default: Math.round(value * 100) / 100 });
    out.textContent = ` device default is now ${fmtNum(answer.default, 2)}`;
  } catch (exc) {
    out.textContent = ` not applied: ${describe(exc)}`;
  }
}

// -- deploy and roll back ---------------------------------------------------------------------
function updateButtons() {
  const device = $('#deploy-device').value;
  const ready = run && ['done', 'stopped'].includes(run.state) && (run.package || run.evaluation);
  $('#deploy').disabled = !device || !ready || !!deploying;
  $('#deploy').title = !ready ? 'the run has no exported model yet' : '';
  $('#rollback').disabled = !device;
}

function renderPhases(job) {
  const p = (job && job.progress) || {};
  const phase = p.phase;
  const at = PHASES.indexOf(phase);
  const finished = job && job.state === 'done';
  for (const li of document.querySelectorAll('#deploy-phases li')) {
    const i = PHASES.indexOf(li.dataset.phase);
    li.classList.toggle('done', finished || (at >= 0 && i < at));
    li.classList.toggle('current', !finished && i === at);
    li.classList.toggle('failed', job && job.state === 'failed' && i === at);
  }
  const bar = $('#deploy-bar');
  const text = $('#deploy-progress-text');
  const sent = p.done ?? 0;
  if (phase === 'upload' && p.total) {
    bar.max = p.total;
    bar.value = sent;
    text.textContent = `uploading ${fmtBytes(sent)} of ${fmtBytes(p.total)}`;
  } else if (finished) {
    bar.max = 1;
    bar.value = 1;
    text.textContent = 'done';
  } else {
    bar.max = PHASES.length;
    bar.value = Math.max(0, at);
    text.textContent = { activate: 'activating: the device loads and warms up the model…', health: 'health check: watching the first frames…', detections: 'waiting for the first detections…' }[phase] || (phase || 'starting…');
  }
}

async function deploy() {
  const device = $('#deploy-device').value;
  const name = selected;
  if (!device || !name) return;
  clear($('#deploy-result'));
  clear($('#rollback-result'));
  const box = $('#deploy-progress');
  box.hidden = false;
  box.dataset.state = 'running';
  renderPhases({ progress: { phase: 'upload' }, state: 'running' });
  deploying = true;
  updateButtons();
  let job;
  try {
    const answer = await post(`/api/runs/${enc(name)}/deploy`, { device });
    deploying = followJob(jobId(answer), (j) => { if (j) renderPhases(j); });
    job = await deploying;
  } catch (exc) {
    job = { state: 'failed', error: describe(exc) };
  }
  deploying = null;
  box.dataset.state = job.state;
  renderPhases(job);
  renderDeployResult(job);
  updateButtons();
}

function healthOf(result) {
  const status = result.status || {};
  const last = status.last_swap || result.swap || result.last_swap || {};
  const back = status.last_rollback || result.last_rollback;
  return { result: last.result || result.health || (result.rolled_back ? 'rolled_back' : ''), last, back };
}

function renderDeployResult(job) {
  const out = clear($('#deploy-result'));
  if (job.state !== 'done') {
    out.append(h('p', { class: 'message', dataset: { kind: 'error' } }, `deploy failed: ${jobError(job)}`));
    if (job.result) out.append(h('details', {}, h('summary', {}, 'details'), jsonView(job.result)));
    return;
  }
  const r = job.result || {};
  const { result, last, back } = healthOf(r);
  const version = r.version || (r.stored && r.stored.version) || last.to;
  out.append(h('p', { id: 'deploy-version' }, 'new version on the device: ', h('code', {}, version || '?')));
  const healthText = result === 'ok' ? 'health check passed: the new model serves'
    : result === 'rolled_back' ? `health check failed: the device rolled back to ${shortVersion(back && back.to)}${back && back.reason ? ` — ${back.reason}` : ''}`
      : result === 'watching' ? 'health check still running when the deploy stopped waiting' : `health: ${result || 'unknown'}`;
  out.append(h('p', { id: 'deploy-health', class: `health-line ${result}`, dataset: { result: result || 'unknown' } }, healthText));
  const event = r.first_detections;
  const dets = event ? (Array.isArray(event) ? event : event.detections || []) : null;
  const detEl = h('div', { id: 'deploy-detections' });
  if (dets && dets.length) {
    detEl.append(h('p', {}, `first detections${r.first_detection_s !== undefined ? ` after ${fmtNum(r.first_detection_s, 1)} s` : ''}:`),
      h('ul', {}, dets.map((d) => h('li', { class: 'detection' }, `${d.label ?? d.class_id} ${fmtNum(d.score, 2)}`))));
  } else {
    detEl.append(h('p', { class: 'muted' }, r.over_mqtt === false ? `no detections followed (no MQTT${r.mqtt_problem ? `: ${r.mqtt_problem}` : ''})` : 'no detection seen yet'));
  }
  out.append(detEl);
  out.append(h('details', {}, h('summary', {}, 'details'), jsonView(r)));
}

async function rollback() {
  const device = $('#deploy-device').value;
  if (!device) return;
  const out = clear($('#rollback-result'));
  out.append(h('p', { class: 'muted' }, 'rolling back…'));
  $('#rollback').disabled = true;
  try {
    const models = await post(`/api/devices/${enc(device)}/rollback`);
    const back = models.last_rollback;
    const last = models.last_swap;
    clear(out).append(h('p', { class: 'health-line ok', dataset: { result: 'rolled_back' } },
      `rolled back: the device now runs ${shortVersion(models.active)}${back ? ` (from ${shortVersion(back.from)})` : ''}${last && last.result ? ` — health check: ${last.result}` : ''}`,
      back && back.at ? h('span', { class: 'small muted' }, ` ${fmtTime(back.at)}`) : null));
  } catch (exc) {
    clear(out).append(h('p', { class: 'message', dataset: { kind: 'error' } }, `roll back failed: ${describe(exc)}`));
  } finally {
    updateButtons();
  }
}
