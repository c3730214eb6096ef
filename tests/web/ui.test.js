// The web UI end to end: one proxlet with --web, the built-in `replace`
// plugin and a plugin file on disk; a loopback origin; curl through the
// proxy; Chromium on the printed URL.

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  DATA_JSON, cleanup, curl, launchBrowser, openPage, sha256File, startOrigin, startProxlet, tempDir, waitFor,
} from './harness.js';

const PLUGIN_A = process.env.PROXLET_TEST_PLUGIN_A;
const PLUGIN_B = process.env.PROXLET_TEST_PLUGIN_B;

let origin;
let proxlet;
let page;
let pageErrors;
let pluginPath;
let pluginDir;

before(async () => {
  assert.ok(PLUGIN_A && PLUGIN_B, 'PROXLET_TEST_PLUGIN_A and PROXLET_TEST_PLUGIN_B name two plugin files (.wasm)');
  origin = await startOrigin();
  const dir = tempDir('proxlet-web-ui-');
  pluginDir = join(dir, 'plugins');
  pluginPath = join(pluginDir, 'hello.wasm');
  mkdirSync(pluginDir);
  copyFileSync(PLUGIN_A, pluginPath);
  const config = join(dir, 'proxlet.toml');
  writeFileSync(config, [
    '[[plugin]]',
    'name = "replace"',
    '[[plugin.config.rules]]',
    'path = "/replaced"',
    'replace = [{ pattern = "original", with = "REPLACED" }]',
    '',
    '[[plugin]]',
    'name = "hello"',
    `path = ${JSON.stringify(pluginPath)}`,
    '',
  ].join('\n'));
  proxlet = await startProxlet(['--config', config, '--cache-dir', join(dir, 'cache'), '--flows-max', '10000']);
  const browser = await launchBrowser();
  ({ page, errors: pageErrors } = await openPage(browser));
});

after(async () => {
  await cleanup();
});

// ---------------------------------------------------------------------------
// Page helpers
// ---------------------------------------------------------------------------

