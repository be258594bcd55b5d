// Small DOM helpers shared by the views.

/** h('div', {class: 'x', id: 'y', onclick: fn, dataset: {a: 1}}, child, 'text', ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Put a message into `el` (kind: info, ok, warn, error); an empty text hides it. */
export function say(el, text, kind = 'info') {
  if (!el) return;
  el.textContent = text || '';
  el.dataset.kind = text ? kind : '';
  el.hidden = !text;
}

/** Run `fn` now and again `interval` ms after each run ends, until stop(); fn may return a new interval. */
export class Poller {
  constructor(fn, interval) {
    this.fn = fn;
    this.interval = interval;
    this.timer = null;
    this.running = false;
    this.generation = 0;
  }
  start() {
    if (this.running) return this;
    this.running = true;
    this.generation += 1;
    this.tick(this.generation);
    return this;
  }
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    return this;
  }
  /** Run again now (e.g. after a change), keeping the rhythm afterwards. */
  poke() {
    if (!this.running) return;
    clearTimeout(this.timer);
    this.generation += 1;
    this.tick(this.generation);
  }
  async tick(generation) {
    let next = this.interval;
    try {
      const answer = await this.fn();
      if (typeof answer === 'number') next = answer;
    } catch (exc) {
      console.warn('poll failed', exc);
    }
    if (this.running && generation === this.generation) this.timer = setTimeout(() => this.tick(generation), next);
  }
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
  n = Number(n);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

export function fmtNum(value, digits = 3) {
  if (value === null || value === undefined) return '–';
  if (typeof value !== 'number') return String(value);
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

export function fmtTime(value) {
  if (value === null || value === undefined || value === '') return '–';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString();
}

export function shortVersion(version) {
  return version ? String(version).slice(0, 12) : '–';
}

/** A <select>'s options from [{value, text}], keeping the chosen value when it is still there. */
export function fillSelect(select, options, keep = true) {
  const previous = select.value;
  clear(select);
  for (const option of options) select.append(h('option', { value: option.value }, option.text));
  if (keep && options.some((o) => o.value === previous)) select.value = previous;
}

/** A compact, readable rendering of any JSON value (for results whose shape varies). */
export function jsonView(value) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, '–');
  if (typeof value !== 'object') return h('span', {}, typeof value === 'number' ? fmtNum(value) : String(value));
  if (Array.isArray(value)) {
    if (!value.length) return h('span', { class: 'muted' }, 'none');
    if (value.every((v) => v === null || typeof v !== 'object')) return h('span', {}, value.map((v) => fmtNum(v)).join(', '));
    return h('ol', { class: 'json-list' }, value.map((v) => h('li', {}, jsonView(v))));
  }
  return h('dl', { class: 'json-dl' }, Object.entries(value).map(([k, v]) => [h('dt', {}, k), h('dd', {}, jsonView(v))]));
}

/** Class colours by class id (readable on photos, distinct for the first 12). */
const PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45',
  '#fabed4', '#469990', '#dcbeff', '#9a6324'];
export const classColor = (id) => (id === null || id === undefined || id < 0 ? '#888' : PALETTE[id % PALETTE.length]);

/** Is the keyboard focus in a place that takes typing (so single-key shortcuts must not fire)? */
export function typingInto(target) {
  if (!target || !target.tagName) return false;
  const tag = target.tagName.toLowerCase();
  if (tag === 'textarea' || target.isContentEditable) return true;
  if (tag === 'select') return true;
  if (tag === 'input') {
    const type = (target.type || 'text').toLowerCase();
    return !['checkbox', 'radio', 'button', 'submit', 'range'].includes(type);
  }
  return false;
}
