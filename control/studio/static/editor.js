// The box editor: FrameSession holds one frame's labels (boxes, proposals, etag, undo) and saves
// every change at once; BoxEditor draws a session on a <canvas> and turns the mouse into changes.
import { del, describe, enc, get, put } from './api.js';
import { classColor } from './ui.js';

const UNDO_LIMIT = 50;
const HANDLE = 5;          // half the side of a corner handle, in screen px
const GRAB = 8;            // how close to a corner counts as grabbing it, in screen px
const DRAG = 3;            // screen px a press must travel to become a drag
const MIN_BOX = 2;         // smallest box side, image px

const copyBoxes = (boxes) => boxes.map((b) => ({ class_id: b.class_id, box: [...b.box] }));

/** One frame's labels as the page holds them, saved through PUT/DELETE .../labels with If-Match. */
export class FrameSession extends EventTarget {
  constructor(doc) {
    super();
    this.name = doc.name;
    this.undoStack = [];
    this.proposals = [];
    this.saving = false;
    this.dirty = false;
    this.retry = null;
    this.saveState = { state: 'saved', message: '' };
    this.adopt(doc);
  }

  adopt(doc) {
    this.width = doc.width;
    this.height = doc.height;
    this.etag = doc.etag ?? null;
    this.boxes = (doc.boxes || []).map((b) => ({ class_id: b.class_id, box: b.box.map(Number) }));
    this.state = doc.state || (this.boxes.length ? 'labelled' : 'unlabelled');
  }

  get busy() {
    return this.saving || this.dirty;
  }

