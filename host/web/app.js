// proxlet web UI: the flow list, a flow's detail, intercept, replay and the
// plugins page, over the JSON API and the event stream in docs/web.md.
//
// Plain DOM, no framework. Everything shown from a flow is attacker-chosen
// text, so it only ever reaches the page through textContent and DOM
// properties, never as HTML.

// ---------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element: `props` sets className, testid, text, title, dataset, attrs,
 *  event handlers (`on`) and any plain DOM property; children are nodes or
 *  strings (added as text). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'className') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'attrs') for (const [a, v] of Object.entries(value)) node.setAttribute(a, v);
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else node[key] = value;
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

/** A two-column table of [label, value] pairs; values are text or nodes. */
function kvTable(rows, testid) {
  return el('table', { className: 'kv', testid },
    el('tbody', {}, rows.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v ?? '')))));
}

function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function formatDuration(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** A timestamp the API gives in µs since the epoch (ms or seconds and
 *  RFC 3339 strings are read too) as a Date. */
function toDate(ts) {
  if (typeof ts === 'string') return new Date(ts);
  if (typeof ts !== 'number') return null;
  if (ts > 1e14) return new Date(ts / 1000);
  if (ts > 1e11) return new Date(ts);
  return new Date(ts * 1000);
}

function formatTime(ts) {
  const date = toDate(ts);
  if (!date || Number.isNaN(date.getTime())) return '';
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** A header value from the API: text, or `{"base64": …}` for bytes that are
 *  not UTF-8 (docs/flow-file.md §3.1). */
function headerValue(value) {
  if (typeof value === 'string') return value;
  if (value && typeof value.base64 === 'string') {
    try {
      return new TextDecoder().decode(Uint8Array.from(atob(value.base64), (c) => c.charCodeAt(0)));
    } catch {
      return `(base64) ${value.base64}`;
    }
  }
  return JSON.stringify(value);
}

function findHeader(headers, name) {
  const lower = name.toLowerCase();
  const found = (headers || []).find(([n]) => n.toLowerCase() === lower);
  return found ? headerValue(found[1]) : null;
}

function hostLabel(s) {
  const defaultPort = s.scheme === 'https' ? 443 : 80;
  return s.port && s.port !== defaultPort ? `${s.host}:${s.port}` : s.host;
}

/** A summary's URL (rows may leave it out: it follows from the rest). */
function flowUrl(s) {
  return s.url ?? `${s.scheme}://${hostLabel(s)}${s.path}`;
}

/** The Type column: the response's type, or what a WebSocket carried. */
function typeLabel(s) {
  if (s.websocket) return s.websocket.open ? 'websocket (open)' : `websocket (${s.websocket.messages})`;
  return s.type || '';
}

function statusLabel(s) {
  if (s.status !== null && s.status !== undefined) return String(s.status);
  if (s.intercepted) return 'paused';
  if (s.error) return 'error';
  return '…';
}

// ---------------------------------------------------------------------------
// API access
// ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** A JSON API call; `body` is sent as JSON unless it is a Blob/ArrayBuffer.
 *  With `raw`, the Response itself is returned. */
async function api(method, path, body, { raw = false } = {}) {
  const init = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) {
      init.body = body;
      init.headers['Content-Type'] = 'application/octet-stream';
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }
  const response = await fetch(path, init);
  if (response.status === 401 || response.status === 403) showAuthError(true);
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      // Not JSON: the status says enough.
    }
    throw new ApiError(response.status, data);
  }
  if (raw) return response;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

function showAuthError(on) {
  $('auth-error').hidden = !on;
}

