/* samjax annotate: the page of SAM's assisted-manual annotation tool.
 *
 * The server holds the model; this page only sends prompts (points, a box),
 * brush/eraser strokes and decisions (docs/annotate_api.md), and draws the PNGs it gets
 * back. Every coordinate sent is in the ORIGINAL image pixel frame.
 *
 * The current object lives in `obj`. Its prompt and strokes change locally
 * at once; sync() then brings the server's mask in line, one request at a
 * time, so only the latest state is sent and responses are drawn in order.
 */
'use strict';

// Read by automated tests and the latency benchmark: keep these names.
const samjax = window.samjax = {
  timings: [], ready: false, image: null, candidates: 0, selected: null,
  objects: [], auto: [], busy: 0,
};

const DRAG_PX = 5;    // a press that moves further than this (screen px) is a box
const POLL_MS = 200;  // /api/open polling period while the embedding is computed

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

const view = {
  images: [], width: 0, height: 0, shown: false, switching: false, switchSeq: 0,
  mode: 'point', radius: 10, radiusSet: false, showAuto: true, showUncovered: false,
  hover: null,  // bbox [x, y, w, h] of the list entry under the mouse
};
let obj = newObject();
let clickT0 = null;   // performance.now() of the latest click not yet sent
let syncing = null;   // the running sync() loop's promise
let pointer = null;   // the mouse gesture in progress
let cursor = null;    // mouse position (image px), for the brush outline

// ---- server ---------------------------------------------------------------

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
  };
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new Error(`${path}: the server does not answer`);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.error) || `${path}: HTTP ${res.status}`);
  if (data === null) throw new Error(`${path}: the reply is not JSON`);
  return data;
}

// Runs an operation counted in samjax.busy until its result is DRAWN (not
// just fetched), so data-ready="1" means the screen shows what the server said.
// The count goes up synchronously, before the caller's event handler returns.
async function busy(fn) {
  samjax.busy++;
  setReady();
  try {
    return await fn();
  } finally {
    samjax.busy--;
    setReady();
  }
}

// Prompts and list actions only make sense on a displayed, settled image.
const canEdit = () => view.shown && !view.switching;

function setReady() {
  samjax.ready = view.shown && !view.switching && samjax.busy === 0;
  document.body.dataset.ready = samjax.ready ? '1' : '0';
}

function setStatus(msg, isError = false) {
  const el = $('status');
  const i = view.images.findIndex((im) => im.name === samjax.image);
  const where = samjax.image ? `${samjax.image} (${i + 1}/${view.images.length})` : '';
  el.textContent = [where, String(msg || '').replace(/\s+/g, ' ')].filter(Boolean).join(' — ');
  el.title = el.textContent;
  el.classList.toggle('error', isError);
}

function report(err) {
  console.error(err);
  setStatus(err && err.message ? err.message : String(err), true);
}

// document.createElement with properties (dataset entries included) and children.
function el(tag, {dataset = {}, ...props} = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  Object.assign(e.dataset, dataset);
  e.append(...children);
  return e;
}

// ---- drawing --------------------------------------------------------------

const drawSeq = new Map();

// Draws a base64 PNG (or clears, for null) on a layer canvas. A later call on
// the same canvas wins even when its PNG happens to decode first.
async function drawPng(canvas, b64) {
  const seq = (drawSeq.get(canvas) || 0) + 1;
  drawSeq.set(canvas, seq);
  let img = null;
  if (b64) {
    img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
  }
  if (drawSeq.get(canvas) !== seq) return;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
}

// Layer canvases are backed at the original image size (the server's PNGs
// then draw 1:1); the CSS size fits the image into the viewport.
function setImageSize(w, h) {
  view.width = w;
  view.height = h;
  for (const c of document.querySelectorAll('#stage canvas')) {
    if (c.id !== 'input-canvas') { c.width = w; c.height = h; }
  }
  if (!view.radiusSet) view.radius = Math.max(2, Math.round(Math.max(w, h) / 150));
  layoutStage();
  updateMode();
}

