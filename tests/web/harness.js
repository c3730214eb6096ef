// The browser tests' harness: a recording loopback origin, the real proxlet
// binary with --web, curl through it, and Debian's Chromium driven by
// Playwright. Everything listens on 127.0.0.1 and is stopped by `cleanup`,
// failed tests included.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

/** Chromium from Debian's package; these flags keep it off the (closed)
 *  network: no background requests, no QUIC, no system proxy. */
export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server',
];

const cleanups = [];

/** Runs `fn` at cleanup (in reverse order of registration). */
export function onCleanup(fn) {
  cleanups.push(fn);
}

/** Stops everything started, ignoring what already stopped. */
export async function cleanup() {
  while (cleanups.length) {
    const fn = cleanups.pop();
    try {
      await fn();
    } catch {
      // Already gone.
    }
  }
}

// Children are killed even when the runner exits without cleanup.
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function sha256File(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Polls `check` (sync or async) until it returns a truthy value, which is
 *  returned; throws naming `what` after `timeout` ms. */
export async function waitFor(what, check, { timeout = 15000, interval = 25 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** The environment without proxy variables, so curl, proxlet and Chromium
 *  only use the proxy they are told to. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    const lower = key.toLowerCase();
    if (lower.endsWith('_proxy') || key.startsWith('PROXLET_') || key.startsWith('AWS_')) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

// ---------------------------------------------------------------------------
// The origin
// ---------------------------------------------------------------------------

/** The JSON document `/data.json` serves gzip-compressed. */
export const DATA_JSON = { name: 'proxlet', tags: ['proxy', 'wasm'], nested: { ok: true, count: 3 } };

/** A loopback HTTP origin that records every request (method, url, headers,
 *  body) and answers:
 *  - `/data.json`: DATA_JSON, gzip-compressed, `application/json`
 *  - `/replaced`: `original text` (the replace plugin's rule target)
 *  - anything else: `hello METHOD URL` as text/plain. */
export async function startOrigin() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const path = req.url.split('?')[0];
      if (path === '/data.json') {
        const body = gzipSync(JSON.stringify(DATA_JSON));
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length });
        res.end(body);
      } else if (path === '/replaced') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('original text');
      } else {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`hello ${req.method} ${req.url}`);
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  onCleanup(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(resolve);
  }));
  return {
    port,
    requests,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    /** Requests received for `path` (without query). */
    received: (path) => requests.filter((r) => r.url.split('?')[0] === path),
  };
}

// ---------------------------------------------------------------------------
// proxlet
// ---------------------------------------------------------------------------

/** Starts `$PROXLET_BIN run --listen 127.0.0.1:0 --web 127.0.0.1:0` with a
 *  fresh home and `args`; resolves once both start-up lines are printed. */
export async function startProxlet(args = [], { timeout = 120000 } = {}) {
  const binary = process.env.PROXLET_BIN;
  if (!binary) throw new Error('PROXLET_BIN names the proxlet binary to test (cargo test -p proxlet-tests --test web_ui sets it)');
  const home = tempDir('proxlet-web-home-');
  const child = spawn(binary, ['run', '--listen', '127.0.0.1:0', '--web', '127.0.0.1:0', '--home', home, ...args], {
    env: cleanEnv({ RUST_LOG: 'info' }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  let log = '';
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = signal ?? code;
    children.delete(child);
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    log += text;
  });
  onCleanup(() => new Promise((resolve) => {
    if (exited !== null) return resolve();
    child.once('exit', resolve);
    child.kill('SIGKILL');
  }));
  const started = await waitFor('proxlet to print its listening and web lines', () => {
    if (exited !== null) throw new Error(`proxlet exited (${exited}):\n${log}`);
    const proxy = log.match(/proxlet listening on http:\/\/(\S+)/);
    const web = log.match(/proxlet web on (http:\/\/(\S+?)\/\?token=([0-9A-Za-z_-]+))/);
    return proxy && web ? { proxy: `http://${proxy[1]}`, url: web[1], origin: `http://${web[2]}`, token: web[3] } : null;
  }, { timeout, interval: 50 }).catch((e) => {
    throw new Error(`${e.message}\n--- proxlet log ---\n${log}`);
  });
  return {
    ...started,
    home,
    log: () => log,
    /** A call to the web API with the token header, from node. */
    api: async (method, path, body, headers = {}) => {
      const init = { method, headers: { 'x-proxlet-token': started.token, ...headers } };
      if (body !== undefined) {
        init.body = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
        if (!init.headers['content-type']) init.headers['content-type'] = 'application/json';
      }
      const response = await fetch(`${started.origin}${path}`, init);
      const text = await response.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // Not JSON.
      }
      return { status: response.status, json, text };
    },
  };
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/** curl through `proxy`: resolves with its exit code, the status and body
 *  (never rejects, so a killed flow's error can be checked). */
export function curl(proxy, url, { method, headers = {}, data, maxTime = 30 } = {}) {
  const args = ['-sS', '-x', proxy, '--max-time', String(maxTime), '-o', '-', '-w', '\n%{http_code}'];
  if (method) args.push('-X', method);
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  if (data !== undefined) args.push('--data-binary', data);
  args.push(url);
  return new Promise((resolve) => {
    const child = spawn('curl', args, { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (t) => { out += t; });
    child.stderr.on('data', (t) => { err += t; });
    child.on('close', (code) => {
      children.delete(child);
      const cut = out.lastIndexOf('\n');
      resolve({ code, status: Number(out.slice(cut + 1)), body: out.slice(0, Math.max(cut, 0)), stderr: err });
    });
  });
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

export async function launchBrowser() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  onCleanup(() => browser.close());
  return browser;
}

/** A page of a fresh context, 1400×900, with console errors collected. */
export async function openPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // Failed requests (a bad filter's 400) are the page's business, not errors.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text()}`);
  });
  return { context, page, errors };
}
