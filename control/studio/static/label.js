// Label view: filters and counts, the gallery of thumbnails, classes, import, exclusion, model
// suggestions, and the box editor of one frame (editor.js) with its keys.
import { describe, enc, get, post, put } from './api.js';
import { $, $$, clear, classColor, fillSelect, fmtNum, h, say, typingInto } from './ui.js';
import { emit, loadProject, on, project, refreshProjectSoon } from './state.js';
import { BoxEditor, FrameSession } from './editor.js';

const PAGE = 200;
const FILTERS = ['all', 'unlabelled', 'labelled', 'empty', 'problems', 'duplicates'];
let ctx = null;
let visible = false;
let filter = localStorage.getItem('studio.filter') || 'all';
let offset = 0;
let total = 0;
let frames = [];                // the current page of the current filter: [{name, state, boxes, problems, group, ...}]
let listToken = 0;
let openName = null;            // the frame in the editor
let session = null;
let editor = null;
const sessions = new Map();     // name -> FrameSession (undo history and pending saves survive navigation)
const knownCounts = {};
let openToken = 0;

export function init(context) {
  ctx = context;
  if (!FILTERS.includes(filter)) filter = 'all';
  editor = new BoxEditor($('#editor-canvas'), $('#editor-stage'));
  editor.currentClass = Number(localStorage.getItem('studio.class') || 0);
  editor.addEventListener('select', () => { renderBoxList(); renderProposals(); });
  editor.addEventListener('class', (e) => { localStorage.setItem('studio.class', String(e.detail)); renderClasses(); });
  editor.addEventListener('needclass', () => say($('#editor-message'), 'add a class first (Classes, on the left): a box needs one', 'error'));
  editor.addEventListener('zoom', (e) => { $('#zoom-level').textContent = `${Math.round(e.detail * 100)}%`; });

  for (const name of FILTERS) $(`#filter-${name}`).addEventListener('click', () => setFilter(name));
  $('#gallery-prev').addEventListener('click', () => loadPage(Math.max(0, offset - PAGE)));
  $('#gallery-next').addEventListener('click', () => { if (offset + PAGE < total) loadPage(offset + PAGE); });
  $('#gallery-refresh').addEventListener('click', () => { loadPage(offset); loadProject().catch(() => {}); loadModels(); });
  $('#exclude-invalid').addEventListener('click', excludeInvalid);
  $('#class-form').addEventListener('submit', addClass);
  $('#import-form').addEventListener('submit', importLabels);

  $('#editor-close').addEventListener('click', closeEditor);
  $('#frame-prev').addEventListener('click', () => step(-1));
  $('#frame-next').addEventListener('click', () => step(1));
  $('#zoom-in').addEventListener('click', () => editor.zoomBy(1.25));
  $('#zoom-out').addEventListener('click', () => editor.zoomBy(0.8));
  $('#zoom-fit').addEventListener('click', () => editor.fit());
  $('#undo').addEventListener('click', undo);
  $('#delete-box').addEventListener('click', () => editor.deleteSelected());
  $('#no-objects').addEventListener('click', noObjects);
  $('#exclude-frame').addEventListener('click', () => openName && exclude([openName]));
  $('#suggest').addEventListener('click', () => suggest());
  $('#accept-all').addEventListener('click', () => editor.acceptAll());
  $('#reject-all').addEventListener('click', () => editor.rejectAll());
  $('#suggest-model').addEventListener('change', () => localStorage.setItem('studio.model', $('#suggest-model').value));
  $('#suggest-threshold').addEventListener('change', () => localStorage.setItem('studio.minScore', $('#suggest-threshold').value));
  $('#auto-suggest').addEventListener('change', () => localStorage.setItem('studio.autoSuggest', $('#auto-suggest').checked ? '1' : ''));
  $('#auto-suggest').checked = localStorage.getItem('studio.autoSuggest') === '1';
  if (localStorage.getItem('studio.minScore')) $('#suggest-threshold').value = localStorage.getItem('studio.minScore');
  document.addEventListener('keydown', keys);
  on('project', () => { renderCounts(); renderClasses(); });
}

export const routeArg = () => openName || '';