/** Starts a download of `url` (same origin, so the cookie goes along). */
function download(url, filename) {
  const a = el('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
}

let messageTimer = null;
function toolbarMessage(text, isError = false) {
  const node = $('toolbar-message');
  node.textContent = text;
  node.classList.toggle('error', isError);
  clearTimeout(messageTimer);
  if (text && !isError) messageTimer = setTimeout(() => { node.textContent = ''; }, 6000);
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

const state = {
  /** Every flow summary known, by id (kept in step by `flow` events). */
  flows: new Map(),
  /** Ids of paused flows. */
  paused: new Set(),
  /** Ids shown, in display order. */
  view: [],
  /** The active (valid) filter expression; '' shows every flow. */
  filter: '',
  /** Ids matching the active filter, as the server last said; null without one. */
  filterIds: null,
  /** Held flows in all, as the server last said (with a filter). */
  total: 0,
  /** Sort column (null: newest first) and direction (1 ascending, -1 descending). */
  sort: { key: null, dir: -1 },
  selected: new Set(),
  anchorId: null,
  focusId: null,
  /** Bumped whenever selection or focus change, so rows know to repaint. */
  selectionVersion: 0,
  /** While a full re-read of the list is under way, flow events go here too. */
  capture: null,
  /** New flows seen since the last full re-read (the store evicts silently). */
  addedSinceSync: 0,
  plugins: [],
  /** The plugin list as last drawn (JSON). */
  pluginsText: '',
  chosenPlugin: null,
  logLines: [],
};

// ---------------------------------------------------------------------------
// Columns and sorting
// ---------------------------------------------------------------------------

const COLUMNS = [
  { key: 'marked', label: '★', cls: 'mark', title: 'marked', value: (s) => (s.marked ? 0 : 1), text: (s) => (s.marked ? '★' : '☆') },
  { key: 'id', label: '#', cls: 'id num', value: (s) => s.id, text: (s) => String(s.id) },
  { key: 'method', label: 'Method', cls: 'method', value: (s) => s.method, text: (s) => s.method },
  { key: 'host', label: 'Host', cls: 'host', value: (s) => hostLabel(s), text: (s) => hostLabel(s) },
  { key: 'path', label: 'Path', cls: 'path', value: (s) => s.path, text: (s) => s.path },
  { key: 'status', label: 'Status', cls: 'status num', value: (s) => s.status, text: statusLabel },
  { key: 'type', label: 'Type', cls: 'type', value: (s) => typeLabel(s) || null, text: typeLabel },
  { key: 'size', label: 'Size', cls: 'size num', value: (s) => s.size, text: (s) => formatSize(s.size) },
  { key: 'duration', label: 'Time', cls: 'duration num', value: (s) => s.duration, text: (s) => formatDuration(s.duration) },
  { key: 'cache', label: 'Cache', cls: 'cache', value: (s) => s.cache || null, text: (s) => s.cache || '' },
  { key: 'plugins', label: 'Plugins', cls: 'plugins', value: (s) => (s.plugins && s.plugins.length ? s.plugins.join(',') : null), text: (s) => (s.plugins || []).join(', ') },
];

/** Sorts summaries in place by the chosen column; empty values go last
 *  either way, ties by id (newest first by default). */
function sortSummaries(items) {
  const { key, dir } = state.sort;
  if (key === null) {
    items.sort((a, b) => b.id - a.id);
    return;
  }
  const column = COLUMNS.find((c) => c.key === key);
  const keyed = items.map((s) => ({ s, v: column.value(s) }));
  keyed.sort((a, b) => {
    const va = a.v;
    const vb = b.v;
    const aEmpty = va === null || va === undefined;
    const bEmpty = vb === null || vb === undefined;
    if (aEmpty || bEmpty) return aEmpty === bEmpty ? b.s.id - a.s.id : aEmpty ? 1 : -1;
    if (va < vb) return -dir;
    if (va > vb) return dir;
    return b.s.id - a.s.id;
  });
  for (let i = 0; i < keyed.length; i++) items[i] = keyed[i].s;
}

function cycleSort(key) {
  const { sort } = state;
  if (sort.key !== key) state.sort = { key, dir: 1 };
  else if (sort.dir === 1) state.sort = { key, dir: -1 };
  else state.sort = { key: null, dir: -1 };
  renderListHead();
  rebuildView();
}

// ---------------------------------------------------------------------------
// The view: which ids are shown, in which order
// ---------------------------------------------------------------------------

function rebuildView() {
  const items = [];
  const source = state.filterIds ?? state.flows.keys();
  for (const id of source) {
    const s = state.flows.get(id);
    if (s) items.push(s);
  }
  sortSummaries(items);
  state.view = items.map((s) => s.id);
  renderList();
  renderStatus();
}

/** Flow events are applied in batches, at most every 50 ms (longer when the
 *  list is long and rebuilding it takes time). */
let pendingFlows = [];
let flushTimer = null;
let flushCost = 0;

function queueFlow(summary) {
  pendingFlows.push(summary);
  if (state.capture) state.capture.push(summary);
  if (flushTimer === null) flushTimer = setTimeout(flushFlows, Math.max(50, flushCost * 4));
}

function flushFlows() {
  flushTimer = null;
  const started = performance.now();
  const batch = pendingFlows;
  pendingFlows = [];
  const added = [];
  let changedSortKey = false;
  for (const s of batch) {
    const before = state.flows.get(s.id);
    if (!before) added.push(s.id);
    else if (state.sort.key !== null && before !== s) changedSortKey = true;
    applySummary(s);
  }
  state.addedSinceSync += added.length;

  if (state.filter) {
    // Whether a new or changed flow matches is the server's call.
    requery();
    renderList();
  } else if (added.length && state.sort.key === null) {
    // Newest first: new ids usually go on top as they are.
    added.sort((a, b) => b - a);
    const unique = [...new Set(added)];
    if (state.view.length === 0 || unique[unique.length - 1] > state.view[0]) {
      keepScrollPosition(unique.length, () => { state.view = unique.concat(state.view); });
      renderList();
    } else {
      rebuildView();
    }
  } else if (added.length || changedSortKey) {
    rebuildView();
  } else {
    renderList();
  }
  renderStatus();
  for (const s of batch) {
    if (s.id === state.focusId) {
      refreshDetail();
      break;
    }
  }
  if (state.addedSinceSync > Math.max(2000, state.flows.size / 5)) scheduleResync();
  flushCost = performance.now() - started;
}

function applySummary(s) {
  state.flows.set(s.id, s);
  if (s.intercepted) state.paused.add(s.id);
  else state.paused.delete(s.id);
}

/** Rows added above a scrolled list move it, so what is on screen stays. */
function keepScrollPosition(addedAbove, change) {
  const scroll = $('list-scroll');
  const top = scroll.scrollTop;
  change();
  if (top > 0) {
    $('list-spacer').style.height = `${state.view.length * ROW_HEIGHT}px`;
    scroll.scrollTop = top + addedAbove * ROW_HEIGHT;
  }
}

/** Re-reads the whole list (after a lag, a load, a reconnect, or when the
 *  store may have evicted flows); events arriving meanwhile are replayed on
 *  top of it. */
async function resync() {
  const during = [];
  state.capture = during;
  let data;
  try {
    data = await api('GET', '/api/flows');
  } catch (e) {
    state.capture = null;
    if (!(e instanceof ApiError && (e.status === 401 || e.status === 403))) toolbarMessage(`cannot read flows: ${e.message}`, true);
    return;
  }
  state.capture = null;
  state.flows = new Map();
  state.paused = new Set();
  for (const s of data.flows) applySummary(s);
  for (const s of during) applySummary(s);
  state.total = data.total;
  state.addedSinceSync = 0;
  pruneSelection();
  if (state.filter) await requeryNow();
  else rebuildView();
  if (state.focusId !== null && !state.flows.has(state.focusId)) closeDetail();
}

const scheduleResync = debounce(resync, 1500);

function pruneSelection() {
  for (const id of state.selected) if (!state.flows.has(id)) state.selected.delete(id);
  state.selectionVersion++;
}

function onCleared() {
  for (const [id, s] of state.flows) if (!s.intercepted) state.flows.delete(id);
  if (state.filterIds) for (const id of state.filterIds) if (!state.flows.has(id)) state.filterIds.delete(id);
  pruneSelection();
  if (state.focusId !== null && !state.flows.has(state.focusId)) closeDetail();
  rebuildView();
}

// ---------------------------------------------------------------------------
// Filter (evaluated by the server) and intercept expressions
// ---------------------------------------------------------------------------

let filterSeq = 0;

/** Shows a bad expression under its input: the text, a caret at the error's
 *  position and the message. */
function showExprError(box, input, expr, message, position) {
  clear(box);
  const at = Number.isInteger(position) ? Math.max(0, Math.min(position, expr.length)) : null;
  append(box, [
    el('pre', { className: 'expr', text: expr }),
    at !== null ? el('pre', { className: 'caret', testid: `${box.dataset.testid}-caret`, dataset: { position: String(at) }, text: `${' '.repeat(at)}^` }) : null,
    el('div', { className: 'message', text: at === null || /position/.test(message) ? message : `at position ${at}: ${message}` }),
  ]);
  box.hidden = false;
  input.classList.add('invalid');
}

function hideExprError(box, input) {
  box.hidden = true;
  clear(box);
  input.classList.remove('invalid');
}

async function applyFilter(expr) {
  const trimmed = expr.trim();
  const seq = ++filterSeq;
  requery.cancel();
  if (!trimmed) {
    state.filter = '';
    state.filterIds = null;
    hideExprError($('filter-error'), $('filter-input'));
    rebuildView();
    return;
  }
  try {
    const data = await api('GET', `/api/flows?filter=${encodeURIComponent(expr)}`);
    if (seq !== filterSeq) return;
    state.filter = expr;
    takeFilterResult(data);
    hideExprError($('filter-error'), $('filter-input'));
  } catch (e) {
    if (seq !== filterSeq) return;
    if (e instanceof ApiError && e.status === 400) {
      // The list keeps the last good filter's flows.
      showExprError($('filter-error'), $('filter-input'), expr, e.message, e.body.position);
    } else {
      toolbarMessage(`filter failed: ${e.message}`, true);
    }
  }
}

function takeFilterResult(data) {
  for (const s of data.flows) applySummary(s);
  state.filterIds = new Set(data.flows.map((s) => s.id));
  state.total = data.total;
  rebuildView();
}

/** With a filter, new and changed flows are re-matched by re-running it:
 *  at most every 300 ms of quiet, and at least once a second under a
 *  steady stream. */
async function requeryNow() {
  requeryState.firstAt = null;
  if (!state.filter) return;
  // Late answers lose: to a newer re-query, and to a filter typed since.
  const filterAtStart = filterSeq;
  const seq = ++requeryState.seq;
  try {
    const data = await api('GET', `/api/flows?filter=${encodeURIComponent(state.filter)}`);
    if (seq === requeryState.seq && filterAtStart === filterSeq) takeFilterResult(data);
  } catch {
    // The next event tries again.
  }
}

const requeryState = { firstAt: null, seq: 0 };
const requeryDebounced = debounce(requeryNow, 300);
function requery() {
  const now = performance.now();
  if (requeryState.firstAt === null) requeryState.firstAt = now;
  if (now - requeryState.firstAt > 1000) {
    requeryDebounced.cancel();
    requeryNow();
  } else {
    requeryDebounced();
  }
}
requery.cancel = () => {
  requeryDebounced.cancel();
  requeryState.firstAt = null;
};

async function applyIntercept(expr) {
  const input = $('intercept-input');
  try {
    await api('PUT', '/api/intercept', { filter: expr.trim() });
    hideExprError($('intercept-error'), input);
    input.classList.toggle('active', expr.trim() !== '');
    input.dataset.applied = expr.trim();
    toolbarMessage(expr.trim() ? `intercepting ${expr.trim()}` : 'intercept off');
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) showExprError($('intercept-error'), input, expr, e.message, e.body.position);
    else toolbarMessage(`intercept failed: ${e.message}`, true);
  }
}

async function loadIntercept() {
  try {
    const data = await api('GET', '/api/intercept');
    const input = $('intercept-input');
    input.value = data.filter || '';
    input.dataset.applied = input.value;
    input.classList.toggle('active', input.value !== '');
  } catch {
    // Shown by the auth banner or the next try.
  }
}

// ---------------------------------------------------------------------------
// The virtualised flow list
// ---------------------------------------------------------------------------

const ROW_HEIGHT = 22;
const OVERSCAN = 12;
/** Row elements on screen, reused as the list scrolls. */
const rowPool = [];
let renderQueued = false;

function renderListHead() {
  const head = $('list-head');
  clear(head);
  for (const column of COLUMNS) {
    const sorted = state.sort.key === column.key;
    const arrow = sorted ? (state.sort.dir === 1 ? ' ▲' : ' ▼') : '';
    head.append(el('span', {
      className: `${column.cls}${sorted ? ' sorted' : ''}`,
      title: `sort by ${column.title || column.label.toLowerCase()} (click again to reverse, a third time for newest first)`,
      testid: `sort-${column.key}`,
      text: column.label + arrow,
      on: { click: () => cycleSort(column.key) },
    }));
  }
}

function makeRow() {
  const row = el('div', { className: 'row', testid: 'flow-row' });
  row.cells = COLUMNS.map((column) => {
    const cell = el('span', { className: column.cls });
    row.append(cell);
    return cell;
  });
  return row;
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderList();
  });
}

