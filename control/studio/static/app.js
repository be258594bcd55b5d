// The studio page: tabs, a hash router and the page-wide message; each view is its own module.
import { describe } from './api.js';
import { $, $$, say } from './ui.js';
import { loadDevices, loadProject, on, project } from './state.js';
import * as devices from './devices.js';
import * as capture from './capture.js';
import * as label from './label.js';
import * as train from './train.js';

const VIEWS = { devices, capture, label, train };
let current = null;

/** Show a page-wide message (errors nobody else shows). */
export function pageMessage(text, kind = 'error') {
  say($('#message'), text, kind);
}

function parseHash() {
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const slash = hash.indexOf('/');
  const view = slash < 0 ? hash : hash.slice(0, slash);
  const arg = slash < 0 ? '' : hash.slice(slash + 1);
  return VIEWS[view] ? { view, arg } : { view: 'label', arg: '' };
}

function route() {
  const { view, arg } = parseHash();
  for (const button of $$('.tabs [role=tab]')) {
    const active = button.dataset.view === view;
    button.setAttribute('aria-selected', String(active));
    button.classList.toggle('active', active);
  }
  for (const name of Object.keys(VIEWS)) $(`#view-${name}`).hidden = name !== view;
  if (current && current !== view) VIEWS[current].hide();
  const first = current !== view;
  current = view;
  document.body.dataset.view = view;
  VIEWS[view].show(arg, first);
}

/** Change the hash without a new history entry per frame/device/run click. */
export function setRoute(view, arg = '', replace = true) {
  if (view !== current) return;   // a late answer of a view the person has left does not pull them back
  const hash = `#${view}${arg ? '/' + encodeURIComponent(arg) : ''}`;
  if (location.hash === hash) return;
  if (replace) history.replaceState(null, '', hash);
  else history.pushState(null, '', hash);
}

async function start() {
  for (const button of $$('.tabs [role=tab]')) {
    button.addEventListener('click', () => {
      const view = button.dataset.view;
      const remembered = VIEWS[view].routeArg ? VIEWS[view].routeArg() : '';
      location.hash = `#${view}${remembered ? '/' + encodeURIComponent(remembered) : ''}`;
    });
  }
  on('project', (p) => {
    $('#project-folder').textContent = p.folder;
    $('#project-folder').title = `project folder: ${p.folder}`;
  });
  for (const view of Object.values(VIEWS)) view.init({ pageMessage, setRoute });
  window.addEventListener('hashchange', route);
  try {
    await Promise.all([loadProject(), loadDevices()]);
    pageMessage('');
  } catch (exc) {
    pageMessage(`cannot load the project: ${describe(exc)}`);
  }
  if (!location.hash) {
    // a fresh project starts where the round starts: devices when none has frames yet
    const fresh = !project.counts || !project.counts.frames;
    history.replaceState(null, '', fresh ? '#devices' : '#label');
  }
  route();
}

window.studio = { views: VIEWS, project };
start();
