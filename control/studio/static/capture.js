// Capture view: pull N clean frames from a device into the project (POST /api/capture, then the job).
import { describe, enc, post } from './api.js';
import { $, clear, fillSelect, h, jsonView, say } from './ui.js';
import { deviceOptions, loadDevices, on, refreshProjectSoon } from './state.js';
import { followJob, jobError, jobId } from './jobs.js';

const BLANK = 'data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7';
let visible = false;
let following = null;

export function init() {
  $('#capture-form').addEventListener('submit', start);
  $('#capture-count').addEventListener('input', label);
  $('#capture-device').addEventListener('change', () => { localStorage.setItem('studio.captureDevice', $('#capture-device').value); live(); });
  on('devices', fillDevices);
  const resume = sessionStorage.getItem('studio.captureJob');
  if (resume) follow(resume);
}

export function show() {
  visible = true;
  loadDevices().catch(() => {});
  fillDevices();
  live();
}

export function hide() {
  visible = false;
  $('#capture-live').src = BLANK;
}

function count() {
  const n = parseInt($('#capture-count').value, 10);
  return Number.isFinite(n) && n > 0 ? n : 30;
}

function label() {
  $('#capture-start').textContent = `capture ${count()} clean frames`;
}

function fillDevices() {
  const select = $('#capture-device');
  const options = deviceOptions();
  fillSelect(select, options.length ? options : [{ value: '', text: 'no device: add one under Devices' }]);
  const remembered = localStorage.getItem('studio.captureDevice');
  if (remembered && options.some((o) => o.value === remembered)) select.value = remembered;
  $('#capture-start').disabled = !options.length || !!following;
  if (visible) live();
}

function live() {
  const img = $('#capture-live');
  const device = $('#capture-device').value;
  const url = device ? `/api/devices/${enc(device)}/stream` : BLANK;
  if (!visible) return;
  if (img.getAttribute('src') !== url) img.src = url;
}

async function start(event) {
  event.preventDefault();
  const device = $('#capture-device').value;
  if (!device) {
    say($('#capture-message'), 'add a device first (Devices tab)', 'error');
    return;
  }
  say($('#capture-message'), '');
  clear($('#capture-result'));
  $('#capture-start').disabled = true;
  try {
    const answer = await post('/api/capture', { device, count: count() });
    follow(jobId(answer));
  } catch (exc) {
    $('#capture-start').disabled = false;
    say($('#capture-message'), `capture refused: ${describe(exc)}`, 'error');
  }
}

function follow(id) {
  if (!id) return;
  sessionStorage.setItem('studio.captureJob', id);
  const box = $('#capture-progress');
  box.hidden = false;
  box.dataset.state = 'running';
  $('#capture-start').disabled = true;
  $('#capture-bar').removeAttribute('value');
  $('#capture-progress-text').textContent = 'starting…';
  following = followJob(id, (job, exc) => {
    if (!job) {
      $('#capture-progress-text').textContent = `(studio: ${describe(exc)})`;
      return;
    }
    const p = job.progress || {};
    const total = p.total || count();
    const done = p.done || 0;
    $('#capture-bar').max = total;
    $('#capture-bar').value = done;
    $('#capture-progress-text').textContent = `${done} / ${total}${p.phase ? ` — ${p.phase}` : ''}`;
    if (done) refreshProjectSoon(1500);
  });
  following.then((job) => {
    following = null;
    sessionStorage.removeItem('studio.captureJob');
    $('#capture-start').disabled = !$('#capture-device').value;
    box.dataset.state = job.state;
    refreshProjectSoon(0);
    const result = clear($('#capture-result'));
    if (job.state === 'done') {
      const r = job.result || {};
      const parts = [];
      if (r.new !== undefined) parts.push(`${r.new} new frames`);
      if (r.kept !== undefined) parts.push(`${r.kept} frames in the project`);
      if (r.duplicates) parts.push(`${r.duplicates} near-duplicates skipped`);
      if (r.rejected) parts.push(`${r.rejected} broken frames refused`);
      say($('#capture-message'), parts.length ? `done: ${parts.join(', ')}` : 'done', 'ok');
      result.append(h('details', {}, h('summary', {}, 'details'), jsonView(job.result)));
      result.append(h('p', {}, h('a', { href: '#label' }, 'label them →')));
    } else {
      say($('#capture-message'), `capture failed: ${jobError(job)}`, 'error');
      if (job.result) result.append(jsonView(job.result));
    }
  });
}