function renderList() {
  const scroll = $('list-scroll');
  const spacer = $('list-spacer');
  const count = state.view.length;
  spacer.style.height = `${count * ROW_HEIGHT}px`;
  const top = scroll.scrollTop;
  const height = scroll.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(count, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
  const needed = Math.max(0, last - first);
  while (rowPool.length < needed) {
    const row = makeRow();
    rowPool.push(row);
    spacer.append(row);
  }
  for (const row of rowPool.splice(needed)) row.remove();
  for (let i = 0; i < needed; i++) paintRow(rowPool[i], first + i);
  $('list-empty')?.remove();
  if (count === 0) {
    spacer.append(el('div', {
      id: 'list-empty',
      className: 'list-empty',
      text: state.filter ? 'No flow matches the filter.' : 'No flows yet: send requests through the proxy.',
    }));
  }
}

function paintRow(row, index) {
  const id = state.view[index];
  const s = state.flows.get(id);
  if (!s) return;
  if (row.painted === s && row.index === index && row.version === state.selectionVersion) return;
  row.painted = s;
  row.index = index;
  row.version = state.selectionVersion;
  row.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
  row.dataset.id = String(s.id);
  if (s.intercepted) row.dataset.intercepted = s.intercepted;
  else delete row.dataset.intercepted;
  let cls = 'row';
  if (index % 2) cls += ' odd';
  if (state.selected.has(s.id)) cls += ' selected';
  if (s.id === state.focusId) cls += ' focused';
  if (s.marked) cls += ' marked';
  if (s.intercepted) cls += ' intercepted';
  if (s.error) cls += ' failed';
  if (s.websocket) cls += ' websocket';
  row.className = cls;
  for (let c = 0; c < COLUMNS.length; c++) {
    const text = COLUMNS[c].text(s);
    const cell = row.cells[c];
    if (cell.textContent !== text) cell.textContent = text;
  }
  const status = row.cells[5];
  status.className = `status num ${s.status ? `s${String(s.status)[0]}` : 'pending'}`;
  row.cells[4].title = flowUrl(s);
  if (s.comment) row.cells[4].title += `\n${s.comment}`;
  if (s.error) row.cells[5].title = s.error;
  else row.cells[5].removeAttribute('title');
  if (s.websocket) row.cells[6].title = `WebSocket, ${s.websocket.open ? 'open' : `${s.websocket.messages} messages`}`;
  else row.cells[6].removeAttribute('title');
}

function renderStatus() {
  const shown = state.view.length;
  const total = state.filter ? state.total : state.flows.size;
  const count = $('flow-count');
  count.textContent = state.filter ? `${shown} of ${total} flows match` : `${shown} flows`;
  count.dataset.shown = String(shown);
  count.dataset.total = String(total);
  const paused = state.paused.size;
  $('paused-count').textContent = paused ? `${paused} paused` : '';
  $('resume-all').disabled = paused === 0;
  const selected = state.selected.size;
  $('selection-count').textContent = selected > 1 ? `${selected} selected` : '';
  $('export-har').disabled = selected === 0;
  $('export-har').textContent = selected > 1 ? `Export HAR (${selected})` : 'Export HAR';
}

function repaintSelection() {
  state.selectionVersion++;
  renderList();
  renderStatus();
}

/** Click: select one; ctrl/⌘-click: toggle; shift-click: a range. */
function onRowClick(event) {
  const row = event.target.closest('.row');
  if (!row) return;
  const id = Number(row.dataset.id);
  if (event.target.closest('.mark')) {
    const s = state.flows.get(id);
    if (s) setMarked(id, !s.marked);
    return;
  }
  if (event.shiftKey && state.anchorId !== null) {
    const from = state.view.indexOf(state.anchorId);
    const to = state.view.indexOf(id);
    if (from >= 0 && to >= 0) {
      if (!(event.ctrlKey || event.metaKey)) state.selected.clear();
      for (let i = Math.min(from, to); i <= Math.max(from, to); i++) state.selected.add(state.view[i]);
    }
  } else if (event.ctrlKey || event.metaKey) {
    if (state.selected.has(id)) state.selected.delete(id);
    else state.selected.add(id);
    state.anchorId = id;
  } else {
    state.selected.clear();
    state.selected.add(id);
    state.anchorId = id;
  }
  focusFlow(id);
}

function focusFlow(id) {
  if (state.focusId !== id) {
    state.focusId = id;
    detailState.mode = 'view';
    showDetail();
  }
  repaintSelection();
}

function onListKey(event) {
  if (event.key === 'Escape') {
    closeDetail();
    return;
  }
  if ((event.ctrlKey || event.metaKey) && event.key === 'a') {
    event.preventDefault();
    state.selected = new Set(state.view);
    repaintSelection();
    return;
  }
  const step = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1, PageDown: 20, PageUp: -20 }[event.key];
  if (!step || state.view.length === 0) return;
  event.preventDefault();
  const at = state.focusId === null ? -1 : state.view.indexOf(state.focusId);
  const next = Math.max(0, Math.min(state.view.length - 1, at + step));
  const id = state.view[next];
  state.selected = new Set([id]);
  state.anchorId = id;
  scrollIntoView(next);
  focusFlow(id);
}

function scrollIntoView(index) {
  const scroll = $('list-scroll');
  const top = index * ROW_HEIGHT;
  if (top < scroll.scrollTop) scroll.scrollTop = top;
  else if (top + ROW_HEIGHT > scroll.scrollTop + scroll.clientHeight) scroll.scrollTop = top + ROW_HEIGHT - scroll.clientHeight;
}

async function setMarked(id, marked) {
  try {
    applyPatched(await api('PATCH', `/api/flows/${id}`, { marked }));
  } catch (e) {
    toolbarMessage(`cannot mark #${id}: ${e.message}`, true);
  }
}

async function setComment(id, comment) {
  try {
    applyPatched(await api('PATCH', `/api/flows/${id}`, { comment }));
    toolbarMessage(`comment saved on #${id}`);
  } catch (e) {
    toolbarMessage(`cannot comment #${id}: ${e.message}`, true);
  }
}

function applyPatched(summary) {
  if (summary && typeof summary.id === 'number') {
    queueFlow(summary);
  }
}

// ---------------------------------------------------------------------------
// Flow detail
// ---------------------------------------------------------------------------

const detailState = {
  /** The tab shown: request, response, websocket, timing, connection, plugins. */
  tab: 'request',
  /** 'view', or 'duplicate' while the duplicate-and-edit editor is open. */
  mode: 'view',
  /** The last detail read, and a counter against late answers. */
  flow: null,
  seq: 0,
  /** The editor of a paused flow, kept across refreshes: {id, phase, node, read}. */
  editor: null,
  /** The duplicate-and-edit editor while open: {id, node}. */
  duplicate: null,
  /** The flow and phase last seen paused, to switch tabs once when it pauses. */
  pausedKey: null,
  /** Chosen body view per message: auto, text, json, hex, image. */
  bodyMode: { request: 'auto', response: 'auto' },
  /** Bodies read, by `id/part/size`. */
  bodies: new Map(),
  /** Blob URLs of images shown, revoked when the detail changes. */
  objectUrls: [],
  /** The comment field is not overwritten while it is being edited. */
  commentDirty: false,
  /** WebSocket messages shown whole (by index), and whether all are listed. */
  wsExpanded: new Set(),
  wsAll: false,
};

function showDetail() {
  $('detail').hidden = false;
  $('splitter').hidden = false;
  detailState.flow = null;
  detailState.editor = null;
  detailState.commentDirty = false;
  detailState.bodies.clear();
  detailState.wsExpanded.clear();
  detailState.wsAll = false;
  loadDetail();
}

function closeDetail() {
  state.focusId = null;
  detailState.flow = null;
  detailState.editor = null;
  detailState.mode = 'view';
  $('detail').hidden = true;
  $('splitter').hidden = true;
  clear($('detail'));
  repaintSelection();
}

const refreshDetail = debounce(() => {
  if (state.focusId !== null) loadDetail();
}, 120);

async function loadDetail() {
  const id = state.focusId;
  const seq = ++detailState.seq;
  let flow;
  try {
    flow = await api('GET', `/api/flows/${id}`);
  } catch (e) {
    if (seq !== detailState.seq) return;
    const pane = $('detail');
    clear(pane);
    pane.append(el('div', { className: 'detail-body' },
      el('p', { className: 'note', text: e.status === 404 ? `Flow #${id} is no longer held.` : `Cannot read flow #${id}: ${e.message}` })));
    return;
  }
  if (seq !== detailState.seq || state.focusId !== id) return;
  detailState.flow = flow;
  renderDetail();
}