const row = (path) => page.locator('[data-testid="flow-row"]', { has: page.locator('.path', { hasText: new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) });

async function showFlows() {
  await page.click('[data-testid="tab-flows"]');
  await page.locator('[data-testid="flow-list"]').waitFor({ state: 'visible' });
}

async function setFilter(expr) {
  await page.fill('[data-testid="filter-input"]', expr);
  await page.press('[data-testid="filter-input"]', 'Enter');
}

async function setIntercept(expr) {
  await page.fill('[data-testid="intercept-input"]', expr);
  await page.press('[data-testid="intercept-input"]', 'Enter');
  await waitFor(`the intercept filter ${JSON.stringify(expr)} to be applied`, async () => {
    const { json } = await proxlet.api('GET', '/api/intercept');
    return json && json.filter === expr;
  });
}

async function shownCount() {
  return Number(await page.getAttribute('[data-testid="flow-count"]', 'data-shown'));
}

/** Opens the detail of the (single) row for `path`. */
async function openDetail(path) {
  await row(path).first().click();
  await page.locator('[data-testid="detail"]').waitFor({ state: 'visible' });
  await waitFor(`the detail of ${path}`, async () => (await page.textContent('[data-testid="detail-url"]'))?.endsWith(path));
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

test('the printed URL opens the page and flows from a curl loop appear live', async () => {
  await page.goto(proxlet.url);
  // The token went into a cookie; the address bar no longer shows it.
  assert.equal(page.url(), `${proxlet.origin}/`);
  await waitFor('the event stream to connect', async () => (await page.textContent('[data-testid="conn-state"]')) === 'live');
  for (let i = 0; i < 5; i++) {
    const path = `/live/${i}`;
    const result = await curl(proxlet.proxy, origin.url(path));
    assert.equal(result.status, 200, result.stderr);
    // Each flow shows up while the loop goes on, without a reload.
    await row(path).waitFor({ state: 'visible', timeout: 10000 });
  }
  assert.equal(await shownCount(), 5);
  // Newest first.
  const paths = await page.locator('[data-testid="flow-row"] .path').allTextContents();
  assert.deepEqual(paths.slice(0, 5), ['/live/4', '/live/3', '/live/2', '/live/1', '/live/0']);
});

test('the filter narrows the list, keeps up with new flows, and shows where a bad expression fails', async () => {
  await showFlows();
  await curl(proxlet.proxy, origin.url('/other/a'));
  await row('/other/a').waitFor();
  await setFilter('~u /live/[13]');
  await waitFor('the filter to leave two flows', async () => (await shownCount()) === 2);
  assert.deepEqual(await page.locator('[data-testid="flow-row"] .path').allTextContents(), ['/live/3', '/live/1']);

  // New flows while a filter is set: only matching ones appear. The
  // non-matching one is sent first, so the list has seen it by the time the
  // matching one shows.
  await setFilter('~u /live/');
  await waitFor('the filter to match the five', async () => (await shownCount()) === 5);
  await curl(proxlet.proxy, origin.url('/other/b'));
  await curl(proxlet.proxy, origin.url('/live/extra'));
  await row('/live/extra').waitFor({ timeout: 10000 });
  assert.equal(await row('/other/b').count(), 0);
  assert.equal(await shownCount(), 6);

  // A bad expression: the server's error, a caret at its position, and the
  // list stays as it was.
  const bad = '~u live & ~zz x';
  const expected = await proxlet.api('GET', `/api/flows?filter=${encodeURIComponent(bad)}`);
  assert.equal(expected.status, 400);
  await setFilter(bad);
  const error = page.locator('[data-testid="filter-error"]');
  await error.waitFor({ state: 'visible' });
  assert.match(await error.textContent(), new RegExp(expected.json.error.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  const caret = page.locator('[data-testid="filter-error-caret"]');
  assert.equal(Number(await caret.getAttribute('data-position')), expected.json.position);
  assert.equal(await caret.textContent(), `${' '.repeat(expected.json.position)}^`);
  assert.equal(await shownCount(), 6);

  await setFilter('');
  await error.waitFor({ state: 'hidden' });
  await waitFor('every flow to be listed again', async () => (await shownCount()) === 8);
});

test('the detail shows a gzip JSON response body pretty-printed', async () => {
  await showFlows();
  const result = await curl(proxlet.proxy, origin.url('/data.json'));
  assert.equal(result.status, 200);
  await row('/data.json').waitFor();
  await openDetail('/data.json');
  await page.click('[data-testid="detail-tab-response"]');
  const body = page.locator('[data-testid="detail-response"] [data-testid="body-view"]');
  await waitFor('the pretty-printed JSON', async () => (await body.textContent()) === JSON.stringify(DATA_JSON, null, 2));
  assert.match(await page.textContent('[data-testid="detail-response"]'), /gzip-encoded, shown decoded/);
  // Heads, timing and plugin sections are there too.
  assert.match(await page.textContent('[data-testid="response-headers"]'), /content-encoding\s*gzip/i);
  await page.click('[data-testid="detail-tab-timing"]');
  await page.locator('[data-testid="timing-bar"] .timing-seg').first().waitFor();
  await page.click('[data-testid="detail-tab-plugins"]');
  await page.locator('[data-testid="plugin-steps"]').waitFor();
  assert.match(await page.textContent('[data-testid="plugin-steps"]'), /replace/);
  await page.click('[data-testid="detail-tab-request"]');
});

test('an intercepted request edited in the page reaches the origin with the new header and body', async () => {
  await showFlows();
  await setIntercept('~u /intercept/edit & ~q');
  const sent = curl(proxlet.proxy, origin.url('/intercept/edit'), { headers: { 'X-Probe': 'before' }, data: 'body before' });
  const paused = row('/intercept/edit');
  await paused.waitFor({ timeout: 10000 });
  await waitFor('the flow to show as paused', async () => (await paused.getAttribute('data-intercepted')) === 'request');
  assert.match(await paused.getAttribute('class'), /\bintercepted\b/);
  assert.equal(origin.received('/intercept/edit').length, 0);

  await openDetail('/intercept/edit');
  await page.locator('[data-testid="request-editor"]').waitFor();
  const headers = page.locator('[data-testid="edit-headers"]');
  const text = await headers.inputValue();
  assert.match(text, /^X-Probe: before$/mi);
  await headers.fill(text.replace(/^X-Probe: before$/mi, 'X-Probe: after'));
  const body = page.locator('[data-testid="edit-body"]');
  await waitFor('the body to load into the editor', async () => (await body.inputValue()) === 'body before');
  await body.fill('body after, longer than before');
  await page.click('[data-testid="resume"]');

  const result = await sent;
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.status, 200);
  const [received] = origin.received('/intercept/edit');
  assert.equal(received.headers['x-probe'], 'after');
  assert.equal(received.body, 'body after, longer than before');
  await waitFor('the row to be no longer paused', async () => (await paused.getAttribute('data-intercepted')) === null);
  await setIntercept('');
});

test('an intercepted response edited in the page reaches curl with the new status and body', async () => {
  await showFlows();
  await setIntercept('~u /intercept/response & ~s');
  const sent = curl(proxlet.proxy, origin.url('/intercept/response'));
  const paused = row('/intercept/response');
  await waitFor('the flow to pause before the client', async () => (await paused.count()) === 1 && (await paused.getAttribute('data-intercepted')) === 'response', { timeout: 10000 });
  await openDetail('/intercept/response');
  await page.locator('[data-testid="response-editor"]').waitFor();
  await page.fill('[data-testid="edit-status"]', '203');
  const body = page.locator('[data-testid="edit-body"]');
  await waitFor('the body to load into the editor', async () => (await body.inputValue()) === 'hello GET /intercept/response');
  await body.fill('edited in the page');
  await page.click('[data-testid="resume"]');
  const result = await sent;
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.status, 203);
  assert.equal(result.body, 'edited in the page');
  await setIntercept('');
});

test('killing an intercepted request gives curl an error and the origin nothing', async () => {
  await showFlows();
  await setIntercept('~u /intercept/kill & ~q');
  const sent = curl(proxlet.proxy, origin.url('/intercept/kill'));
  const paused = row('/intercept/kill');
  await waitFor('the flow to pause', async () => (await paused.count()) === 1 && (await paused.getAttribute('data-intercepted')) === 'request', { timeout: 10000 });
  await openDetail('/intercept/kill');
  await page.click('[data-testid="kill"]');
  const result = await sent;
  assert.notEqual(result.code, 0, `curl should fail, got status ${result.status}`);
  assert.equal(origin.received('/intercept/kill').length, 0);
  await setIntercept('');
});

test('resume all lets every paused flow go on', async () => {
  await showFlows();
  await setIntercept('~u /intercept/all & ~q');
  const sent = [1, 2].map((n) => curl(proxlet.proxy, origin.url(`/intercept/all/${n}`)));
  await waitFor('both flows to pause', async () => (await page.textContent('[data-testid="paused-count"]')) === '2 paused', { timeout: 10000 });
  await page.click('[data-testid="resume-all"]');
  for (const result of await Promise.all(sent)) assert.equal(result.status, 200, result.stderr);
  await setIntercept('');
});

test('replay sends a flow again and lists the new flow', async () => {
  await showFlows();
  await curl(proxlet.proxy, origin.url('/replay/me'), { headers: { 'X-Replay': 'yes' } });
  await row('/replay/me').waitFor();
  assert.equal(origin.received('/replay/me').length, 1);
  await openDetail('/replay/me');
  const firstId = await page.getAttribute('[data-testid="detail"]', 'data-id');
  await page.click('[data-testid="replay"]');
  await waitFor('the origin to get the request again', () => origin.received('/replay/me').length === 2);
  assert.equal(origin.received('/replay/me')[1].headers['x-replay'], 'yes');
  await waitFor('two rows for the path', async () => (await row('/replay/me').count()) === 2);
  // The new flow is the one shown.
  await waitFor('the detail to show the new flow', async () => {
    const id = await page.getAttribute('[data-testid="detail"]', 'data-id');
    return id && id !== firstId;
  });
});

test('duplicate and edit sends the edited copy', async () => {
  await showFlows();
  await curl(proxlet.proxy, origin.url('/dup/original'));
  await row('/dup/original').waitFor();
  await openDetail('/dup/original');
  await page.click('[data-testid="duplicate"]');
  await page.locator('[data-testid="duplicate-editor"]').waitFor();
  await page.fill('[data-testid="dup-method"]', 'PUT');
  const url = page.locator('[data-testid="dup-url"]');
  await url.fill((await url.inputValue()).replace('/dup/original', '/dup/edited'));
  const headers = page.locator('[data-testid="dup-headers"]');
  await headers.fill(`${await headers.inputValue()}\nX-Duplicate: edited`);
  await page.fill('[data-testid="dup-body"]', 'a body from the editor');
  await page.click('[data-testid="dup-send"]');
  await waitFor('the origin to get the edited copy', () => origin.received('/dup/edited').length === 1);
  const [received] = origin.received('/dup/edited');
  assert.equal(received.method, 'PUT');
  assert.equal(received.headers['x-duplicate'], 'edited');
  assert.equal(received.body, 'a body from the editor');
  await row('/dup/edited').waitFor();
});

test('a column header sorts the list, twice reverses it, a third time goes back to newest first', async () => {
  await showFlows();
  await setFilter('~u /live/');
  await waitFor('the live flows', async () => (await shownCount()) === 6);
  const paths = () => page.locator('[data-testid="flow-row"] .path').allTextContents();
  await page.click('[data-testid="sort-path"]');
  assert.deepEqual(await paths(), ['/live/0', '/live/1', '/live/2', '/live/3', '/live/4', '/live/extra']);
  await page.click('[data-testid="sort-path"]');
  assert.deepEqual(await paths(), ['/live/extra', '/live/4', '/live/3', '/live/2', '/live/1', '/live/0']);
  await page.click('[data-testid="sort-path"]');
  assert.deepEqual(await paths(), ['/live/extra', '/live/4', '/live/3', '/live/2', '/live/1', '/live/0']);
  await page.click('[data-testid="sort-id"]');
  assert.deepEqual(await paths(), ['/live/0', '/live/1', '/live/2', '/live/3', '/live/4', '/live/extra']);
  await page.click('[data-testid="sort-id"]');
  await page.click('[data-testid="sort-id"]');
  await setFilter('');
});

test('mark, comment, export HAR of a selection, save, clear and load', async () => {
  await showFlows();
  await setFilter('~u /live/[01]$');
  await waitFor('two flows', async () => (await shownCount()) === 2);
  // Mark /live/1 from the list's star, comment /live/0 in its detail.
  await row('/live/1').locator('.mark').click();
  await waitFor('the star', async () => /\bmarked\b/.test(await row('/live/1').getAttribute('class')));
  await openDetail('/live/0');
  await page.fill('[data-testid="comment-input"]', 'looked at this');
  await page.press('[data-testid="comment-input"]', 'Enter');
  await waitFor('the comment to be stored', async () => {
    const { json } = await proxlet.api('GET', '/api/flows?filter=~comment%20looked');
    return json.flows.length === 1;
  });

  // Both rows selected (click, ctrl-click): the HAR holds those two.
  await row('/live/0').click();
  await row('/live/1').click({ modifiers: ['Control'] });
  await waitFor('two selected', async () => (await page.textContent('[data-testid="selection-count"]')) === '2 selected');
  const [har] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-har"]')]);
  const entries = JSON.parse(readFileSync(await har.path(), 'utf8')).log.entries;
  assert.deepEqual(entries.map((e) => new URL(e.request.url).pathname).sort(), ['/live/0', '/live/1']);
  assert.equal(entries.find((e) => e.request.url.endsWith('/live/0')).comment, 'looked at this');

  // Save everything, clear, load it back.
  await setFilter('');
  const before = await shownCount();
  const [saved] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="save"]')]);
  const savedPath = join(pluginDir, 'saved.flows');
  await saved.saveAs(savedPath);
  await page.click('[data-testid="clear"]');
  await waitFor('an empty list', async () => (await shownCount()) === 0);
  await page.setInputFiles('[data-testid="load-file"]', savedPath);
  await waitFor('the saved flows back in the list', async () => (await shownCount()) === before);
  await row('/live/1').waitFor();
  assert.match(await row('/live/1').getAttribute('class'), /\bmarked\b/);
});

test('a WebSocket flow lists its messages: direction, kind, size, marks, and one shown whole', async () => {
  await showFlows();
  await setFilter('');
  // Chrome's HAR export of a WebSocket, with proxlet's extras.
  const har = join(pluginDir, 'websocket.har');
  writeFileSync(har, JSON.stringify({ log: { version: '1.2', creator: { name: 'test', version: '1' }, entries: [{
    startedDateTime: '2023-11-14T22:13:20.000Z',
    request: { method: 'GET', url: 'https://ws.example/chat', httpVersion: 'HTTP/1.1', headers: [{ name: 'upgrade', value: 'websocket' }] },
    response: { status: 101, httpVersion: 'HTTP/1.1', headers: [{ name: 'upgrade', value: 'websocket' }], content: { size: 0 } },
    timings: { send: 0, wait: 1, receive: 0 },
    _webSocketMessages: [
      { type: 'send', time: 1700000000.5, opcode: 1, data: 'hello <b>server</b>' },
      { type: 'receive', time: 1700000000.75, opcode: 2, data: 'AP+A', _dropped: true },
      { type: 'receive', time: 1700000000.8, opcode: 1, data: 'cut', _size: 1000, _truncated: true, _injected: true },
    ],
    _websocket: { closed_by_client: false, close_code: 1001, close_reason: 'going away', end: 1700000002.25, messages_omitted: 4 },
  }] } }));
  await page.setInputFiles('[data-testid="load-file"]', har);
  await row('/chat').waitFor();
  assert.equal(await row('/chat').locator('.type').textContent(), 'websocket (7)');
  assert.match(await row('/chat').getAttribute('class'), /\bwebsocket\b/);

  await openDetail('/chat');
  await page.click('[data-testid="detail-tab-websocket"]');
  const messages = page.locator('[data-testid="ws-message"]');
  await waitFor('three messages', async () => (await messages.count()) === 3);
  const facts = await page.textContent('[data-testid="websocket-facts"]');
  assert.match(facts, /closed by the server \(1001 going away\)/);
  assert.match(facts, /4 past the record's bound/);
  const shown = await messages.evaluateAll((rows) => rows.map((r) => ({
    direction: r.dataset.direction,
    kind: r.dataset.kind,
    arrow: r.querySelector('.ws-dir').textContent,
    preview: r.querySelector('[data-testid="ws-preview"]').textContent,
    marks: r.querySelector('[data-testid="ws-marks"]').textContent,
  })));
  assert.deepEqual(shown, [
    // Text from a peer is shown as text, never as markup.
    { direction: 'to-server', kind: 'text', arrow: '→', preview: 'hello <b>server</b>', marks: '' },
    { direction: 'to-client', kind: 'binary', arrow: '←', preview: '00 ff 80', marks: 'dropped' },
    { direction: 'to-client', kind: 'text', arrow: '←', preview: 'cut', marks: 'first 3 B kept · injected' },
  ]);
  assert.equal(await page.locator('[data-testid="ws-messages"] b').count(), 0);
  // A binary message shown whole is a hex dump.
  await messages.nth(1).click();
  await waitFor('the hex dump', async () => /^00000000 {2}00 ff 80/.test((await page.textContent('[data-testid="ws-whole"]')) ?? ''));
  // The Timing tab has the time the WebSocket was open.
  await page.click('[data-testid="detail-tab-timing"]');
  assert.match(await page.textContent('[data-testid="timing-moments"]'), /WebSocket ended/);
});

test('disabling the replace plugin in the page changes the next response', async () => {
  const before = await curl(proxlet.proxy, origin.url('/replaced'));
  assert.equal(before.body, 'REPLACED text');
  await page.click('[data-testid="tab-plugins"]');
  const plugin = page.locator('[data-testid="plugin-row"][data-name="replace"]');
  await plugin.waitFor();
  assert.equal(await plugin.getAttribute('data-enabled'), 'true');
  await plugin.locator('[data-testid="plugin-toggle"]').click();
  await waitFor('the plugin to show as disabled', async () => (await plugin.getAttribute('data-enabled')) === 'false');
  const afterDisable = await curl(proxlet.proxy, origin.url('/replaced'));
  assert.equal(afterDisable.body, 'original text');

  await plugin.locator('[data-testid="plugin-toggle"]').click();
  await waitFor('the plugin to show as enabled', async () => (await plugin.getAttribute('data-enabled')) === 'true');
  const again = await curl(proxlet.proxy, origin.url('/replaced'));
  assert.equal(again.body, 'REPLACED text');
});

test('a plugin file replaced on disk shows its new sha256 in the page without a reload', async () => {
  const [shaA, shaB] = [sha256File(PLUGIN_A), sha256File(PLUGIN_B)];
  assert.notEqual(shaA, shaB, 'the two test plugins must differ');
  await page.click('[data-testid="tab-plugins"]');
  const sha = page.locator('[data-testid="plugin-row"][data-name="hello"] [data-testid="plugin-sha"]');
  await waitFor('the first version\'s sha', async () => (await sha.textContent()) === shaA.slice(0, 12));
  // A page reload would drop this.
  await page.evaluate(() => { window.stillTheSamePage = true; });

  // Replaced atomically, as a build tool saves: write beside it, rename over.
  const temp = join(pluginDir, '.hello.wasm.tmp');
  copyFileSync(PLUGIN_B, temp);
  renameSync(temp, pluginPath);
  await waitFor('the new version\'s sha', async () => (await sha.textContent()) === shaB.slice(0, 12), { timeout: 90000, interval: 100 });
  assert.equal(await sha.getAttribute('data-sha'), shaB);
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true);
  // The reload is in the plugin's history.
  await page.locator('[data-testid="plugin-row"][data-name="hello"] .plugin-name').click();
  await waitFor('the reload in the history', async () => (await page.textContent('[data-testid="plugin-history"]')).includes(shaB.slice(0, 12)));
});

test('the page has no script errors and the API refuses requests without the token', async () => {
  assert.deepEqual(pageErrors, []);
  const response = await fetch(`${proxlet.origin}/api/flows`);
  assert.equal(response.status, 401);
  const wrong = await fetch(`${proxlet.origin}/api/flows`, { headers: { 'x-proxlet-token': 'not-the-token' } });
  assert.equal(wrong.status, 403);
});

test('a page that lost its access cookie says to open the printed URL', async () => {
  await showFlows();
  const banner = page.locator('[data-testid="auth-error"]');
  assert.equal(await banner.isVisible(), false);
  await page.context().clearCookies();
  await setFilter('~u /live/');
  await banner.waitFor({ state: 'visible' });
  assert.match(await banner.textContent(), /proxlet web on http:\/\/ADDR\/\?token=TOKEN/);
});