// The input canvas is backed at screen resolution so points and lines stay crisp.
function layoutStage() {
  if (!view.width) return;
  const vp = $('viewport');
  const scale = Math.min((vp.clientWidth - 16) / view.width, (vp.clientHeight - 16) / view.height);
  const w = Math.max(1, Math.round(view.width * scale));
  const h = Math.max(1, Math.round(view.height * scale));
  $('stage').style.width = `${w}px`;
  $('stage').style.height = `${h}px`;
  for (const c of document.querySelectorAll('#stage canvas')) {
    c.style.width = `${w}px`;
    c.style.height = `${h}px`;
  }
  const dpr = window.devicePixelRatio || 1;
  $('input-canvas').width = Math.round(w * dpr);
  $('input-canvas').height = Math.round(h * dpr);
  drawOverlay();
}

// A mouse event's position in original image pixels (clamped to the image).
function toImage(e) {
  const r = $('input-canvas').getBoundingClientRect();
  return [clamp((e.clientX - r.left) / r.width * view.width, 0, view.width),
          clamp((e.clientY - r.top) / r.height * view.height, 0, view.height)];
}

const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]),
                         Math.max(a[0], b[0]), Math.max(a[1], b[1])];

// Points, boxes, strokes not yet rendered by the server and the brush outline.
function drawOverlay() {
  const c = $('input-canvas');
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, c.width, c.height);
  if (!view.width) return;
  const k = c.width / view.width;            // image px -> canvas px
  const dpr = window.devicePixelRatio || 1;
  const shown = obj.candidates[obj.candidate];
  for (const s of obj.strokes.slice(shown ? shown.nStrokes : 0)) drawStroke(ctx, s, k);
  if (pointer && pointer.stroke) drawStroke(ctx, pointer.stroke, k);
  if (view.hover) {
    const [x, y, w, h] = view.hover;
    drawBox(ctx, [x, y, x + w, y + h], k, dpr, '#ffd000', []);
  }
  if (obj.box) drawBox(ctx, obj.box, k, dpr, '#1e90ff', []);
  if (pointer && pointer.drag) drawBox(ctx, boxOf(pointer.start, pointer.end), k, dpr, '#fff', [6, 4]);
  obj.points.forEach((p, i) => drawPoint(ctx, p[0] * k, p[1] * k, obj.labels[i], dpr));
  if (view.mode !== 'point' && cursor) {
    ctx.beginPath();
    ctx.arc(cursor[0] * k, cursor[1] * k, Math.max(1, view.radius * k), 0, 2 * Math.PI);
    ctx.lineWidth = 1.5 * dpr;
    ctx.strokeStyle = view.mode === 'brush' ? '#1e90ff' : '#ff5050';
    ctx.stroke();
  }
}

function drawBox(ctx, box, k, dpr, colour, dash) {
  ctx.setLineDash(dash.map((d) => d * dpr));
  ctx.lineWidth = 2 * dpr;
  ctx.strokeStyle = colour;
  ctx.strokeRect(box[0] * k, box[1] * k, (box[2] - box[0]) * k, (box[3] - box[1]) * k);
  ctx.setLineDash([]);
}

function drawPoint(ctx, x, y, label, dpr) {
  ctx.beginPath();
  ctx.arc(x, y, 5 * dpr, 0, 2 * Math.PI);
  ctx.fillStyle = label === 1 ? '#2ecc40' : '#ff4136';
  ctx.fill();
  ctx.lineWidth = 1.5 * dpr;
  ctx.strokeStyle = '#fff';
  ctx.stroke();
}

// Local feedback only: the server draws the real stroke (a polyline of width
// 2r with round ends) when /api/render answers.
function drawStroke(ctx, s, k) {
  ctx.fillStyle = ctx.strokeStyle = s.mode === 'brush' ? 'rgba(30,144,255,0.5)' : 'rgba(0,0,0,0.55)';
  const r = Math.max(0.5, s.radius * k);
  if (s.points.length === 1) {
    ctx.beginPath();
    ctx.arc(s.points[0][0] * k, s.points[0][1] * k, r, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.lineWidth = 2 * r;
  ctx.lineCap = ctx.lineJoin = 'round';
  s.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * k, y * k) : ctx.moveTo(x * k, y * k)));
  ctx.stroke();
}

async function drawMask(o = obj) {
  const c = o.candidates[o.candidate];
  await drawPng($('mask-canvas'), c ? c.png : null);
  drawOverlay();
  updateObjectInfo();
}

// ---- the current object ---------------------------------------------------

const promptKey = (p) => JSON.stringify([p.points, p.labels, p.box]);
const hasPrompt = (o) => o.points.length > 0 || o.box !== null;