function renderDetail() {
  const flow = detailState.flow;
  const pane = $('detail');
  const s = flow.summary;
  for (const url of detailState.objectUrls) URL.revokeObjectURL(url);
  detailState.objectUrls = [];

  // A flow that has just paused shows its editor's tab.
  const pausedKey = s.intercepted ? `${s.id}/${s.intercepted}` : null;
  if (pausedKey && pausedKey !== detailState.pausedKey) detailState.tab = s.intercepted;
  detailState.pausedKey = pausedKey;
  if (!detailState.editor || detailState.editor.id !== s.id || detailState.editor.phase !== s.intercepted) {
    detailState.editor = s.intercepted ? makePausedEditor(flow) : null;
  }

  const scrollTop = pane.querySelector('.detail-body')?.scrollTop ?? 0;
  const commentInput = pane.querySelector('[data-testid="comment-input"]');
  const keepComment = detailState.commentDirty && commentInput ? commentInput.value : null;
  clear(pane);
  pane.dataset.id = String(s.id);
  pane.append(detailHead(flow, keepComment));
  if (s.intercepted) pane.append(pausedBanner(s));

  if (detailState.mode === 'duplicate') {
    // Kept across refreshes of the same flow, edits and all.
    if (!detailState.duplicate || detailState.duplicate.id !== s.id) {
      detailState.duplicate = { id: s.id, node: duplicateEditor(flow) };
    }
    pane.append(el('div', { className: 'detail-body' }, detailState.duplicate.node));
    return;
  }
  detailState.duplicate = null;
  const ws = flow.websocket;
  const tabs = [
    ['request', 'Request'],
    ['response', 'Response'],
    ws ? ['websocket', `WebSocket (${ws.messages.length + (ws.messages_omitted || 0)})`] : null,
    ['timing', 'Timing'],
    ['connection', 'Connection'],
    ['plugins', `Plugins${flow.plugins && flow.plugins.length ? ` (${flow.plugins.length})` : ''}`],
  ].filter(Boolean);
  if (!tabs.some(([key]) => key === detailState.tab)) detailState.tab = 'request';
  pane.append(el('nav', { className: 'detail-tabs' }, tabs.map(([key, label]) => el('button', {
    type: 'button',
    className: detailState.tab === key ? 'active' : '',
    testid: `detail-tab-${key}`,
    text: label,
    on: { click: () => { detailState.tab = key; renderDetail(); } },
  }))));
  const body = el('div', { className: 'detail-body', testid: `detail-${detailState.tab}` });
  pane.append(body);
  switch (detailState.tab) {
    case 'response': renderResponseTab(body, flow); break;
    case 'websocket': renderWebSocketTab(body, flow); break;
    case 'timing': renderTimingTab(body, flow); break;
    case 'connection': renderConnectionTab(body, flow); break;
    case 'plugins': renderPluginsTab(body, flow); break;
    default: renderRequestTab(body, flow);
  }
  body.scrollTop = scrollTop;
}

function detailHead(flow, keepComment) {
  const s = flow.summary;
  const comment = el('input', {
    type: 'text',
    className: 'comment',
    placeholder: 'comment',
    testid: 'comment-input',
    value: keepComment ?? s.comment ?? '',
    on: {
      input: () => { detailState.commentDirty = true; },
      change: (e) => { detailState.commentDirty = false; setComment(s.id, e.target.value); },
      keydown: (e) => { if (e.key === 'Enter') e.target.blur(); },
    },
  });
  return el('div', { className: 'detail-head' },
    el('div', { className: 'detail-title' },
      el('span', { className: 'id', text: `#${s.id}` }),
      el('span', { className: 'method', text: s.method }),
      el('span', { className: 'url', testid: 'detail-url', text: flow.request.url }),
      el('span', { className: 'status', text: s.status ? String(s.status) : '' }),
      el('button', { type: 'button', className: 'detail-close', title: 'close (Esc)', text: '×', testid: 'detail-close', on: { click: closeDetail } })),
    el('div', { className: 'detail-actions' },
      el('button', {
        type: 'button',
        className: `mark-button${s.marked ? ' on' : ''}`,
        testid: 'mark',
        text: s.marked ? '★ Marked' : '☆ Mark',
        on: { click: () => setMarked(s.id, !s.marked) },
      }),
      el('button', { type: 'button', testid: 'replay', text: 'Replay', title: 'send this request again through the proxy', on: { click: (e) => replayFlow(s.id, e.target) } }),
      el('button', {
        type: 'button',
        testid: 'duplicate',
        text: 'Duplicate & edit',
        title: 'edit a copy of this request and send it',
        on: { click: () => { detailState.mode = 'duplicate'; renderDetail(); } },
      }),
      comment));
}

function pausedBanner(s) {
  const where = s.intercepted === 'request' ? 'before the upstream' : 'before the client';
  return el('div', { className: 'paused-banner', testid: 'paused-banner' },
    el('span', { text: `Paused ${where} (${s.intercepted})` }),
    el('span', { className: 'spacer' }),
    el('button', { type: 'button', className: 'primary', testid: 'resume', text: 'Resume', on: { click: (e) => resumeFlow(s.id, e.target) } }),
    el('button', { type: 'button', className: 'danger', testid: 'kill', text: 'Kill', on: { click: (e) => killFlow(s.id, e.target) } }));
}

function headersTable(headers, testid) {
  if (!headers || headers.length === 0) return el('p', { className: 'note', text: 'no header fields' });
  return kvTable(headers.map(([name, value]) => [name, headerValue(value)]), testid);
}

function renderRequestTab(body, flow) {
  const request = flow.request;
  const editor = detailState.editor;
  if (editor && editor.phase === 'request') {
    body.append(el('div', { className: 'section-title', text: 'Edit the request, then resume' }), editor.node);
    return;
  }
  body.append(
    el('div', { className: 'first-line', text: `${request.method} ${request.url} ${request.version || ''}` }),
    el('div', { className: 'section-title', text: 'Headers' }),
    headersTable(request.headers, 'request-headers'),
    el('div', { className: 'section-title', text: 'Body' }),
    bodyView(flow.summary.id, 'request', request));
}

function renderResponseTab(body, flow) {
  const response = flow.response;
  const editor = detailState.editor;
  if (editor && editor.phase === 'response') {
    body.append(el('div', { className: 'section-title', text: 'Edit the response, then resume' }), editor.node);
    return;
  }
  if (!response) {
    body.append(el('p', { className: flow.error ? 'error-text' : 'note', text: flow.error ? `No response: ${flow.error}` : 'No response yet.' }));
    return;
  }
  body.append(
    el('div', { className: 'first-line', text: `${response.version || ''} ${response.status}` }),
    el('div', { className: 'section-title', text: 'Headers' }),
    headersTable(response.headers, 'response-headers'),
    el('div', { className: 'section-title', text: 'Body' }),
    bodyView(flow.summary.id, 'response', response));
}

// ---------------------------------------------------------------------------
// Body views: text, pretty JSON, hex, image
// ---------------------------------------------------------------------------

const TEXT_LIMIT = 2 * 1024 * 1024;
const HEX_LIMIT = 64 * 1024;

function bodyView(id, part, message) {
  const size = message.body ? message.body.size : 0;
  const truncated = message.body ? message.body.truncated : false;
  const encoding = findHeader(message.headers, 'content-encoding');
  const mode = detailState.bodyMode[part];
  const select = el('select', {
    testid: `${part}-body-mode`,
    on: { change: (e) => { detailState.bodyMode[part] = e.target.value; renderDetail(); } },
  }, ['auto', 'text', 'json', 'hex', 'image'].map((m) => el('option', { value: m, text: { auto: 'Auto', text: 'Text', json: 'JSON', hex: 'Hex', image: 'Image' }[m], selected: m === mode })));
  const info = [`${size} bytes`];
  if (encoding) info.push(`${encoding}-encoded, shown decoded`);
  if (truncated) info.push('truncated: only the first bytes were kept');
  const container = el('div', { className: 'body-container' });
  const bar = el('div', { className: 'body-bar' }, select, el('span', { className: 'info', text: info.join(' · ') }));
  if (size === 0) {
    container.append(el('p', { className: 'note', testid: 'body-view', text: 'no body' }));
  } else {
    container.append(el('p', { className: 'note', text: 'loading…' }));
    readBody(id, part, size).then((result) => {
      clear(container);
      container.append(renderBody(result, mode));
    }, (e) => {
      clear(container);
      container.append(el('p', { className: 'error-text', testid: 'body-view', text: `cannot read the body: ${e.message}` }));
    });
  }
  return el('div', { className: 'body' }, bar, container);
}

/** The decoded body bytes and the message's own content type. */
async function readBody(id, part, size) {
  const key = `${id}/${part}/${size}`;
  let entry = detailState.bodies.get(key);
  if (!entry) {
    entry = (async () => {
      const response = await api('GET', `/api/flows/${id}/${part}/body?decode=1`, undefined, { raw: true });
      const bytes = new Uint8Array(await response.arrayBuffer());
      return { bytes, type: response.headers.get('X-Proxlet-Content-Type') || '' };
    })();
    detailState.bodies.set(key, entry);
  }
  return entry;
}

function isJsonType(type) {
  return /[/+]json\b/i.test(type);
}

function isTextType(type) {
  return /^text\/|javascript|ecmascript|[/+]xml\b|x-www-form-urlencoded|graphql|yaml|toml|csv/i.test(type);
}

function looksLikeText(bytes) {
  const probe = bytes.subarray(0, 4096);
  if (probe.includes(0)) return false;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(probe.length < bytes.length ? probe.subarray(0, probe.length - 4) : probe);
    return true;
  } catch {
    return false;
  }
}

function autoMode(bytes, type) {
  const mime = type.split(';')[0].trim().toLowerCase();
  if (mime.startsWith('image/')) return 'image';
  if (isJsonType(mime)) return 'json';
  if (isTextType(mime)) return 'text';
  if (looksLikeText(bytes)) {
    const start = new TextDecoder().decode(bytes.subarray(0, 1)).trim();
    return start === '{' || start === '[' ? 'json' : 'text';
  }
  return 'hex';
}

