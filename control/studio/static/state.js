// State shared by the views: the project (classes, counts) and the devices, with change events.
import { get } from './api.js';

export const bus = new EventTarget();
export const emit = (name, detail) => bus.dispatchEvent(new CustomEvent(name, { detail }));
export const on = (name, fn) => bus.addEventListener(name, (event) => fn(event.detail));

export const project = { folder: '', classes: [], counts: {} };
export let devices = [];

export async function loadProject() {
  const data = await get('/api/project');
  Object.assign(project, { folder: data.folder || '', classes: data.classes || [], counts: data.counts || {} });
  emit('project', project);
  return project;
}

let projectTimer = null;
/** Reload the project soon (counts change with every save; one request for a burst of saves). */
export function refreshProjectSoon(delay = 400) {
  clearTimeout(projectTimer);
  projectTimer = setTimeout(() => loadProject().catch(() => {}), delay);
}

export async function loadDevices() {
  devices = (await get('/api/devices')) || [];
  emit('devices', devices);
  return devices;
}

export function deviceOptions() {
  return devices.map((d) => ({ value: d.id, text: d.name && d.name !== d.url ? `${d.name} (${d.url})` : d.url || d.id }));
}