// tokenPrompt is the prompt the server's token answers; the local prompt may
// be ahead of it while a request is in flight. Arrays are replaced, never
// mutated, so snapshots can share them.
function newObject(fields = {}) {
  const o = Object.assign({
    points: [], labels: [], box: null, strokes: [], token: null, candidate: null,
    candidates: [],  // [{png, score, nStrokes: how many strokes the png shows}]
    history: [], hIndex: -1, startedAt: null, interactions: 0, replaces: null,
  }, fields);
  o.tokenPrompt = {points: o.points, labels: o.labels, box: o.box};
  record(o, o.strokes, o.candidate);
  return o;
}

function resetObject() {
  obj = newObject();
  clickT0 = null;
  view.hover = null;
  drawMask();
  markEditing();
}

// Pushes an undo snapshot: a state the server has answered, pngs included.
function record(o, strokes, candidate) {
  o.history = o.history.slice(0, o.hIndex + 1);
  o.history.push({...o.tokenPrompt, strokes, token: o.token, candidate, candidates: o.candidates});
  o.hIndex = o.history.length - 1;
}

function restore(o, snap) {
  Object.assign(o, {points: snap.points, labels: snap.labels, box: snap.box, strokes: snap.strokes,
                    token: snap.token, candidate: snap.candidate, candidates: snap.candidates});
  o.tokenPrompt = {points: snap.points, labels: snap.labels, box: snap.box};
}

function touch() {
  if (obj.startedAt === null) obj.startedAt = performance.now();
}

function addPoint(pt, label, t0) {
  touch();
  obj.points = [...obj.points, pt];
  obj.labels = [...obj.labels, label];
  clickT0 = t0;
  drawOverlay();
  sync();
}

function setBox(box, t0) {
  touch();
  obj.box = box;
  clickT0 = t0;
  drawOverlay();
  sync();
}

// Brings the server's mask in line with the local prompt and strokes. Only one
// predict/render is in flight; whatever changed meanwhile is sent when it
// returns (the loop re-reads the state), so responses are drawn in order.
// Resolves to false when a request failed (the error is already shown).
function sync() {
  if (!syncing) {
    syncing = busy(async () => {
      try {
        while (await syncStep());
        return true;
      } catch (err) {
        report(err);
        return false;
      }
    }).finally(() => { syncing = null; });
  }
  return syncing;
}

async function syncStep() {
  const o = obj;
  if (o.token === null && !hasPrompt(o) && o.strokes.length) {
    await blank(o);
    return true;
  }
  if (hasPrompt(o) && promptKey(o) !== promptKey(o.tokenPrompt)) {
    await predict(o);
    return true;
  }
  const c = o.candidates[o.candidate];
  if (c && c.nStrokes !== o.strokes.length) {
    await render(o);
    return true;
  }
  return false;
}

async function predict(o) {
  const sent = {points: o.points, labels: o.labels, box: o.box, strokes: o.strokes};
  const t0 = clickT0;
  clickT0 = null;
  o.interactions++;
  const r = await api('/api/predict', {
    image: samjax.image, ...sent, previous: o.token,
    previous_candidate: o.token === null ? null : o.candidate,
  });
  if (o !== obj) return;  // discarded, accepted or image switched meanwhile
  o.token = r.token;
  o.candidate = r.selected;
  o.candidates = r.candidates.map((c) => ({png: c.png, score: c.score, nStrokes: sent.strokes.length}));
  o.tokenPrompt = {points: sent.points, labels: sent.labels, box: sent.box};
  record(o, sent.strokes, r.selected);
  await drawMask(o);
  if (t0 !== null && o === obj) {
    samjax.timings.push({kind: 'click', ms: performance.now() - t0, server_ms: r.server_ms});
  }
}

// An empty mask to paint on: the brush starts an object without a prompt.
async function blank(o) {
  const r = await api('/api/blank', {image: samjax.image});
  if (o !== obj) return;
  o.token = r.token;
  o.candidate = 0;
  o.candidates = r.candidates.map((c) => ({png: c.png, score: c.score, nStrokes: 0}));
  o.tokenPrompt = {points: o.points, labels: o.labels, box: o.box};
}

async function render(o) {
  const token = o.token;
  const k = o.candidate;
  const strokes = o.strokes;
  o.interactions++;
  const r = await api('/api/render', {image: samjax.image, token, candidate: k, strokes});
  if (o !== obj || o.token !== token) return;
  o.candidates = o.candidates.slice();
  o.candidates[k] = {...o.candidates[k], png: r.png, nStrokes: strokes.length};
  record(o, strokes, k);
  await drawMask(o);
}