function renderBody({ bytes, type }, chosen) {
  const mode = chosen === 'auto' ? autoMode(bytes, type) : chosen;
  const wrap = el('div', { className: 'body-rendered', dataset: { mode } });
  const decodeText = () => new TextDecoder().decode(bytes.subarray(0, TEXT_LIMIT));
  const limitNote = (limit, what) => (bytes.length > limit ? el('p', { className: 'note', text: `showing the first ${limit} of ${bytes.length} bytes as ${what}` }) : null);
  switch (mode) {
    case 'json': {
      const text = decodeText();
      try {
        const pretty = JSON.stringify(JSON.parse(text), null, 2);
        wrap.append(el('pre', { className: 'body-view json', testid: 'body-view', text: pretty }));
      } catch (e) {
        wrap.append(el('p', { className: 'note', text: `not valid JSON (${e.message}); shown as text` }),
          el('pre', { className: 'body-view', testid: 'body-view', text }));
      }
      break;
    }
    case 'hex':
      wrap.append(limitNote(HEX_LIMIT, 'hex'), el('pre', { className: 'body-view hex', testid: 'body-view', text: hexDump(bytes.subarray(0, HEX_LIMIT)) }));
      break;
    case 'image': {
      const url = URL.createObjectURL(new Blob([bytes], { type: type || 'application/octet-stream' }));
      detailState.objectUrls.push(url);
      const image = el('img', { className: 'body-image', testid: 'body-view', alt: 'response image', src: url });
      image.addEventListener('error', () => image.replaceWith(el('p', { className: 'note', text: 'not an image this browser can show' })));
      wrap.append(image);
      break;
    }
    default:
      wrap.append(limitNote(TEXT_LIMIT, 'text'), el('pre', { className: 'body-view', testid: 'body-view', text: decodeText() }));
  }
  return wrap;
}