export function show(arg, first) {
  visible = true;
  loadProject().catch((exc) => ctx.pageMessage(`cannot load the project: ${describe(exc)}`));
  if (first || !frames.length) loadPage(offset);
  loadModels();
  if (arg && arg !== openName) openFrame(arg);
  else if (!arg && openName) ctx.setRoute('label', openName);
  if (openName) requestAnimationFrame(() => editor.autoFit && editor.fit());
}

export function hide() {
  visible = false;
}

// -- counts, filters, gallery -----------------------------------------------------------------
function renderCounts() {
  const counts = project.counts || {};
  const value = { all: counts.frames, unlabelled: counts.unlabelled, labelled: counts.labelled, empty: counts.empty, problems: counts.problems, duplicates: knownCounts.duplicates };
  for (const name of FILTERS) {
    const button = $(`#filter-${name}`);
    button.classList.toggle('active', name === filter);
    button.setAttribute('aria-pressed', String(name === filter));
    $('.count', button).textContent = value[name] === undefined || value[name] === null ? '' : String(value[name]);
  }
  $('#count-excluded').textContent = String(counts.excluded ?? 0);
}

function setFilter(name) {
  filter = name;
  localStorage.setItem('studio.filter', name);
  renderCounts();
  loadPage(0);
}

async function loadPage(start) {
  const token = ++listToken;
  $('#gallery').setAttribute('aria-busy', 'true');
  try {
    const answer = await get(`/api/frames?filter=${enc(filter)}&offset=${start}&limit=${PAGE}`);
    if (token !== listToken) return;
    frames = answer.frames || [];
    total = answer.total ?? frames.length;
    offset = start;
    if (filter === 'duplicates') knownCounts.duplicates = total;
    renderCounts();
    renderGallery();
    if ($('#label-message').textContent.startsWith('cannot list')) say($('#label-message'), '');
  } catch (exc) {
    if (token === listToken) say($('#label-message'), `cannot list the frames: ${describe(exc)}`, 'error');
  } finally {
    if (token === listToken) $('#gallery').removeAttribute('aria-busy');
  }
}

const boxCount = (frame) => (Array.isArray(frame.boxes) ? frame.boxes.length : Number(frame.boxes) || 0);

function badgeText(frame) {
  if (frame.problems && frame.problems.length) return `! ${frame.problems.length}`;
  if (frame.state === 'labelled') return String(boxCount(frame));
  if (frame.state === 'empty') return '∅';
  return '–';
}

function thumb(frame) {
  const problems = frame.problems || [];
  const title = [frame.name, frame.state, ...problems.map((p) => (typeof p === 'string' ? p : p.message || JSON.stringify(p)))].join('\n');
  const el = h('div', {
    class: `thumb${frame.name === openName ? ' open' : ''}`, role: 'button', tabindex: 0, title,
    dataset: { name: frame.name, state: frame.state || 'unlabelled', problems: String(problems.length), ...(frame.group !== undefined && frame.group !== null ? { group: String(frame.group) } : {}) },
    onclick: (e) => { if (!e.target.closest('.thumb-exclude')) openFrame(frame.name); },
    onkeydown: (e) => { if (e.key === 'Enter') openFrame(frame.name); },
  },
  h('img', { dataset: { src: `/api/frames/${enc(frame.name)}/thumb` }, decoding: 'async', alt: frame.name, width: 160, height: 120 }),
  h('span', { class: `badge ${problems.length ? 'problems' : frame.state || 'unlabelled'}` }, badgeText(frame)),
  filter === 'duplicates' && frame.group !== undefined && frame.group !== null ? h('span', { class: 'group', style: { background: classColor(frame.group) } }, `group ${frame.group}`) : null,
  h('button', { type: 'button', class: 'thumb-exclude', title: 'exclude this frame (moved to excluded/)', onclick: () => exclude([frame.name]) }, '✕'),
  h('span', { class: 'caption' }, frame.name.replace(/\.(jpe?g|png)$/i, '')));
  return el;
}

// Thumbnails load when they come within a row of the gallery's view: the browser's own lazy
// loading fetches several screens ahead, and those requests hold its few connections to the
// studio while a person waits for the frame they clicked.
let thumbLoader = null;
function loadThumbsNearView(gallery) {
  thumbLoader ??= new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      entry.target.src = entry.target.dataset.src;
      thumbLoader.unobserve(entry.target);
    }
  }, { root: gallery, rootMargin: '120px 0px' });
  thumbLoader.disconnect();
  for (const img of gallery.querySelectorAll('img[data-src]')) thumbLoader.observe(img);
}