function pickCandidate(k) {
  const o = obj;
  if (!canEdit() || k >= o.candidates.length || k === o.candidate) return;
  o.candidate = k;
  // A candidate whose png lacks the latest strokes is re-rendered (and
  // recorded) by sync(); otherwise the pick itself is an undo step.
  if (!syncing && o.candidates[k].nStrokes === o.strokes.length) record(o, o.strokes, k);
  busy(() => drawMask(o)).catch(report);
  sync();
}

function undoRedo(step) {
  const o = obj;
  const i = o.hIndex + step;
  if (syncing) {
    setStatus('wait for the mask before undo/redo');
    return;
  }
  if (i < 0 || i >= o.history.length) return;
  o.hIndex = i;
  restore(o, o.history[i]);
  busy(() => drawMask(o)).catch(report);
}

function discardObject() {
  if (obj.token === null && !hasPrompt(obj)) return;
  resetObject();
  setStatus('object discarded');
}

function acceptObject() {
  const o = obj;
  if (o.accepting || (o.token === null && !hasPrompt(o) && !o.strokes.length)) return;
  o.accepting = true;
  const image = samjax.image;
  busy(async () => {
    if (!(await sync())) return;  // flush the clicks and strokes still queued
    const c = o.candidates[o.candidate];
    if (o !== obj || !c || c.nStrokes !== o.strokes.length ||
        promptKey(o) !== promptKey(o.tokenPrompt)) {
      if (o === obj) setStatus('the mask is not up to date: nothing accepted', true);
      return;
    }
    const seconds = o.startedAt === null ? 0 : (performance.now() - o.startedAt) / 1000;
    const r = await api('/api/accept', {
      image, token: o.token, candidate: o.candidate, strokes: o.strokes,
      ...o.tokenPrompt, seconds, interactions: o.interactions, replaces: o.replaces,
    });
    if (image !== samjax.image) return;
    if (o === obj) resetObject();
    await applyObjects(r);
    setStatus(`accepted object ${r.accepted}`);
  }).catch(report).finally(() => { o.accepting = false; });
}

// ---- stored objects -------------------------------------------------------

async function applyObjects(r) {
  samjax.objects = r.objects;
  samjax.auto = r.auto;
  renderList($('objects'), r.objects, ['edit', 'delete']);
  renderList($('auto'), r.auto, ['accept', 'reject', 'edit']);
  $('objects-count').textContent = `(${r.objects.length})`;
  $('auto-count').textContent = `(${r.auto.length} pending)`;
  updateImageCount(r.objects.length, r.auto.length);
  const draws = [drawPng($('layer-canvas'), r.layer_png), drawPng($('auto-canvas'), r.auto_png)];
  if (view.showUncovered) draws.push(loadUncovered());
  await Promise.all(draws);
}

function renderList(ul, items, actions) {
  ul.replaceChildren(...items.map((it) => el('li', {dataset: {id: String(it.id)}},
    el('span', {className: 'text', textContent:
      `#${it.id} ${it.source} · ${it.area} px · IoU ${Number(it.predicted_iou).toFixed(3)}`}),
    ...actions.map((a) => el('button', {type: 'button', className: a, textContent: a,
                                        dataset: {action: a}})))));
  markEditing();
}

function markEditing() {
  for (const li of document.querySelectorAll('#objects li, #auto li')) {
    li.classList.toggle('editing', obj.replaces !== null && String(obj.replaces) === li.dataset.id);
  }
}

// Ids are sent back exactly as the server listed them (accepted objects have
// int ids, pending auto objects may have string ids such as "auto-3").
function findItem(list, li) {
  return list.find((it) => String(it.id) === li.dataset.id);
}

const ACTION_ENDPOINTS = {delete: '/api/delete', reject: '/api/reject', accept: '/api/accept_auto'};
const PAST = {delete: 'deleted', reject: 'rejected', accept: 'accepted'};

function objectAction(action, id) {
  if (!canEdit()) return;
  if (action === 'edit') return editObject(id);
  const image = samjax.image;
  busy(async () => {
    const r = await api(ACTION_ENDPOINTS[action], {image, id});
    if (image !== samjax.image) return;
    if (obj.replaces === id) resetObject();  // the object being edited is gone
    await applyObjects(r);
    setStatus(`${PAST[action]} object ${id}`);
  }).catch(report);
}