function hexDump(bytes) {
  const lines = [];
  const hex = (n, w) => n.toString(16).padStart(w, '0');
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const chunk = bytes.subarray(offset, offset + 16);
    let codes = '';
    let ascii = '';
    for (let i = 0; i < 16; i++) {
      if (i === 8) codes += ' ';
      if (i < chunk.length) {
        codes += `${hex(chunk[i], 2)} `;
        ascii += chunk[i] >= 0x20 && chunk[i] < 0x7f ? String.fromCharCode(chunk[i]) : '.';
      } else {
        codes += '   ';
      }
    }
    lines.push(`${hex(offset, 8)}  ${codes} ${ascii}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// WebSocket messages
// ---------------------------------------------------------------------------

/** Messages listed before "show all" (a record holds up to 100 000). */
const WS_SHOWN = 500;
/** Characters of a text message in its one-line preview. */
const WS_PREVIEW = 160;

/** A payload's bytes: the API gives UTF-8 as a string, other bytes as
 *  `{"base64": …}` (a binary message may be either). */
function payloadBytes(data) {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data && typeof data.base64 === 'string') {
    try {
      return Uint8Array.from(atob(data.base64), (c) => c.charCodeAt(0));
    } catch {
      return new Uint8Array();
    }
  }
  return new Uint8Array();
}

function payloadText(data) {
  return typeof data === 'string' ? data : new TextDecoder().decode(payloadBytes(data));
}

function hexPreview(bytes, count = 24) {
  const shown = Array.from(bytes.subarray(0, count), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return bytes.length > count ? `${shown} …` : shown;
}

/** How the WebSocket ended, in words. */
function websocketOutcome(ws) {
  if (ws.end === null || ws.end === undefined) return 'open';
  let text = ws.closed_by_client === true ? 'closed by the client'
    : ws.closed_by_client === false ? 'closed by the server' : 'ended without a close';
  if (ws.close_code !== null && ws.close_code !== undefined) {
    text += ` (${ws.close_code}${ws.close_reason ? ` ${ws.close_reason}` : ''})`;
  }
  return text;
}

function renderWebSocketTab(body, flow) {
  const ws = flow.websocket;
  const messages = ws.messages || [];
  const omitted = ws.messages_omitted || 0;
  const start = messages.length ? messages[0].time : null;
  const facts = [
    ['state', websocketOutcome(ws)],
    ['messages', `${messages.length + omitted}${omitted ? ` (${omitted} past the record's bound, only counted)` : ''}`],
    ['from the client', String(messages.filter((m) => m.from_client).length)],
    ['from the server', String(messages.filter((m) => !m.from_client).length)],
  ];
  if (ws.end !== null && ws.end !== undefined) facts.push(['ended', formatTime(ws.end)]);
  body.append(
    el('div', { className: 'section-title', text: 'WebSocket' }),
    kvTable(facts, 'websocket-facts'));
  if (messages.length === 0) {
    body.append(el('p', { className: 'note', text: ws.end === null || ws.end === undefined
      ? 'Open: messages are listed when the WebSocket ends.'
      : 'No messages.' }));
    return;
  }
  const shown = detailState.wsAll ? messages : messages.slice(0, WS_SHOWN);
  const rows = [];
  shown.forEach((m, index) => {
    const content = m.content || { size: 0, truncated: false, data: '' };
    const bytes = payloadBytes(content.data);
    const preview = m.text ? payloadText(content.data).slice(0, WS_PREVIEW).replace(/\s+/g, ' ') : hexPreview(bytes);
    const marks = [];
    if (content.truncated) marks.push(bytes.length ? `first ${bytes.length} B kept` : 'not kept');
    if (m.dropped) marks.push('dropped');
    if (m.injected) marks.push('injected');
    const expanded = detailState.wsExpanded.has(index);
    const toggle = () => {
      if (detailState.wsExpanded.has(index)) detailState.wsExpanded.delete(index);
      else detailState.wsExpanded.add(index);
      renderDetail();
    };
    rows.push(el('tr', {
      className: `ws-message ${m.from_client ? 'to-server' : 'to-client'}${m.dropped ? ' dropped' : ''}${m.injected ? ' injected' : ''}${expanded ? ' expanded' : ''}`,
      testid: 'ws-message',
      dataset: { index: String(index), direction: m.from_client ? 'to-server' : 'to-client', kind: m.text ? 'text' : 'binary' },
      title: 'click to show it whole',
      on: { click: toggle },
    },
    el('td', { className: 'ws-dir', title: m.from_client ? 'client → server' : 'server → client', text: m.from_client ? '→' : '←' }),
    el('td', { className: 'mono small', text: start === null ? formatTime(m.time) : `+${formatDuration((m.time - start) / 1000)}`, title: formatTime(m.time) }),
    el('td', { className: 'small', text: m.text ? 'text' : 'binary' }),
    el('td', { className: 'num small', text: formatSize(content.size) }),
    el('td', { className: `ws-data${m.text ? '' : ' mono'}`, testid: 'ws-preview', text: preview }),
    el('td', { className: 'ws-marks small', testid: 'ws-marks', text: marks.join(' · ') })));
    if (expanded) {
      const whole = m.text
        ? el('pre', { className: 'body-view', testid: 'ws-whole', text: payloadText(content.data) })
        : el('pre', { className: 'body-view hex', testid: 'ws-whole', text: hexDump(bytes.subarray(0, HEX_LIMIT)) });
      rows.push(el('tr', { className: 'ws-whole' }, el('td', { colSpan: 6 }, whole)));
    }
  });
  body.append(
    el('div', { className: 'section-title', text: 'Messages (→ to the server, ← to the client)' }),
    el('table', { className: 'grid ws-messages', testid: 'ws-messages' },
      el('thead', {}, el('tr', {},
        el('th', { text: '' }),
        el('th', { text: 'time' }),
        el('th', { text: 'kind' }),
        el('th', { className: 'num', text: 'size' }),
        el('th', { className: 'ws-data', text: 'data' }),
        el('th', { text: '' }))),
      el('tbody', {}, rows)));
  if (shown.length < messages.length) {
    body.append(el('button', {
      type: 'button',
      testid: 'ws-show-all',
      text: `Show all ${messages.length} messages`,
      on: { click: () => { detailState.wsAll = true; renderDetail(); } },
    }));
  }
}

// ---------------------------------------------------------------------------
// Timing, connection and plugin sections
// ---------------------------------------------------------------------------

const TIMING_PHASES = [
  { cls: 'request', label: 'request', from: (t) => t.request_start, to: (t) => t.request_end },
  { cls: 'connect', label: 'upstream connect', from: (t) => t.server_connect, to: (t) => t.server_tcp },
  { cls: 'tls', label: 'upstream TLS', from: (t) => t.server_tcp, to: (t) => t.server_tls },
  {
    cls: 'wait',
    label: 'waiting for the response',
    from: (t) => Math.max(...[t.request_end, t.server_tls ?? t.server_tcp].filter((v) => v !== null && v !== undefined)),
    to: (t) => t.response_start,
  },
  { cls: 'receive', label: 'response body', from: (t) => t.response_start, to: (t) => t.response_end },
  { cls: 'websocket', label: 'WebSocket open', from: (t) => t.response_end, to: (t) => t.websocket_end },
];

const TIMING_MOMENTS = [
  ['client_connect', 'client connected'],
  ['client_tls', 'client TLS done'],
  ['request_start', 'request head read'],
  ['request_end', 'request body read'],
  ['server_connect', 'upstream connect began'],
  ['server_tcp', 'upstream TCP up'],
  ['server_tls', 'upstream TLS done'],
  ['response_start', 'response head'],
  ['response_end', 'response sent'],
  ['websocket_end', 'WebSocket ended'],
];

function renderTimingTab(body, flow) {
  const t = { ...flow.timings, websocket_end: flow.websocket ? flow.websocket.end : null };
  const has = (v) => v !== null && v !== undefined && Number.isFinite(v);
  const start = t.request_start;
  if (!has(start)) {
    body.append(el('p', { className: 'note', text: 'No timings recorded.' }));
    return;
  }
  const moments = TIMING_MOMENTS.map(([key]) => t[key]).filter((v) => has(v) && v >= start);
  const end = Math.max(start + 1, ...moments);
  const span = end - start;
  const bar = el('div', { className: 'timing-bar', testid: 'timing-bar' });
  const legend = [];
  for (const phase of TIMING_PHASES) {
    const from = phase.from(t);
    const to = phase.to(t);
    if (!has(from) || !has(to) || to < from || from < start) continue;
    const seg = el('div', { className: `timing-seg ${phase.cls}`, title: `${phase.label}: ${formatDuration((to - from) / 1000)}` });
    seg.style.left = `${((from - start) / span) * 100}%`;
    seg.style.width = `${((to - from) / span) * 100}%`;
    bar.append(seg);
    const swatch = el('span', { className: `timing-legend timing-seg ${phase.cls}` });
    swatch.style.position = 'static';
    legend.push([el('span', {}, swatch, phase.label), formatDuration((to - from) / 1000)]);
  }
  body.append(
    el('div', { className: 'section-title', text: `Timing · ${formatDuration(span / 1000)} from request to ${flow.websocket ? "the WebSocket's end" : 'response end'}` }),
    bar,
    kvTable(legend, 'timing-phases'),
    el('div', { className: 'section-title', text: 'Moments' }),
    kvTable(TIMING_MOMENTS.filter(([key]) => has(t[key])).map(([key, label]) => {
      const offset = (t[key] - start) / 1000;
      return [label, `${formatTime(t[key])}   ${offset >= 0 ? '+' : '−'}${formatDuration(Math.abs(offset))}`];
    }), 'timing-moments'));
}

function tlsRows(label, tls) {
  if (!tls) return [[label, 'none']];
  return [
    [`${label} version`, tls.version || '—'],
    [`${label} SNI`, tls.sni || '—'],
    [`${label} ALPN`, tls.alpn || '—'],
    [`${label} intercepted`, tls.intercepted ? 'yes (proxlet terminated it)' : 'no'],
  ];
}

function renderConnectionTab(body, flow) {
  body.append(
    el('div', { className: 'section-title', text: 'Connection' }),
    kvTable([
      ['client', flow.client || '—'],
      ['server', flow.server || '—'],
      ['request version', flow.request.version || '—'],
      ['response version', flow.response ? flow.response.version || '—' : '—'],
    ], 'connection'),
    el('div', { className: 'section-title', text: 'TLS' }),
    kvTable([...tlsRows('client TLS', flow.client_tls), ...tlsRows('server TLS', flow.server_tls)], 'tls'));
  if (flow.note || flow.error) {
    body.append(el('div', { className: 'section-title', text: 'Outcome' }),
      kvTable([['note', flow.note || '—'], ['error', flow.error || '—']], 'outcome'));
  }
}

function renderPluginsTab(body, flow) {
  const steps = flow.plugins || [];
  if (steps.length === 0) {
    body.append(el('p', { className: 'note', text: 'No plugin was called for this flow.' }));
    return;
  }
  body.append(el('table', { className: 'grid', testid: 'plugin-steps' },
    el('thead', {}, el('tr', {}, el('th', { text: 'plugin' }), el('th', { text: 'hook' }), el('th', { text: 'decision' }), el('th', { className: 'num', text: 'µs' }))),
    el('tbody', {}, steps.map((step) => el('tr', {},
      el('td', { text: step.plugin }),
      el('td', { text: step.hook }),
      el('td', { className: /^failed/.test(step.decision) ? 'error-text' : '', text: step.decision }),
      el('td', { className: 'num', text: String(step.micros) }))))));
}

// ---------------------------------------------------------------------------
// Editors: a paused flow, and duplicate-and-edit
// ---------------------------------------------------------------------------

function headersToText(headers) {
  return (headers || []).map(([name, value]) => `${name}: ${headerValue(value)}`).join('\n');
}

/** `Name: value` lines back into [name, value] pairs (blank lines skipped). */
function textToHeaders(text) {
  const headers = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const colon = line.indexOf(':', line.startsWith(':') ? 1 : 0);
    if (colon <= 0) throw new Error(`header line without "name: value": ${line}`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

/** Fills `textarea` with a message's body as text (decoded when it has a
 *  Content-Encoding); the returned promise says whether it was decoded. */
async function fillBody(textarea, id, part, message) {
  const body = message.body || { size: 0 };
  const encoded = findHeader(message.headers, 'content-encoding') !== null;
  if (body.truncated) {
    textarea.value = '';
    textarea.disabled = true;
    textarea.placeholder = `the body (${body.size} bytes) was not kept whole and cannot be edited`;
    return { encoded, original: null };
  }
  if (body.size === 0) return { encoded, original: '' };
  textarea.disabled = true;
  textarea.placeholder = 'loading…';
  const response = await api('GET', `/api/flows/${id}/${part}/body${encoded ? '?decode=1' : ''}`, undefined, { raw: true });
  const text = new TextDecoder().decode(await response.arrayBuffer());
  textarea.value = text;
  textarea.disabled = false;
  textarea.placeholder = '';
  return { encoded, original: text };
}

/** The header list to send with an edited body: the host frames it, and a
 *  body shown decoded goes out without its old Content-Encoding. */
function headersForNewBody(headers, decoded) {
  return headers.filter(([name]) => {
    const lower = name.toLowerCase();
    return lower !== 'content-length' && !(decoded && lower === 'content-encoding');
  });
}

function makePausedEditor(flow) {
  const s = flow.summary;
  const phase = s.intercepted;
  const message = phase === 'request' ? flow.request : flow.response;
  if (!message) return null;
  const headersText = headersToText(message.headers);
  const headers = el('textarea', { className: 'headers', testid: 'edit-headers', spellcheck: false, value: headersText });
  const body = el('textarea', { className: 'body', testid: 'edit-body', spellcheck: false });
  const error = el('div', { className: 'error-text', testid: 'edit-error' });
  const editor = { id: s.id, phase, node: null, read: null, collect: null };
  let first;
  if (phase === 'request') {
    const method = el('input', { type: 'text', className: 'method', testid: 'edit-method', value: message.method, spellcheck: false });
    const url = el('input', { type: 'text', className: 'url', testid: 'edit-url', value: message.url, spellcheck: false });
    first = el('div', { className: 'line' }, method, url);
    editor.collect = () => {
      const edits = {};
      if (method.value.trim() !== message.method) edits.method = method.value.trim();
      if (url.value.trim() !== message.url) edits.url = url.value.trim();
      return edits;
    };
  } else {
    const status = el('input', { type: 'text', className: 'status-code', testid: 'edit-status', value: String(message.status) });
    first = el('div', { className: 'line' }, el('label', { text: 'status' }), status);
    editor.collect = () => {
      const edits = {};
      const code = Number(status.value.trim());
      if (!Number.isInteger(code) || code < 100 || code > 999) throw new Error(`status must be a number from 100 to 999, not "${status.value}"`);
      if (code !== message.status) edits.status = code;
      return edits;
    };
  }
  editor.read = fillBody(body, s.id, phase, message).catch((e) => {
    error.textContent = `cannot read the body: ${e.message}`;
    return { encoded: false, original: null };
  });
  const baseCollect = editor.collect;
  editor.collect = async () => {
    const edits = baseCollect();
    const { encoded, original } = await editor.read;
    let list = null;
    if (headers.value !== headersText) list = textToHeaders(headers.value);
    if (original !== null && body.value !== original) {
      edits.body = body.value;
      list = headersForNewBody(list ?? message.headers.map(([n, v]) => [n, headerValue(v)]), encoded);
    }
    if (list) edits.headers = list;
    return edits;
  };
  editor.error = error;
  editor.node = el('div', { className: 'editor', testid: `${phase}-editor` },
    first,
    el('label', { text: 'headers (one "Name: value" a line)' }), headers,
    el('label', { text: 'body' }), body, error);
  return editor;
}

async function resumeFlow(id, button) {
  const editor = detailState.editor && detailState.editor.id === id ? detailState.editor : null;
  button.disabled = true;
  try {
    const edits = editor ? await editor.collect() : {};
    await api('POST', `/api/flows/${id}/resume`, edits);
    toolbarMessage(`resumed #${id}${Object.keys(edits).length ? ` with ${Object.keys(edits).join(', ')} edited` : ''}`);
    detailState.editor = null;
    refreshDetail();
  } catch (e) {
    button.disabled = false;
    const text = e instanceof ApiError && e.status === 409 ? `#${id} is no longer paused` : `cannot resume #${id}: ${e.message}`;
    if (editor) editor.error.textContent = text;
    toolbarMessage(text, true);
  }
}