  snapshot() {
    return { state: this.state, boxes: copyBoxes(this.boxes), proposals: this.proposals.map((p) => ({ ...p, box: [...p.box] })) };
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  /** Apply `mutate(boxes, proposals)` as one undoable change and save it. */
  change(mutate) {
    this.undoStack.push(this.snapshot());
    if (this.undoStack.length > UNDO_LIMIT) this.undoStack.shift();
    mutate(this.boxes, this.proposals);
    this.state = this.boxes.length ? 'labelled' : 'empty';
    this.emit('change');
    this.save();
  }

  undo() {
    const before = this.undoStack.pop();
    if (!before) return false;
    this.boxes = before.boxes;
    this.proposals = before.proposals;
    this.state = before.state;
    this.emit('change');
    this.save();
    return true;
  }

  setProposals(proposals) {
    this.proposals = proposals.map((p) => ({ ...p, box: p.box.map(Number) }));
    this.emit('change');
  }

  setSaveState(state, message = '') {
    this.saveState = { state, message };
    this.emit('savestate', this.saveState);
  }

  /** Save the labels as they are now; a change during a save is sent right after it. */
  async save() {
    clearTimeout(this.retry);
    if (this.saving) {
      this.dirty = true;
      return;
    }
    this.saving = true;
    try {
      do {
        this.dirty = false;
        const wanted = this.snapshot();
        this.setSaveState('saving');
        const headers = this.etag ? { 'If-Match': this.etag } : {};
        const path = `/api/frames/${enc(this.name)}/labels`;
        let doc;
        try {
          doc = wanted.state === 'unlabelled' ? await del(path, headers)
            : await put(path, { boxes: wanted.boxes.map((b) => ({ class_id: b.class_id, box: b.box })) }, headers);
        } catch (exc) {
          if (exc.status === 409 && (exc.code === 'edited_elsewhere' || exc.body?.current || exc.body?.error?.current)) {
            await this.conflict(exc);
          } else {
            this.setSaveState('error', `not saved: ${describe(exc)}`);
            if (exc.status === 0 || exc.status >= 500) this.retry = setTimeout(() => this.save(), 3000);
          }
          return;
        }
        if (doc && doc.etag !== undefined) this.etag = doc.etag;
        if (doc && doc.state && !this.dirty) this.state = doc.state;
        this.emit('saved', { name: this.name, state: this.state, boxes: this.boxes.length, doc });
      } while (this.dirty);
      this.setSaveState('saved');
    } finally {
      this.saving = false;
    }
  }

  /** 409 edited_elsewhere: the first save won; show the saved labels and start over from them. */
  async conflict(exc) {
    let current = exc.body?.current || exc.body?.error?.current;
    if (!current) {
      try {
        current = await get(`/api/frames/${enc(this.name)}/labels`);
      } catch (err) {
        current = null;
      }
    }
    this.dirty = false;
    this.undoStack = [];
    if (current) this.adopt({ width: this.width, height: this.height, ...current });
    this.emit('change');
    this.emit('saved', { name: this.name, state: this.state, boxes: this.boxes.length, doc: current });
    this.setSaveState('conflict', 'this frame was changed in another tab or by the command line; the first save wins — showing the saved labels. Redo your change on top of them.');
    this.emit('conflict', current);
  }
}

/** Draws a FrameSession on a canvas and edits it with the mouse. */
export class BoxEditor extends EventTarget {
  constructor(canvas, stage) {
    super();
    this.canvas = canvas;
    this.stage = stage;
    this.ctx = canvas.getContext('2d');
    this.session = null;
    this.image = null;
    this.scale = 1;
    this.classes = [];
    this.currentClass = 0;
    this.selected = null;          // {kind: 'box'|'proposal', index}
    this.drag = null;
    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    canvas.addEventListener('pointerup', (e) => this.up(e));
    canvas.addEventListener('pointercancel', () => { this.drag = null; this.draw(); });
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    stage.addEventListener('wheel', (e) => this.wheel(e), { passive: false });
    new ResizeObserver(() => { if (this.autoFit) this.fit(); }).observe(stage);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  open(session, image) {
    this.session = session;
    this.image = image;
    this.selected = null;
    this.drag = null;
    this.fit();
  }

  get W() { return this.session ? this.session.width || (this.image && this.image.naturalWidth) || 1 : 1; }
  get H() { return this.session ? this.session.height || (this.image && this.image.naturalHeight) || 1 : 1; }

  // -- zoom -----------------------------------------------------------------------------------
  fit() {
    if (!this.session) return;
    const width = Math.max(100, this.stage.clientWidth - 8);
    const height = Math.max(100, this.stage.clientHeight - 8);
    this.autoFit = true;
    this.setScale(Math.min(width / this.W, height / this.H), null, true);
  }

  maxScale() {
    const dpr = window.devicePixelRatio || 1;
    return Math.max(0.05, Math.min(32, 8000 / (Math.max(this.W, this.H) * dpr)));
  }

  /** Zoom to `scale`, keeping the image point under `anchor` ({clientX, clientY}) in place. */
  setScale(scale, anchor = null, fitting = false) {
    if (!fitting) this.autoFit = false;
    scale = Math.min(this.maxScale(), Math.max(0.05, scale));
    let keep = null;
    if (anchor) {
      const rect = this.canvas.getBoundingClientRect();
      keep = { x: (anchor.clientX - rect.left) / this.scale, y: (anchor.clientY - rect.top) / this.scale, cx: anchor.clientX, cy: anchor.clientY };
    }
    this.scale = scale;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.style.width = `${Math.round(this.W * scale)}px`;
    this.canvas.style.height = `${Math.round(this.H * scale)}px`;
    this.canvas.width = Math.max(1, Math.round(this.W * scale * dpr));
    this.canvas.height = Math.max(1, Math.round(this.H * scale * dpr));
    this.canvas.dataset.zoom = String(scale);
    if (keep) {
      const rect = this.canvas.getBoundingClientRect();
      this.stage.scrollLeft += rect.left + keep.x * scale - keep.cx;
      this.stage.scrollTop += rect.top + keep.y * scale - keep.cy;
    }
    this.emit('zoom', scale);
    this.draw();
  }

  zoomBy(factor, anchor = null) {
    this.setScale(this.scale * factor, anchor);
  }

  wheel(event) {
    if (!this.session) return;
    event.preventDefault();
    this.zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15, event);
  }