function editObject(id) {
  const image = samjax.image;
  busy(async () => {
    const r = await api('/api/edit', {image, id});
    if (image !== samjax.image) return;
    obj = newObject({
      points: r.points || [], labels: r.labels || [], box: r.box || null, token: r.token,
      candidate: r.selected, replaces: id, startedAt: performance.now(),
      candidates: r.candidates.map((c) => ({png: c.png, score: c.score, nStrokes: 0})),
    });
    clickT0 = null;
    markEditing();
    await drawMask();
    setStatus(`editing object ${id} (${r.source})`);
  }).catch(report);
}

async function loadUncovered() {
  const image = samjax.image;
  const r = await api('/api/uncovered?image=' + enc(image));
  if (image !== samjax.image || !view.showUncovered) return;
  $('uncovered-fraction').textContent = `${(100 * r.fraction).toFixed(1)} %`;
  await drawPng($('uncovered-canvas'), r.png);
}

function setUncovered(on) {
  view.showUncovered = on;
  $('toggle-uncovered').checked = on;
  $('uncovered-canvas').hidden = !on;
  if (!on) $('uncovered-fraction').textContent = '';
  if (on && canEdit()) busy(loadUncovered).catch(report);
}

function setAutoLayer(on) {
  view.showAuto = on;
  $('toggle-auto').checked = on;
  $('auto-canvas').hidden = !on;
}

// ---- images ---------------------------------------------------------------

function renderImages() {
  $('images').replaceChildren(...view.images.map((im) => {
    const li = el('li', {className: im.name === samjax.image ? 'current' : '', dataset: {name: im.name}},
                  el('span', {className: 'text', textContent: im.name}),
                  el('span', {className: 'muted count'}));
    setCount(li, im);
    return li;
  }));
}

function setCount(li, im) {
  li.querySelector('.count').textContent = `${im.objects} obj · ${im.auto} auto`;
}

function updateImageCount(objects, auto) {
  const im = view.images.find((x) => x.name === samjax.image);
  if (!im) return;
  Object.assign(im, {objects, auto});
  const li = [...$('images').children].find((x) => x.dataset.name === im.name);
  if (li) setCount(li, im);
}

function stepImage(delta) {
  const n = view.images.length;
  if (!n) return;
  const i = view.images.findIndex((im) => im.name === samjax.image);
  openImage(view.images[((i + delta) % n + n) % n].name, performance.now());
}

// Opens an image: embedding (polled), then pixels and layers, drawn. Any
// unaccepted object is discarded; a newer switch makes this one stop.
function openImage(name, t0 = performance.now()) {
  const seq = ++view.switchSeq;
  const current = () => seq === view.switchSeq;
  samjax.image = name;
  view.shown = false;  // clicks must not reach an image whose embedding is not ready
  view.switching = true;
  pointer = null;
  resetObject();
  $('stage').classList.add('loading');
  for (const li of $('images').children) li.classList.toggle('current', li.dataset.name === name);
  history.replaceState(null, '', '#' + enc(name));
  setStatus('opening...');
  busy(async () => {
    try {
      const info = await waitForEmbedding(name, current);
      if (!info) return;
      const [img, objects] = await Promise.all([
        loadPixels(name), api('/api/objects?image=' + enc(name))]);
      if (!current()) return;
      setImageSize(info.width, info.height);
      $('image-canvas').getContext('2d').drawImage(img, 0, 0, info.width, info.height);
      await applyObjects(objects);
      if (!current()) return;
      view.shown = true;
      view.switching = false;
      $('stage').classList.remove('loading');
      samjax.timings.push({kind: 'switch', ms: performance.now() - t0, server_ms: null});
      setStatus(`${info.width}×${info.height}`);
    } finally {
      if (current()) view.switching = false;
    }
  }).catch((err) => { if (current()) report(err); });
}

async function waitForEmbedding(name, current) {
  for (;;) {
    const r = await api('/api/open', {image: name});
    if (!current()) return null;
    if (r.ready) return r;
    if (r.state === 'error') throw new Error(`${name}: ${r.error || 'the embedding failed'}`);
    setStatus(`Computing the image embedding... ${Number(r.elapsed || 0).toFixed(1)} s`);
    await sleep(POLL_MS);
    if (!current()) return null;
  }
}