async function killFlow(id, button) {
  button.disabled = true;
  try {
    await api('POST', `/api/flows/${id}/kill`);
    toolbarMessage(`killed #${id}`);
    detailState.editor = null;
    refreshDetail();
  } catch (e) {
    button.disabled = false;
    toolbarMessage(`cannot kill #${id}: ${e.message}`, true);
  }
}

async function resumeAll() {
  try {
    await api('POST', '/api/resume-all');
    toolbarMessage('resumed every paused flow');
  } catch (e) {
    toolbarMessage(`resume all failed: ${e.message}`, true);
  }
}

function newestId() {
  let newest = 0;
  for (const id of state.flows.keys()) if (id > newest) newest = id;
  return newest;
}

/** The flow a replay made: it arrives as a `flow` event like any other, so
 *  it is the first one after `sinceId` for `url` (any URL with `method` if
 *  the proxy normalised it). Waits up to 5 s for the event. */
async function findReplayed(sinceId, method, url) {
  const deadline = performance.now() + 5000;
  for (;;) {
    let sameMethod = null;
    for (const [id, s] of state.flows) {
      if (id <= sinceId) continue;
      if (flowUrl(s) === url) return id;
      if (s.method === method && (sameMethod === null || id < sameMethod)) sameMethod = id;
    }
    if (performance.now() > deadline) return sameMethod;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function replayFlow(id, button) {
  const s = state.flows.get(id);
  const since = newestId();
  button.disabled = true;
  toolbarMessage(`replaying #${id}…`);
  try {
    const { status } = await api('POST', `/api/flows/${id}/replay`);
    const newId = s ? await findReplayed(since, s.method, flowUrl(s)) : null;
    toolbarMessage(`replayed #${id}: ${status}${newId ? ` (#${newId})` : ''}`);
    if (newId) selectNew(newId);
  } catch (e) {
    toolbarMessage(`replay of #${id} failed: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function selectNew(id) {
  state.selected = new Set([id]);
  state.anchorId = id;
  const index = state.view.indexOf(id);
  if (index >= 0) scrollIntoView(index);
  focusFlow(id);
}

function duplicateEditor(flow) {
  const request = flow.request;
  const method = el('input', { type: 'text', className: 'method', testid: 'dup-method', value: request.method, spellcheck: false });
  const url = el('input', { type: 'text', className: 'url', testid: 'dup-url', value: request.url, spellcheck: false });
  const headers = el('textarea', { className: 'headers', testid: 'dup-headers', spellcheck: false, value: headersToText(request.headers) });
  const body = el('textarea', { className: 'body', testid: 'dup-body', spellcheck: false });
  const error = el('div', { className: 'error-text', testid: 'dup-error' });
  const read = fillBody(body, flow.summary.id, 'request', request).catch((e) => {
    error.textContent = `cannot read the body: ${e.message}`;
    return { encoded: false, original: null };
  });
  const send = el('button', {
    type: 'button',
    className: 'primary',
    testid: 'dup-send',
    text: 'Send',
    on: {
      click: async () => {
        send.disabled = true;
        error.textContent = '';
        try {
          const { encoded } = await read;
          const payload = {
            method: method.value.trim(),
            url: url.value.trim(),
            headers: headersForNewBody(textToHeaders(headers.value), encoded),
            body: body.value,
          };
          const since = newestId();
          const { status } = await api('POST', '/api/replay', payload);
          const id = await findReplayed(since, payload.method, payload.url);
          toolbarMessage(`sent a copy of #${flow.summary.id}: ${status}${id ? ` (#${id})` : ''}`);
          detailState.mode = 'view';
          if (id) selectNew(id);
          else renderDetail();
        } catch (e) {
          error.textContent = `cannot send: ${e.message}`;
          send.disabled = false;
        }
      },
    },
  });
  const cancel = el('button', { type: 'button', testid: 'dup-cancel', text: 'Cancel', on: { click: () => { detailState.mode = 'view'; renderDetail(); } } });
  return el('div', { className: 'editor', testid: 'duplicate-editor' },
    el('div', { className: 'section-title', text: `A copy of #${flow.summary.id}: edit, then send` }),
    el('div', { className: 'line' }, method, url),
    el('label', { text: 'headers (one "Name: value" a line)' }), headers,
    el('label', { text: 'body' }), body,
    el('div', { className: 'buttons' }, send, cancel), error);
}

// ---------------------------------------------------------------------------
// Toolbar: clear, save, load, export
// ---------------------------------------------------------------------------

async function clearFlows() {
  try {
    await api('DELETE', '/api/flows');
    onCleared();
    toolbarMessage('cleared');
  } catch (e) {
    toolbarMessage(`clear failed: ${e.message}`, true);
  }
}

async function loadFile(file) {
  toolbarMessage(`loading ${file.name}…`);
  try {
    const { loaded } = await api('POST', '/api/load', file);
    toolbarMessage(`loaded ${loaded} flows from ${file.name}`);
    await resync();
  } catch (e) {
    toolbarMessage(`cannot load ${file.name}: ${e.message}`, true);
  }
}

function exportSelection() {
  if (state.selected.size === 0) return;
  const ids = [...state.selected].sort((a, b) => a - b).join(',');
  download(`/api/export?format=har&ids=${ids}`, 'proxlet.har');
}

// ---------------------------------------------------------------------------
// List/detail splitter
// ---------------------------------------------------------------------------

function setupSplitter() {
  const splitter = $('splitter');
  const detail = $('detail');
  const saved = Number(localStorage.getItem('proxlet.detailWidth'));
  if (saved > 200) detail.style.width = `${saved}px`;
  splitter.addEventListener('pointerdown', (down) => {
    down.preventDefault();
    splitter.setPointerCapture(down.pointerId);
    splitter.classList.add('dragging');
    const right = $('split').getBoundingClientRect().right;
    const move = (e) => {
      const width = Math.max(320, Math.min(right - e.clientX, window.innerWidth - 300));
      detail.style.width = `${width}px`;
      scheduleRender();
    };
    const up = () => {
      splitter.classList.remove('dragging');
      splitter.removeEventListener('pointermove', move);
      localStorage.setItem('proxlet.detailWidth', String(parseInt(detail.style.width, 10)));
    };
    splitter.addEventListener('pointermove', move);
    splitter.addEventListener('pointerup', up, { once: true });
  });
}

// ---------------------------------------------------------------------------
// Plugins page
// ---------------------------------------------------------------------------

function formatMiB(bytes) {
  return bytes === null || bytes === undefined ? '—' : formatSize(bytes);
}

/** µs per call (the API gives the mean). */
function formatMicros(micros) {
  if (typeof micros !== 'number') return '';
  return micros < 10 ? `${micros.toFixed(1)} µs` : `${Math.round(micros)} µs`;
}

function limitsText(limits) {
  if (!limits) return '';
  return [
    `memory ${formatMiB(limits.memory_bytes)}`,
    `call ${limits.call_ms} ms`,
    `body ${formatMiB(limits.max_body_bytes)}`,
    `delay ≤ ${formatDuration(limits.max_delay_ms)}`,
  ].join(' · ');
}

function matcherText(matcher) {
  if (matcher === null || matcher === undefined || matcher === '') return null;
  return typeof matcher === 'string' ? matcher : JSON.stringify(matcher);
}

function setPlugins(list) {
  // Unchanged lists are not drawn again, so a click is not lost to a redraw.
  const text = JSON.stringify(list);
  if (text === state.pluginsText) return;
  state.pluginsText = text;
  state.plugins = Array.isArray(list) ? list : [];
  renderPlugins();
}

async function loadPlugins() {
  try {
    setPlugins(await api('GET', '/api/plugins'));
  } catch {
    // The auth banner or the next event says more.
  }
}

function renderPlugins() {
  const tbody = $('plugins-body');
  clear(tbody);
  if (state.plugins.length === 0) {
    tbody.append(el('tr', {}, el('td', { colSpan: 12, className: 'note', text: 'No plugins in the chain.' })));
  }
  state.plugins.forEach((p, index) => {
    const toggle = el('input', {
      type: 'checkbox',
      checked: !!p.enabled,
      testid: 'plugin-toggle',
      title: p.enabled ? 'enabled: click to disable' : 'disabled: click to enable',
      on: { change: (e) => setPluginEnabled(p.name, e.target.checked, e.target) },
    });
    const reload = el('button', { type: 'button', testid: 'plugin-reload', text: 'Reload', on: { click: (e) => reloadPlugin(p.name, e.target) } });
    const calls = Object.entries(p.calls || {}).map(([hook, c]) => el('div', {
      className: 'mono',
      text: `${hook} ${c.count} × ${formatMicros(c.micros)}`,
    }));
    const row = el('tr', {
      className: `plugin-row${p.enabled ? '' : ' disabled'}${state.chosenPlugin === p.name ? ' chosen' : ''}`,
      testid: 'plugin-row',
      dataset: { name: p.name, enabled: String(!!p.enabled) },
      on: {
        click: (e) => {
          if (e.target.closest('input, button')) return;
          state.chosenPlugin = state.chosenPlugin === p.name ? null : p.name;
          renderPlugins();
        },
      },
    },
    el('td', { className: 'small', text: String(index + 1) }),
    el('td', {}, el('div', { className: 'plugin-name', text: p.name }), el('div', { className: 'plugin-source', testid: 'plugin-source', text: p.source || '' })),
    el('td', {}, toggle),
    el('td', {}, el('span', { className: 'plugin-sha', testid: 'plugin-sha', title: p.sha256 || '', dataset: { sha: p.sha256 || '' }, text: (p.sha256 || '').slice(0, 12) })),
    el('td', { className: 'mono', text: p.wit || '' }),
    el('td', {}, (p.hooks || []).map((h) => el('span', { className: 'pill', text: h }))),
    el('td', { className: 'small', text: limitsText(p.limits) }),
    el('td', { className: 'small' },
      (p.grants || []).map((g) => el('div', { className: 'mono', text: `${g.guest} → ${g.host}` })),
      matcherText(p.matcher) ? el('div', { text: `match ${matcherText(p.matcher)}` }) : null),
    el('td', { className: 'small', text: `${formatTime(p.loaded_at)}${p.load_ms !== undefined ? ` (${p.load_ms} ms)` : ''}${p.code === 'baseline' ? ', baseline code: optimising' : ''}` }),
    el('td', { className: 'small calls', testid: 'plugin-calls' }, calls.length ? calls : '—'),
    el('td', { className: 'plugin-error', testid: 'plugin-error', text: p.last_error || '' }),
    el('td', {}, reload));
    tbody.append(row);
  });
  renderPluginHistory();
}

function renderPluginHistory() {
  const box = $('plugin-history');
  clear(box);
  const plugin = state.plugins.find((p) => p.name === state.chosenPlugin) ?? state.plugins[0];
  if (!plugin) return;
  const reloads = [...(plugin.reloads || [])].reverse();
  box.append(el('h3', { text: `Reload history of ${plugin.name}${state.chosenPlugin ? '' : ' (click a plugin to choose)'}` }));
  if (reloads.length === 0) {
    box.append(el('p', { className: 'note', text: 'Not reloaded since it was loaded.' }));
    return;
  }
  box.append(el('table', { className: 'grid', testid: 'reload-history' },
    el('thead', {}, el('tr', {}, el('th', { text: 'when' }), el('th', { text: 'result' }), el('th', { text: 'sha256' }), el('th', { text: 'message' }))),
    el('tbody', {}, reloads.map((r) => el('tr', {},
      el('td', { className: 'mono', text: formatTime(r.at) }),
      el('td', { className: r.ok ? 'reload-ok' : 'reload-failed', text: r.ok ? 'ok' : 'failed' }),
      el('td', { className: 'mono', text: (r.sha256 || '').slice(0, 12) }),
      el('td', { text: r.message || '' }))))));
}

function replacePlugin(entry) {
  if (!entry || !entry.name) return;
  const at = state.plugins.findIndex((p) => p.name === entry.name);
  if (at >= 0) state.plugins[at] = entry;
  state.pluginsText = JSON.stringify(state.plugins);
  renderPlugins();
}

async function setPluginEnabled(name, enabled, input) {
  input.disabled = true;
  try {
    replacePlugin(await api('POST', `/api/plugins/${encodeURIComponent(name)}/${enabled ? 'enable' : 'disable'}`));
  } catch (e) {
    input.checked = !enabled;
    addLog({ ts: Date.now() * 1000, level: 'ERROR', plugin: name, message: `cannot ${enabled ? 'enable' : 'disable'}: ${e.message}` });
  } finally {
    input.disabled = false;
  }
}

async function reloadPlugin(name, button) {
  button.disabled = true;
  try {
    replacePlugin(await api('POST', `/api/plugins/${encodeURIComponent(name)}/reload`));
  } catch (e) {
    addLog({ ts: Date.now() * 1000, level: 'ERROR', plugin: name, message: `reload failed: ${e.message}` });
  } finally {
    button.disabled = false;
  }
}

const LOG_MAX = 2000;

function addLog(line) {
  const box = $('plugin-log');
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const level = String(line.level || 'INFO').toUpperCase();
  box.append(el('div', { className: 'log-line', testid: 'log-line' },
    el('span', { className: 'ts', text: `${formatTime(line.ts)} ` }),
    el('span', { className: `level ${level}`, text: level }),
    line.plugin ? el('span', { className: 'plugin', text: `${line.plugin} ` }) : null,
    el('span', { className: 'message', text: line.message ?? '' })));
  while (box.childElementCount > LOG_MAX) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// ---------------------------------------------------------------------------
// Event stream
// ---------------------------------------------------------------------------

let events = null;
let everConnected = false;

function setConnState(text, cls) {
  const node = $('conn-state');
  node.textContent = text;
  node.className = `conn-state ${cls}`;
}

function connectEvents() {
  events = new EventSource('/api/events');
  events.addEventListener('open', () => {
    setConnState('live', 'live');
    showAuthError(false);
    // After a drop, whatever happened meanwhile is read again.
    if (everConnected) {
      resync();
      loadPlugins();
    }
    everConnected = true;
  });
  events.addEventListener('error', () => {
    setConnState('disconnected', 'down');
    if (events.readyState === EventSource.CLOSED) {
      // The server answered something other than a stream (401/403…):
      // find out, and try again later.
      checkAccess();
      setTimeout(() => {
        if (events.readyState === EventSource.CLOSED) connectEvents();
      }, 3000);
    }
  });
  events.addEventListener('flow', (e) => queueFlow(JSON.parse(e.data)));
  events.addEventListener('cleared', () => onCleared());
  events.addEventListener('plugins', (e) => setPlugins(JSON.parse(e.data)));
  events.addEventListener('log', (e) => addLog(JSON.parse(e.data)));
  events.addEventListener('lagged', () => resync());
}

async function checkAccess() {
  try {
    await api('GET', '/api/intercept');
  } catch {
    // api() shows the banner on 401/403.
  }
}

// ---------------------------------------------------------------------------
// Pages and start-up
// ---------------------------------------------------------------------------

/** Call counts change with every flow and are not sent as events: the
 *  plugins page reads them again every 2 s while it is shown. */
let pluginsPoll = null;

function route() {
  const plugins = location.hash.startsWith('#/plugins');
  $('page-flows').hidden = plugins;
  $('page-plugins').hidden = !plugins;
  $('tab-flows').classList.toggle('active', !plugins);
  $('tab-plugins').classList.toggle('active', plugins);
  clearInterval(pluginsPoll);
  pluginsPoll = null;
  if (plugins) {
    loadPlugins();
    pluginsPoll = setInterval(loadPlugins, 2000);
  } else {
    scheduleRender();
  }
}

function wireToolbar() {
  const filter = $('filter-input');
  const filterLater = debounce(() => applyFilter(filter.value), 300);
  filter.addEventListener('input', filterLater);
  filter.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      filterLater.cancel();
      applyFilter(filter.value);
    } else if (e.key === 'Escape') {
      filter.value = '';
      filterLater.cancel();
      applyFilter('');
    }
  });
  const intercept = $('intercept-input');
  intercept.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') applyIntercept(intercept.value);
  });
  intercept.addEventListener('change', () => {
    if (intercept.value.trim() !== (intercept.dataset.applied ?? '')) applyIntercept(intercept.value);
  });
  $('resume-all').addEventListener('click', resumeAll);
  $('clear').addEventListener('click', clearFlows);
  $('save').addEventListener('click', () => download('/api/export?format=proxlet', 'proxlet.flows'));
  $('load').addEventListener('click', () => $('load-file').click());
  $('load-file').addEventListener('change', (e) => {
    const [file] = e.target.files;
    if (file) loadFile(file);
    e.target.value = '';
  });
  $('export-har').addEventListener('click', exportSelection);
  $('log-clear').addEventListener('click', () => clear($('plugin-log')));
}

function start() {
  renderListHead();
  wireToolbar();
  setupSplitter();
  const scroll = $('list-scroll');
  scroll.addEventListener('scroll', scheduleRender, { passive: true });
  scroll.addEventListener('click', onRowClick);
  scroll.addEventListener('keydown', onListKey);
  new ResizeObserver(scheduleRender).observe(scroll);
  window.addEventListener('hashchange', route);
  route();
  renderStatus();
  connectEvents();
  resync();
  loadIntercept();
  loadPlugins();
}

start();