function renderGallery() {
  const gallery = $('#gallery');
  const fragment = document.createDocumentFragment();
  let lastGroup = null;
  for (const frame of frames) {
    const el = thumb(frame);
    if (filter === 'duplicates' && frame.group !== lastGroup) el.classList.add('group-start');
    lastGroup = frame.group;
    fragment.append(el);
  }
  clear(gallery).append(fragment);
  loadThumbsNearView(gallery);
  if (!frames.length) gallery.append(h('p', { class: 'muted empty-note' }, filter === 'all' ? 'No frames yet: capture some (Capture tab) or import a folder.' : `No ${filter} frames.`));
  $('#gallery-total').textContent = `${total} ${filter === 'all' ? '' : filter + ' '}frame${total === 1 ? '' : 's'}`;
  $('#gallery-page').textContent = total > PAGE ? `${offset + 1}–${Math.min(offset + PAGE, total)}` : '';
  $('#gallery-prev').disabled = offset === 0;
  $('#gallery-next').disabled = offset + PAGE >= total;
  positionText();
}

function updateThumb(name, state, boxes) {
  const frame = frames.find((f) => f.name === name);
  if (frame) {
    frame.state = state;
    frame.boxes = boxes;
  }
  const el = document.querySelector(`#gallery .thumb[data-name="${CSS.escape(name)}"]`);
  if (el && frame) {
    el.dataset.state = state;
    const badge = $('.badge', el);
    badge.className = `badge ${frame.problems && frame.problems.length ? 'problems' : state}`;
    badge.textContent = badgeText(frame);
  }
}

// -- classes ----------------------------------------------------------------------------------
function renderClasses() {
  editor.classes = project.classes || [];
  if (editor.currentClass >= editor.classes.length) editor.currentClass = 0;
  const list = clear($('#class-list'));
  editor.classes.forEach((name, id) => {
    list.append(h('li', {
      class: `class-item${id === editor.currentClass ? ' current' : ''}`, dataset: { classId: String(id) }, role: 'button', tabindex: 0,
      title: id < 9 ? `key ${id + 1}` : '',
      onclick: () => editor.chooseClass(id),
    },
    h('span', { class: 'key' }, id < 9 ? String(id + 1) : ''), h('span', { class: 'swatch', style: { background: classColor(id) } }), h('span', { class: 'name' }, name)));
  });
  if (!editor.classes.length) list.append(h('li', { class: 'muted small' }, 'no class yet: add one below'));
  editor.draw();
  renderBoxList();
}

async function addClass(event) {
  event.preventDefault();
  const name = $('#class-new').value.trim();
  if (!name) return;
  try {
    const answer = await put('/api/classes', { classes: [...project.classes, name] });
    project.classes = answer.classes || [...project.classes, name];
    $('#class-new').value = '';
    emit('project', project);
    say($('#label-message'), `added class ${name}`, 'ok');
  } catch (exc) {
    say($('#label-message'), `cannot add the class: ${describe(exc)}`, 'error');
  }
}

// -- exclusion and import ---------------------------------------------------------------------
async function exclude(names) {
  try {
    const answer = await post('/api/frames/exclude', { names });
    const gone = new Set(answer.excluded || names);
    afterExclude(gone);
    say($('#label-message'), `excluded ${[...gone].join(', ')} (moved to excluded/)`, 'ok');
  } catch (exc) {
    say($('#label-message'), `cannot exclude: ${describe(exc)}`, 'error');
  }
}

function afterExclude(gone) {
  if (openName && gone.has(openName)) {
    const index = frames.findIndex((f) => f.name === openName);
    const next = frames.slice(index + 1).find((f) => !gone.has(f.name)) || frames.slice(0, Math.max(0, index)).reverse().find((f) => !gone.has(f.name));
    if (next) openFrame(next.name);
    else closeEditor();
  }
  frames = frames.filter((f) => !gone.has(f.name));
  total = Math.max(0, total - gone.size);
  renderGallery();
  refreshProjectSoon(0);
}