async function loadPixels(name) {
  const img = new Image();
  img.src = '/api/pixels?image=' + enc(name);
  try {
    await img.decode();
  } catch (err) {
    throw new Error(`${name}: the pixels could not be loaded`);
  }
  return img;
}

// ---- input ----------------------------------------------------------------

function onMouseDown(e) {
  if (!canEdit()) return;
  e.preventDefault();
  const at = toImage(e);
  if (view.mode !== 'point') {
    if (e.button === 0) startStroke(at);
    return;
  }
  pointer = {x0: e.clientX, y0: e.clientY, start: at, end: at, t0: performance.now(),
             button: e.button, shift: e.shiftKey, drag: false};
}

function onMouseMove(e) {
  if (view.width && e.target === $('input-canvas')) cursor = toImage(e);
  if (pointer && pointer.stroke) {
    extendStroke(pointer.stroke, toImage(e));
  } else if (pointer && pointer.button === 0) {
    if (!pointer.drag && Math.hypot(e.clientX - pointer.x0, e.clientY - pointer.y0) > DRAG_PX) {
      pointer.drag = true;
    }
    if (pointer.drag) pointer.end = toImage(e);
  }
  if (pointer || view.mode !== 'point') drawOverlay();
}

function onMouseUp(e) {
  const p = pointer;
  if (!p) return;
  pointer = null;
  if (p.stroke) return finishStroke(p.stroke);
  if (p.drag) {
    const box = boxOf(p.start, toImage(e));
    if (box[2] > box[0] && box[3] > box[1]) setBox(box, performance.now());
    else drawOverlay();
  } else if (p.button === 2 || (p.button === 0 && p.shift)) {
    addPoint(p.start, 0, p.t0);
  } else if (p.button === 0) {
    addPoint(p.start, 1, p.t0);
  }
}

function startStroke(at) {
  // Without a mask yet, the stroke paints a new object from nothing
  // (syncStep asks the server for an empty mask first).
  pointer = {stroke: {mode: view.mode, radius: view.radius, points: [at]}};
  drawOverlay();
}

// Points closer than a quarter radius add nothing visible; skipping them
// keeps the request small.
function extendStroke(stroke, at) {
  const last = stroke.points[stroke.points.length - 1];
  if (Math.hypot(at[0] - last[0], at[1] - last[1]) >= Math.max(1, stroke.radius / 4)) {
    stroke.points.push(at);
  }
}

function finishStroke(stroke) {
  touch();
  obj.strokes = [...obj.strokes, stroke];
  drawOverlay();
  sync();
}

function setMode(mode) {
  view.mode = mode;
  document.body.classList.remove('tool-point', 'tool-brush', 'tool-erase');
  document.body.classList.add('tool-' + mode);
  for (const b of document.querySelectorAll('button.tool')) {
    b.classList.toggle('active', b.dataset.mode === mode);
  }
  updateMode();
  drawOverlay();
}

function resizeBrush(grow) {
  const r = view.radius;
  view.radius = clamp(grow ? Math.max(r + 1, Math.round(r * 1.25)) : Math.min(r - 1, Math.round(r * 0.8)), 1, 4096);
  view.radiusSet = true;
  updateMode();
  drawOverlay();
}

function updateMode() {
  const names = {point: 'point', brush: 'brush', erase: 'eraser'};
  $('brush-radius').textContent = `radius ${view.radius} px`;
  $('mode').textContent = `${names[view.mode]} mode · brush radius ${view.radius} px`;
}

function updateObjectInfo() {
  samjax.candidates = obj.candidates.length;
  samjax.selected = obj.candidates.length ? obj.candidate : null;
  $('candidates').replaceChildren(...obj.candidates.map((c, i) => el('button', {
    type: 'button', className: i === obj.candidate ? 'active' : '',
    textContent: `${i + 1}: ${Number(c.score).toFixed(3)}`, title: `key ${i + 1}`,
    onclick: (e) => { e.currentTarget.blur(); pickCandidate(i); },
  })));
  const parts = [`${obj.points.length} point(s)`];
  if (obj.box) parts.push('a box');
  if (obj.strokes.length) parts.push(`${obj.strokes.length} stroke(s)`);
  if (obj.replaces !== null) parts.push(`editing #${obj.replaces}`);
  $('object-info').textContent = obj.token === null && !hasPrompt(obj)
    ? 'Click the image to start an object.' : parts.join(', ');
}

