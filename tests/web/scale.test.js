// 100 000 flows in the store: the list renders, scrolls and filters in the
// browser. The times are measured in the page and printed, not asserted: a
// loaded machine must not fail the run (a second each is the target).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { cleanup, launchBrowser, openPage, startProxlet } from './harness.js';

const FLOWS = 100000;
const HOSTS = 100;
const host = (i) => `host-${String(i % HOSTS).padStart(3, '0')}.test`;

/** A HAR 1.2 log of `count` small GET flows spread over HOSTS hosts. */
function harOf(count) {
  const started = Date.parse('2026-01-01T00:00:00Z');
  const entries = [];
  for (let i = 0; i < count; i++) {
    entries.push({
      startedDateTime: new Date(started + i * 10).toISOString(),
      time: 5,
      request: {
        method: i % 10 === 0 ? 'POST' : 'GET',
        url: `http://${host(i)}/item/${i}?page=${i % 7}`,
        httpVersion: 'HTTP/1.1',
        cookies: [],
        headers: [{ name: 'host', value: host(i) }],
        queryString: [],
        headersSize: -1,
        bodySize: 0,
      },
      response: {
        status: i % 50 === 0 ? 404 : 200,
        statusText: '',
        httpVersion: 'HTTP/1.1',
        cookies: [],
        headers: [{ name: 'content-type', value: 'text/plain' }],
        content: { size: 2, mimeType: 'text/plain', text: 'ok' },
        redirectURL: '',
        headersSize: -1,
        bodySize: 2,
      },
      cache: {},
      timings: { send: 1, wait: 3, receive: 1 },
    });
  }
  return JSON.stringify({ log: { version: '1.2', creator: { name: 'proxlet-web-tests', version: '1' }, entries } });
}

let proxlet;
let page;

before(async () => {
  proxlet = await startProxlet(['--plugin', 'none', '--flows-max', `${FLOWS * 2}`]);
  const loaded = await proxlet.api('POST', '/api/load', harOf(FLOWS), { 'content-type': 'application/octet-stream' });
  assert.equal(loaded.status, 200, loaded.text);
  assert.equal(loaded.json.loaded, FLOWS);
  const browser = await launchBrowser();
  ({ page } = await openPage(browser));
});

after(async () => {
  await cleanup();
});

/** Waits, checking every frame in the page, until the list says it shows
 *  `count` flows and has rows on screen; returns performance.now() then. */
function rowsShown(count, hostName) {
  return page.waitForFunction(({ count, hostName }) => {
    const status = document.querySelector('[data-testid="flow-count"]');
    const rows = document.querySelectorAll('[data-testid="flow-row"]');
    if (!status || status.dataset.shown !== String(count) || rows.length === 0) return false;
    if (hostName && ![...rows].every((r) => r.querySelector('.host').textContent === hostName)) return false;
    return performance.now();
  }, { count, hostName }, { polling: 'raf', timeout: 60000 }).then((handle) => handle.jsonValue());
}

test('100 000 flows render, scroll and filter (times printed)', async () => {
  // performance.now() counts from the start of the navigation (the token
  // redirect included) to the frame with rows on screen.
  await page.goto(proxlet.url);
  const renderMs = await rowsShown(FLOWS);
  const rows = await page.locator('[data-testid="flow-row"]').count();
  assert.ok(rows > 10 && rows < 200, `only the visible rows are in the page (${rows})`);
  // Newest first: the last flow loaded is on top.
  const topPath = await page.locator('[data-testid="flow-row"] .path').first().textContent();
  assert.match(topPath, new RegExp(`^/item/${FLOWS - 1}\\?`));

  // Scrolling to the middle and the end paints the rows there in a frame.
  const scrollMs = await page.evaluate(async () => {
    const scroll = document.querySelector('[data-testid="flow-list"]');
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    const start = performance.now();
    for (const at of [0.25, 0.5, 0.75, 1]) {
      scroll.scrollTop = (scroll.scrollHeight - scroll.clientHeight) * at;
      await frame();
      await frame();
      const box = scroll.getBoundingClientRect();
      const visible = [...document.querySelectorAll('[data-testid="flow-row"]')].filter((r) => {
        const rect = r.getBoundingClientRect();
        return rect.bottom > box.top && rect.top < box.bottom;
      }).length >= Math.floor(box.height / 22) - 1;
      if (!visible) throw new Error(`no rows painted at ${at * 100}%`);
    }
    scroll.scrollTop = 0;
    return performance.now() - start;
  });
  const bottomRows = await page.locator('[data-testid="flow-row"]').count();
  assert.ok(bottomRows < 200);

  // Filter: from the Enter key to the matching rows on screen, the server
  // evaluating the expression over every flow included.
  const filter = '~d host-007';
  await page.fill('[data-testid="filter-input"]', filter);
  await page.evaluate(() => {
    window.filterStarted = performance.now();
    document.querySelector('[data-testid="filter-input"]').dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
  });
  const filteredAt = await rowsShown(FLOWS / HOSTS, host(7));
  const filterMs = filteredAt - await page.evaluate(() => window.filterStarted);

  // How much of it was the server's: request sent to answer read.
  const server = await page.evaluate(() => {
    const took = (match) => {
      const entry = performance.getEntriesByType('resource').filter((e) => match(new URL(e.name))).pop();
      return entry ? Math.round(entry.responseEnd - entry.requestStart) : null;
    };
    return {
      list: took((u) => u.pathname === '/api/flows' && !u.searchParams.get('filter')),
      filter: took((u) => u.pathname === '/api/flows' && u.searchParams.get('filter')),
    };
  });
  const detail = `the API answered the list in ${server.list} ms and the filter in ${server.filter} ms`;
  console.log(`web: ${FLOWS} flows rendered in ${Math.round(renderMs)} ms, filtered in ${Math.round(filterMs)} ms (${detail}; 4 scroll jumps painted in ${Math.round(scrollMs)} ms)`);

  // Clearing the filter brings them all back.
  await page.fill('[data-testid="filter-input"]', '');
  await page.press('[data-testid="filter-input"]', 'Enter');
  await rowsShown(FLOWS);
});