async function excludeInvalid() {
  say($('#label-message'), 'checking every frame…');
  try {
    const answer = await post('/api/frames/exclude', { invalid: true });
    const gone = answer.excluded || [];
    say($('#label-message'), gone.length ? `excluded ${gone.length} invalid frame${gone.length === 1 ? '' : 's'}: ${gone.join(', ')}` : 'no invalid frame found', 'ok');
    if (gone.length) afterExclude(new Set(gone));
    loadPage(offset);
  } catch (exc) {
    say($('#label-message'), `cannot exclude invalid frames: ${describe(exc)}`, 'error');
  }
}

async function importLabels(event) {
  event.preventDefault();
  const path = $('#import-path').value.trim();
  if (!path) return;
  say($('#import-result'), 'importing…');
  try {
    const answer = await post('/api/import', { path, format: $('#import-format').value });
    say($('#import-result'), `added ${answer.added ?? 0} images, ${answer.labelled ?? 0} with labels`, 'ok');
    await loadProject().catch(() => {});
    loadPage(offset);
  } catch (exc) {
    say($('#import-result'), `import failed: ${describe(exc)}`, 'error');
  }
}

// -- the editor -------------------------------------------------------------------------------
function loadImage(name) {
  return new Promise((resolve) => {
    const img = new Image();
    img.decoding = 'async';
    img.fetchPriority = 'high';  // before the gallery's thumbnails still in flight
    img.onload = () => resolve(img);
    img.onerror = () => resolve(img);
    img.src = `/api/frames/${enc(name)}/image`;
  });
}

async function openFrame(name) {
  const token = ++openToken;
  openName = name;
  delete $('#editor-canvas').dataset.frame;  // set again once this frame is fully open
  ctx.setRoute('label', name);
  $('#label-layout').classList.add('editing');
  $('#editor').hidden = false;
  $('#editor-frame').textContent = name;
  say($('#editor-message'), '');
  for (const el of $$('#gallery .thumb.open')) el.classList.remove('open');
  const el = document.querySelector(`#gallery .thumb[data-name="${CSS.escape(name)}"]`);
  if (el) {
    el.classList.add('open');
    el.scrollIntoView({ block: 'nearest' });
  }
  positionText();
  let doc, image;
  try {  // labels and pixels at once: opening costs one round trip, not two
    [doc, image] = await Promise.all([get(`/api/frames/${enc(name)}/labels`), loadImage(name)]);
  } catch (exc) {
    if (token !== openToken) return;
    say($('#editor-message'), `cannot open ${name}: ${describe(exc)}`, 'error');
    return;
  }
  if (token !== openToken) return;
  let s = sessions.get(name);
  if (!s) {
    s = new FrameSession(doc);
    s.addEventListener('change', () => { if (s === session) { editor.draw(); renderBoxList(); renderProposals(); renderFrameState(); } });
    s.addEventListener('savestate', (e) => { if (s === session) renderSaveState(e.detail); });
    s.addEventListener('saved', (e) => {
      updateThumb(e.detail.name, e.detail.state, e.detail.boxes);
      refreshProjectSoon();
    });
    s.addEventListener('conflict', () => {
      if (s !== session) return;
      editor.select(null);
      conflictMessage();
      refreshProjectSoon(0);
    });
    sessions.set(name, s);
  } else if (!s.busy && doc.etag !== s.etag) {
    s.adopt(doc);        // changed elsewhere while we were away: show the saved labels
    s.undoStack = [];
  }
  session = s;
  editor.open(s, image);
  renderFrameState();
  renderBoxList();
  renderProposals();
  renderSaveState(s.saveState);
  if (s.saveState.state === 'conflict') conflictMessage();
  renderProblems();
  say($('#suggest-message'), '');
  $('#editor-canvas').focus({ preventScroll: true });
  $('#editor-canvas').dataset.frame = name;
  if ($('#auto-suggest').checked && !s.proposals.length && $('#suggest-model').value) suggest(true);
  const index = frames.findIndex((f) => f.name === name);
  if (index >= 0 && frames[index + 1]) new Image().src = `/api/frames/${enc(frames[index + 1].name)}/image`;
}