// Keys by e.key (lower-cased letters); Ctrl (or Cmd) only for undo/redo.
function onKeyDown(e) {
  if (e.target.closest && e.target.closest('input[type=text], textarea, select')) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  if (e.altKey || (ctrl && key !== 'z' && key !== 'y')) return;
  const actions = {
    1: () => pickCandidate(0), 2: () => pickCandidate(1), 3: () => pickCandidate(2),
    p: () => setMode('point'), b: () => setMode('brush'), e: () => setMode('erase'),
    '[': () => resizeBrush(false), ']': () => resizeBrush(true),
    z: () => undoRedo(ctrl && e.shiftKey ? 1 : -1), y: () => undoRedo(1),
    Enter: acceptObject, Escape: discardObject,
    a: () => samjax.auto.length && objectAction('accept', samjax.auto[0].id),
    r: () => samjax.auto.length && objectAction('reject', samjax.auto[0].id),
    u: () => setUncovered(!view.showUncovered), h: () => setAutoLayer(!view.showAuto),
    n: () => stepImage(e.shiftKey ? -1 : 1),
    ArrowRight: () => stepImage(1), ArrowLeft: () => stepImage(-1),
  };
  const action = actions[key];
  if (!action) return;
  e.preventDefault();  // also keeps Enter from clicking a focused button
  action();
}

function onListClick(e, list) {
  const btn = e.target.closest('button');
  const li = e.target.closest('li');
  if (!btn || !li) return;
  btn.blur();  // so that Enter/Space later do not press it again
  const item = findItem(list(), li);
  if (item) objectAction(btn.dataset.action, item.id);
}

function onListHover(e, list) {
  const li = e.target.closest('li');
  const item = li && findItem(list(), li);
  view.hover = item ? item.bbox : null;
  drawOverlay();
}

function bindEvents() {
  const input = $('input-canvas');
  input.addEventListener('mousedown', onMouseDown);
  input.addEventListener('contextmenu', (e) => e.preventDefault());
  input.addEventListener('mouseleave', () => { cursor = null; drawOverlay(); });
  window.addEventListener('mousemove', onMouseMove);
  window.addEventListener('mouseup', onMouseUp);
  window.addEventListener('resize', layoutStage);
  document.addEventListener('keydown', onKeyDown);
  for (const [id, list] of [['objects', () => samjax.objects], ['auto', () => samjax.auto]]) {
    $(id).addEventListener('click', (e) => onListClick(e, list));
    $(id).addEventListener('mouseover', (e) => onListHover(e, list));
    $(id).addEventListener('mouseleave', () => { view.hover = null; drawOverlay(); });
  }
  $('images').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-name]');
    if (li && !(li.dataset.name === samjax.image && canEdit())) {
      openImage(li.dataset.name, performance.now());
    }
  });
  $('toggle-uncovered').addEventListener('change', (e) => setUncovered(e.target.checked));
  $('toggle-auto').addEventListener('change', (e) => setAutoLayer(e.target.checked));
  const buttons = {
    'btn-accept': acceptObject, 'btn-discard': discardObject,
    'btn-undo': () => undoRedo(-1), 'btn-redo': () => undoRedo(1),
    'btn-point': () => setMode('point'), 'btn-brush': () => setMode('brush'),
    'btn-erase': () => setMode('erase'),
  };
  for (const [id, fn] of Object.entries(buttons)) {
    $(id).addEventListener('click', (e) => { e.currentTarget.blur(); fn(); });
  }
}

async function start() {
  bindEvents();
  setMode('point');
  setAutoLayer(true);
  setReady();
  const s = await api('/api/session');
  view.images = s.images;
  $('session-info').textContent = `${s.images.length} · ${s.annotator} · round ${s.round}`;
  $('session-info').title = `checkpoint ${s.checkpoint}`;
  if (s.skipped && s.skipped.length) {
    $('skipped').hidden = false;
    $('skipped').textContent = `${s.skipped.length} skipped: ` +
      s.skipped.map((x) => `${x.name} (${x.reason})`).join('; ');
  }
  renderImages();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = view.images.find((im) => im.name === wanted) || view.images[0];
  if (!first) throw new Error('no images to annotate');
  openImage(first.name);
}

start().catch(report);