  // -- geometry -------------------------------------------------------------------------------
  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: (event.clientX - rect.left) / this.scale, y: (event.clientY - rect.top) / this.scale };
  }

  corners(box) {
    const [x0, y0, x1, y1] = box;
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
  }

  handleAt(p, box) {
    const corners = this.corners(box);
    for (let i = 0; i < 4; i += 1) {
      if (Math.abs(corners[i][0] - p.x) * this.scale <= GRAB && Math.abs(corners[i][1] - p.y) * this.scale <= GRAB) return i;
    }
    return -1;
  }

  /** The smallest box (or proposal, which lie on top) under p. */
  itemAt(p) {
    const pad = 3 / this.scale;
    const find = (list, kind) => {
      let best = null;
      list.forEach((item, index) => {
        const [x0, y0, x1, y1] = item.box;
        if (p.x >= x0 - pad && p.x <= x1 + pad && p.y >= y0 - pad && p.y <= y1 + pad) {
          const area = (x1 - x0) * (y1 - y0);
          if (!best || area < best.area) best = { kind, index, area };
        }
      });
      return best;
    };
    const hit = find(this.session.proposals, 'proposal') || find(this.session.boxes, 'box');
    return hit ? { kind: hit.kind, index: hit.index } : null;
  }

  item(sel = this.selected) {
    if (!sel || !this.session) return null;
    const list = sel.kind === 'box' ? this.session.boxes : this.session.proposals;
    return list[sel.index] || null;
  }

  /** A box in image px: ordered corners, inside the image, whole pixels, at least MIN_BOX wide. */
  clean(box) {
    const W = this.W;
    const H = this.H;
    let [x0, y0, x1, y1] = box;
    if (x1 < x0) [x0, x1] = [x1, x0];
    if (y1 < y0) [y0, y1] = [y1, y0];
    x0 = Math.max(0, Math.min(W, Math.round(x0)));
    x1 = Math.max(0, Math.min(W, Math.round(x1)));
    y0 = Math.max(0, Math.min(H, Math.round(y0)));
    y1 = Math.max(0, Math.min(H, Math.round(y1)));
    if (x1 - x0 < 1) { if (x0 + 1 <= W) x1 = x0 + 1; else x0 = x1 - 1; }
    if (y1 - y0 < 1) { if (y0 + 1 <= H) y1 = y0 + 1; else y0 = y1 - 1; }
    return [x0, y0, x1, y1];
  }

  // -- mouse ----------------------------------------------------------------------------------
  down(event) {
    if (!this.session || event.button !== 0) return;
    this.canvas.focus({ preventScroll: true });
    this.canvas.setPointerCapture(event.pointerId);
    const p = this.toImage(event);
    const start = { p, clientX: event.clientX, clientY: event.clientY };
    const current = this.item();
    if (current && !event.shiftKey) {
      const corner = this.handleAt(p, current.box);
      if (corner >= 0) {
        this.drag = { mode: 'resize', target: { ...this.selected }, corner, orig: [...current.box], preview: [...current.box], ...start, moved: false };
        return;
      }
    }
    const hit = event.shiftKey ? null : this.itemAt(p);
    if (hit) {
      this.select(hit);
      const item = this.item(hit);
      this.drag = { mode: 'move', target: hit, orig: [...item.box], preview: [...item.box], ...start, moved: false };
    } else {
      this.drag = { mode: 'draw', ...start, preview: [p.x, p.y, p.x, p.y], moved: false };
    }
    this.draw();
  }

  move(event) {
    if (!this.session) return;
    const p = this.toImage(event);
    const drag = this.drag;
    if (!drag) {
      this.canvas.style.cursor = this.cursorAt(p);
      return;
    }
    if (!drag.moved && Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY) < DRAG) return;
    drag.moved = true;
    if (drag.mode === 'draw') {
      drag.preview = [drag.p.x, drag.p.y, Math.max(0, Math.min(this.W, p.x)), Math.max(0, Math.min(this.H, p.y))];
    } else if (drag.mode === 'move') {
      const [x0, y0, x1, y1] = drag.orig;
      let dx = Math.round(p.x - drag.p.x);
      let dy = Math.round(p.y - drag.p.y);
      dx = Math.max(-x0, Math.min(this.W - x1, dx));
      dy = Math.max(-y0, Math.min(this.H - y1, dy));
      drag.preview = [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
    } else if (drag.mode === 'resize') {
      const box = [...drag.orig];
      const x = Math.max(0, Math.min(this.W, p.x));
      const y = Math.max(0, Math.min(this.H, p.y));
      if (drag.corner === 0 || drag.corner === 3) box[0] = x; else box[2] = x;
      if (drag.corner === 0 || drag.corner === 1) box[1] = y; else box[3] = y;
      drag.preview = box;
    }
    this.draw();
  }

  up(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag || !this.session) return;
    if (this.canvas.hasPointerCapture(event.pointerId)) this.canvas.releasePointerCapture(event.pointerId);
    if (drag.mode === 'draw') {
      const [ax, ay, bx, by] = drag.preview;
      if (drag.moved && Math.abs(bx - ax) >= MIN_BOX && Math.abs(by - ay) >= MIN_BOX) {
        if (!this.classes.length) {
          this.emit('needclass');
          this.draw();
          return;
        }
        const box = this.clean(drag.preview);
        const classId = this.currentClass;
        this.session.change((boxes) => boxes.push({ class_id: classId, box }));
        this.select({ kind: 'box', index: this.session.boxes.length - 1 });
      } else {
        this.select(null);
      }
    } else if (drag.moved) {
      const box = this.clean(drag.preview);
      const same = box.every((v, i) => v === drag.orig[i]);
      if (drag.target.kind === 'box') {
        if (!same) this.session.change((boxes) => { boxes[drag.target.index].box = box; });
      } else {
        this.acceptProposal(drag.target.index, box);   // adjusting a proposal accepts it
      }
    }
    this.draw();
  }

  cursorAt(p) {
    const current = this.item();
    if (current) {
      const corner = this.handleAt(p, current.box);
      if (corner >= 0) return corner % 2 === 0 ? 'nwse-resize' : 'nesw-resize';
    }
    return this.itemAt(p) ? 'move' : 'crosshair';
  }

  // -- operations (mouse, keys and buttons) ---------------------------------------------------
  select(sel) {
    this.selected = sel && this.item(sel) ? sel : null;
    this.emit('select', this.selected);
    this.draw();
  }

  classFor(proposal) {
    const id = proposal.class_id;
    return Number.isInteger(id) && id >= 0 && id < this.classes.length ? id : this.currentClass;
  }

  acceptProposal(index, box = null) {
    const proposal = this.session.proposals[index];
    if (!proposal) return;
    const classId = this.classFor(proposal);
    const geometry = box || this.clean(proposal.box);
    this.session.change((boxes, proposals) => {
      proposals.splice(index, 1);
      boxes.push({ class_id: classId, box: geometry });
    });
    this.select({ kind: 'box', index: this.session.boxes.length - 1 });
  }

  acceptAll() {
    const proposals = this.session && this.session.proposals;
    if (!proposals || !proposals.length) return;
    const accepted = proposals.map((p) => ({ class_id: this.classFor(p), box: this.clean(p.box) }));
    this.session.change((boxes, list) => {
      boxes.push(...accepted);
      list.splice(0, list.length);
    });
    this.select(null);
  }

  rejectProposal(index) {
    if (!this.session) return;
    this.session.proposals.splice(index, 1);
    if (this.selected && this.selected.kind === 'proposal') this.selected = null;
    this.session.emit('change');
    this.select(this.selected);
  }

  rejectAll() {
    if (!this.session) return;
    this.session.setProposals([]);
    this.select(null);
  }

  deleteSelected() {
    const sel = this.selected;
    if (!sel) return false;
    if (sel.kind === 'proposal') {
      this.rejectProposal(sel.index);
      return true;
    }
    this.session.change((boxes) => boxes.splice(sel.index, 1));
    this.select(null);
    return true;
  }

  /** Keys 1-9: the current class, and the selected box's (or proposal's) class. */
  chooseClass(id) {
    if (id < 0 || id >= this.classes.length) return;
    this.currentClass = id;
    const sel = this.selected;
    const item = this.item();
    if (item && sel.kind === 'box' && item.class_id !== id) {
      this.session.change((boxes) => { boxes[sel.index].class_id = id; });
    } else if (item && sel.kind === 'proposal') {
      item.class_id = id;
      item.label = this.classes[id];
      this.session.emit('change');
    }
    this.emit('class', id);
    this.draw();
  }

  // -- drawing --------------------------------------------------------------------------------
  draw() {
    const c = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.session) return;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    const s = this.scale;
    c.imageSmoothingEnabled = s < 2;
    if (this.image && this.image.complete && this.image.naturalWidth) {
      c.drawImage(this.image, 0, 0, this.W * s, this.H * s);
    } else {
      c.fillStyle = '#ddd';
      c.fillRect(0, 0, this.W * s, this.H * s);
    }
    const drag = this.drag && this.drag.moved ? this.drag : null;
    const geometry = (kind, index, box) => (drag && drag.target && drag.target.kind === kind && drag.target.index === index ? drag.preview : box);
    this.session.boxes.forEach((b, i) => {
      const selected = this.selected && this.selected.kind === 'box' && this.selected.index === i;
      this.drawBox(geometry('box', i, b.box), classColor(b.class_id), this.classes[b.class_id] ?? `class ${b.class_id}`, { selected });
    });
    const many = this.session.proposals.length > 15;   // then only the selected one carries its label
    this.session.proposals.forEach((p, i) => {
      const selected = this.selected && this.selected.kind === 'proposal' && this.selected.index === i;
      const id = this.classFor(p);
      const text = many && !selected ? '' : `${this.classes[id] ?? p.label ?? '?'} ${Number(p.score).toFixed(2)}?`;
      this.drawBox(geometry('proposal', i, p.box), classColor(id), text, { selected, dashed: true });
    });
    if (drag && drag.mode === 'draw') {
      this.drawBox(drag.preview, classColor(this.currentClass), this.classes[this.currentClass] ?? '', { dashed: true, fill: true });
    }
    this.canvas.dataset.boxes = String(this.session.boxes.length);
    this.canvas.dataset.proposals = String(this.session.proposals.length);
  }

  drawBox(box, color, text, { selected = false, dashed = false, fill = false } = {}) {
    const c = this.ctx;
    const s = this.scale;
    let [x0, y0, x1, y1] = box;
    if (x1 < x0) [x0, x1] = [x1, x0];
    if (y1 < y0) [y0, y1] = [y1, y0];
    const X = x0 * s;
    const Y = y0 * s;
    const w = (x1 - x0) * s;
    const hgt = (y1 - y0) * s;
    c.save();
    c.lineWidth = selected ? 3 : 2;
    c.setLineDash(dashed ? [6, 4] : []);
    c.strokeStyle = 'rgba(0,0,0,0.55)';
    c.strokeRect(X - 1, Y - 1, w + 2, hgt + 2);
    c.strokeStyle = color;
    c.strokeRect(X, Y, w, hgt);
    if (fill || selected) {
      c.fillStyle = color;
      c.globalAlpha = 0.12;
      c.fillRect(X, Y, w, hgt);
      c.globalAlpha = 1;
    }
    if (text) {
      c.setLineDash([]);
      c.font = '12px system-ui, sans-serif';
      const tw = c.measureText(text).width + 8;
      const ty = Y >= 16 ? Y - 16 : Y;
      c.fillStyle = dashed ? 'rgba(255,255,255,0.9)' : color;
      c.fillRect(X, ty, tw, 16);
      c.fillStyle = dashed ? '#111' : '#fff';
      c.fillText(text, X + 4, ty + 12);
    }
    if (selected) {
      c.setLineDash([]);
      for (const [cx, cy] of this.corners([x0, y0, x1, y1])) {
        c.fillStyle = '#fff';
        c.fillRect(cx * s - HANDLE, cy * s - HANDLE, HANDLE * 2, HANDLE * 2);
        c.strokeStyle = '#111';
        c.lineWidth = 1;
        c.strokeRect(cx * s - HANDLE, cy * s - HANDLE, HANDLE * 2, HANDLE * 2);
      }
    }
    c.restore();
  }
}