function closeEditor() {
  openName = null;
  session = null;
  openToken += 1;
  $('#editor').hidden = true;
  $('#label-layout').classList.remove('editing');
  for (const el of $$('#gallery .thumb.open')) el.classList.remove('open');
  editor.session = null;
  ctx.setRoute('label', '');
}

function positionText() {
  const index = frames.findIndex((f) => f.name === openName);
  $('#editor-position').textContent = index >= 0 ? `${offset + index + 1} / ${total} ${filter}` : '';
}

async function step(direction) {
  if (!openName) return;
  const index = frames.findIndex((f) => f.name === openName);
  if (index < 0) {
    if (frames.length) openFrame(frames[direction > 0 ? 0 : frames.length - 1].name);
    return;
  }
  const target = index + direction;
  if (target >= 0 && target < frames.length) {
    openFrame(frames[target].name);
  } else if (target >= frames.length && offset + PAGE < total) {
    await loadPage(offset + PAGE);
    if (frames.length) openFrame(frames[0].name);
  } else if (target < 0 && offset > 0) {
    await loadPage(Math.max(0, offset - PAGE));
    if (frames.length) openFrame(frames[frames.length - 1].name);
  } else {
    say($('#editor-message'), direction > 0 ? `that was the last ${filter === 'all' ? '' : filter + ' '}frame` : 'this is the first frame', 'info');
  }
}

function undo() {
  if (!session) return;
  if (!session.undo()) say($('#editor-message'), 'nothing to undo on this frame', 'info');
  else {
    editor.select(null);
    say($('#editor-message'), '');
  }
}

function noObjects() {
  if (!session) return;
  session.change((boxes, proposals) => { boxes.splice(0, boxes.length); proposals.splice(0, proposals.length); });
  editor.select(null);
}

function renderFrameState() {
  const el = $('#editor-state');
  const state = session ? session.state : '';
  el.textContent = state;
  el.className = `badge ${state}`;
  el.dataset.state = state;
}

function renderSaveState({ state, message }) {
  const el = $('#save-state');
  el.dataset.state = state;
  el.textContent = state === 'saving' ? 'saving…' : state === 'saved' ? 'saved' : state === 'conflict' ? 'edited elsewhere — reloaded' : message || state;
  el.title = message || '';
  if (state === 'saving') {   // a new change: the person has seen the error or the conflict
    const box = $('#editor-message');
    if (box.dataset.kind === 'error' || box.dataset.kind === 'conflict') say(box, '');
  }
  if (state === 'error') say($('#editor-message'), message, 'error');
}

function conflictMessage() {
  say($('#editor-message'), 'This frame was changed in another tab or by the command line. The first save wins — showing the saved labels; redo your change on top of them.', 'conflict');
}

function renderProblems() {
  const el = $('#frame-problems');
  const frame = frames.find((f) => f.name === openName);
  const problems = (frame && frame.problems) || [];
  clear(el);
  el.hidden = !problems.length;
  if (problems.length) {
    el.append(h('h4', {}, 'Problems'), h('ul', {}, problems.map((p) => h('li', {}, typeof p === 'string' ? p : p.message || JSON.stringify(p)))));
  }
}

function renderBoxList() {
  const list = clear($('#box-list'));
  if (!session) return;
  if (!session.boxes.length) {
    list.append(h('li', { class: 'muted small' }, session.state === 'empty' ? 'no objects here (saved as empty)' : 'no box yet: drag on the image'));
  }
  session.boxes.forEach((b, i) => {
    const selected = editor.selected && editor.selected.kind === 'box' && editor.selected.index === i;
    list.append(h('li', { class: `box-row${selected ? ' selected' : ''}`, dataset: { index: String(i), classId: String(b.class_id) }, onclick: () => editor.select({ kind: 'box', index: i }) },
      h('span', { class: 'swatch', style: { background: classColor(b.class_id) } }),
      h('span', { class: 'name' }, editor.classes[b.class_id] ?? `class ${b.class_id}`),
      h('span', { class: 'small muted coords' }, b.box.map((v) => fmtNum(v, 1)).join(', ')),
      h('button', { type: 'button', class: 'box-delete small', title: 'delete', onclick: (e) => { e.stopPropagation(); editor.select({ kind: 'box', index: i }); editor.deleteSelected(); } }, '✕')));
  });
}

function renderProposals() {
  const list = clear($('#proposal-list'));
  const proposals = session ? session.proposals : [];
  $('#accept-all').disabled = !proposals.length;
  $('#reject-all').disabled = !proposals.length;
  proposals.forEach((p, i) => {
    const selected = editor.selected && editor.selected.kind === 'proposal' && editor.selected.index === i;
    const id = editor.classFor(p);
    list.append(h('li', { class: `proposal${selected ? ' selected' : ''}`, dataset: { index: String(i) }, onclick: () => editor.select({ kind: 'proposal', index: i }) },
      h('span', { class: 'swatch dashed', style: { borderColor: classColor(id) } }),
      h('span', { class: 'name' }, editor.classes[id] ?? p.label ?? '?'),
      h('span', { class: 'score' }, Number(p.score).toFixed(2)),
      h('button', { type: 'button', class: 'proposal-accept small', onclick: (e) => { e.stopPropagation(); editor.acceptProposal(i); } }, 'accept'),
      h('button', { type: 'button', class: 'proposal-reject small', onclick: (e) => { e.stopPropagation(); editor.rejectProposal(i); } }, 'reject')));
  });
}

// -- suggestions ------------------------------------------------------------------------------
async function loadModels() {
  try {
    const models = (await get('/api/models')) || [];
    const options = models.map((m) => ({ value: m.id, text: `${m.name || m.id}${m.version ? ' ' + String(m.version).slice(0, 8) : ''} — ${m.source || m.id}` }));
    const select = $('#suggest-model');
    fillSelect(select, options.length ? options : [{ value: '', text: 'no model yet (train one, or add a device)' }]);
    const remembered = localStorage.getItem('studio.model');
    if (remembered && options.some((o) => o.value === remembered)) select.value = remembered;
    $('#suggest').disabled = !options.length;
  } catch (exc) {
    fillSelect($('#suggest-model'), [{ value: '', text: `models: ${describe(exc)}` }]);
    $('#suggest').disabled = true;
  }
}

async function suggest(auto = false) {
  const name = openName;
  const s = session;
  const model = $('#suggest-model').value;
  if (!name || !s) return;
  if (!model) {
    say($('#suggest-message'), 'choose a model first', 'error');
    return;
  }
  const minScore = Number($('#suggest-threshold').value);
  say($('#suggest-message'), auto ? 'auto-suggesting…' : 'asking the model…');
  $('#suggest').disabled = true;
  try {
    const answer = await post(`/api/frames/${enc(name)}/suggest`, { model, threshold: Number.isFinite(minScore) ? minScore : 0.3 });
    const boxes = (answer && answer.boxes) || [];
    s.setProposals(boxes);
    if (s === session) {
      say($('#suggest-message'), boxes.length ? `${boxes.length} proposal${boxes.length === 1 ? '' : 's'} (dashed): accept, adjust or reject them` : 'no proposal above the minimum score', 'info');
    }
  } catch (exc) {
    if (s === session) say($('#suggest-message'), `no suggestions: ${describe(exc)}`, 'error');
  } finally {
    $('#suggest').disabled = false;
  }
}

// -- keys -------------------------------------------------------------------------------------
function keys(event) {
  if (!visible || !openName || !session) return;
  if (typingInto(event.target)) return;
  const key = event.key;
  if ((event.ctrlKey || event.metaKey) && !event.altKey && (key === 'z' || key === 'Z') && !event.shiftKey) {
    event.preventDefault();
    undo();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (key === 'Delete' || key === 'Backspace') {
    event.preventDefault();
    editor.deleteSelected();
  } else if (/^[1-9]$/.test(key)) {
    event.preventDefault();
    editor.chooseClass(Number(key) - 1);
  } else if (key === 'ArrowRight') {
    event.preventDefault();
    step(1);
  } else if (key === 'ArrowLeft') {
    event.preventDefault();
    step(-1);
  } else if (key === '+' || key === '=') {
    editor.zoomBy(1.25);
  } else if (key === '-') {
    editor.zoomBy(0.8);
  } else if (key === '0') {
    editor.fit();
  } else if (key === 'Escape') {
    editor.select(null);
  } else if (key === 'Enter' && editor.selected && editor.selected.kind === 'proposal') {
    event.preventDefault();
    editor.acceptProposal(editor.selected.index);
  }
}
