// The dashboard in a real browser: headless Chromium (Debian's package) driven by playwright-core against
// running gateways that tests/browser.rs starts and names in the environment:
//   CAMGATE_URL        a gateway without tokens whose boot camera `demo` plays demo://
//   CAMGATE_TOKEN_URL  a gateway that needs CAMGATE_TOKEN, with no cameras
//   CAMGATE_SCREENSHOT where to save a picture of the page while the demo camera plays
//   CHROMIUM           the browser (default /usr/bin/chromium)
// Run it through `cargo test --test browser`; on its own (`npm test`) it skips without those variables.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const OPEN = process.env.CAMGATE_URL;
const LOCKED = process.env.CAMGATE_TOKEN_URL;
const TOKEN = process.env.CAMGATE_TOKEN;
const skip = !OPEN || !LOCKED ? 'no gateway to test: run through `cargo test --test browser`' : false;

let browser;

before(async () => {
  if (skip) return;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
});

/** A fresh page (own storage) whose script errors fail the test. */
async function open(url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  // Refused requests (the 401 before a token is given) are logged by the browser itself; not script errors.
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) errors.push(message.text());
  });
  await page.goto(url);
  return { page, context, errors };
}

const row = (page, id) => page.locator(`#cameras tbody tr[data-id="${id}"]`);

async function waitForState(page, id, state, timeout = 30_000) {
  await row(page, id).locator('td.state').filter({ hasText: new RegExp(`^${state}$`) }).waitFor({ timeout });
}

/** Waits until the video has played a while, and answers how far its clock moved in two seconds. */
async function playedSeconds(page) {
  await page.waitForFunction(() => document.getElementById('video').currentTime > 0.5, null, { timeout: 30_000 });
  const before = await page.evaluate(() => document.getElementById('video').currentTime);
  await page.waitForTimeout(2000);
  const after = await page.evaluate(() => document.getElementById('video').currentTime);
  return after - before;
}

/** The standard deviation of the luma of the video's current frame: about 0 for a blank (black) picture. */
async function frameSpread(page) {
  return page.evaluate(() => {
    const video = document.getElementById('video');
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    let sum = 0;
    let squares = 0;
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += y;
      squares += y * y;
    }
    const mean = sum / n;
    return { width: canvas.width, height: canvas.height, spread: Math.sqrt(squares / n - mean * mean) };
  });
}

test('the demo camera plays on the page, Stop stops it and Start starts it again', { skip, timeout: 120_000 }, async () => {
  const { page, context, errors } = await open(OPEN);
  assert.equal(await page.title(), 'camgate');
  await page.locator('#connection[data-state="live"]').waitFor();
  assert.equal(await page.locator('#token-form').isVisible(), false, 'no token asked for where none is needed');
  await waitForState(page, 'demo', 'running');
  await row(page, 'demo').getByRole('button', { name: 'Watch' }).click();

  const moved = await playedSeconds(page);
  assert.ok(moved > 1, `the video's clock advances while playing: ${moved.toFixed(2)} s in 2 s`);
  const frame = await frameSpread(page);
  assert.ok(frame.width >= 320 && frame.height >= 180, `a real picture: ${frame.width}x${frame.height}`);
  assert.ok(frame.spread > 20, `the frame is not blank: luma spread ${frame.spread.toFixed(1)}`);

  // Rates arrive through the event stream, about once a second.
  await page.waitForFunction(() => {
    const fps = document.querySelector('#cameras tr[data-id="demo"] td:nth-child(3)');
    return fps && Number(fps.textContent) > 5;
  }, null, { timeout: 15_000 });
  await page.waitForFunction(() => {
    const viewers = document.querySelector('#cameras tr[data-id="demo"] td:nth-child(5)');
    return viewers && Number(viewers.textContent) >= 1;
  }, null, { timeout: 15_000 });
  if (process.env.CAMGATE_SCREENSHOT) await page.screenshot({ path: process.env.CAMGATE_SCREENSHOT });

  await row(page, 'demo').getByRole('button', { name: 'Stop' }).click();
  await waitForState(page, 'demo', 'stopped');
  const gone = await fetch(`${OPEN}/api/v1/cameras/demo`);
  assert.equal(gone.status, 404, 'the API no longer knows the stopped camera');
  // Start again from the page: the row remembers the camera's input.
  await row(page, 'demo').getByRole('button', { name: 'Start' }).click();
  await waitForState(page, 'demo', 'running');
  assert.equal((await fetch(`${OPEN}/api/v1/cameras/demo`)).status, 200, 'started again');
  assert.deepEqual(errors, []);
  await context.close();
});

test('with tokens: the page asks for one, then adds, plays and stops cameras', { skip, timeout: 120_000 }, async () => {
  const { page, context, errors } = await open(LOCKED);
  await page.locator('#token-form').waitFor({ state: 'visible' });
  await page.locator('#connection[data-state="locked"]').waitFor();
  await page.fill('#token', TOKEN);
  await page.click('#token-form button[type="submit"]');
  await page.locator('#connection[data-state="live"]').waitFor();

  // Starts answered late: the network holds each of these PUTs until the test lets it through, so the next
  // camera can be typed and added while one is still starting, in a fixed order. The server answers them all.
  const held = new Map(['door', 'hall'].map((id) => {
    let release;
    const gate = new Promise((resolve) => { release = resolve; });
    return [id, { gate, release }];
  }));
  await page.route(/\/api\/v1\/cameras\/(door|hall)$/, async (route) => {
    const id = new URL(route.request().url()).pathname.split('/').pop();
    if (route.request().method() === 'PUT') await held.get(id).gate;
    await route.continue();
  });
  const add = async (id, input) => {
    await page.fill('#add-form input[name="id"]', id);
    await page.fill('#add-form input[name="input"]', input);
  };
  const submit = () => page.click('#add-form button[type="submit"]');

  // A camera with a password that cannot be reached: it must show, reconnecting, with the password hidden.
  const password = 'pw-s3cret-word';
  await add('door', `rtsp://admin:${password}@127.0.0.1:9/stream1`);
  await submit();
  // The next one typed while the first is starting: the first one's answer must not clear the form under it.
  await add('hall', 'rtsp://127.0.0.1:9/hall');
  held.get('door').release();
  await page.locator('#message').filter({ hasText: 'Started door.' }).waitFor();
  assert.equal(await page.inputValue('#add-form input[name="id"]'), 'hall', 'what was typed meanwhile stays');
  await submit();
  // And a third, answered before the second: the second's late answer must not take the player from it.
  await add('lobby', 'demo://');
  await submit();
  await waitForState(page, 'lobby', 'running');
  held.get('hall').release();
  await page.locator('#message').filter({ hasText: 'Started hall.' }).waitFor();
  assert.equal(await page.textContent('#player-title'), 'Preview: lobby', 'the player stays on the last added');
  await row(page, 'door').waitFor();

  // Added cameras are selected: the player sends the token too.
  const moved = await playedSeconds(page);
  assert.ok(moved > 1, `the video plays with the token: ${moved.toFixed(2)} s in 2 s`);

  const text = await page.evaluate(() => document.documentElement.outerHTML + JSON.stringify(localStorage));
  assert.ok(!text.includes(password), 'no camera password in the page or its storage');
  assert.match(await row(page, 'door').locator('td.url').textContent(), /\*\*\*/);

  for (const id of ['lobby', 'door', 'hall']) {
    await row(page, id).getByRole('button', { name: 'Stop' }).click();
    await waitForState(page, id, 'stopped');
  }
  const list = await fetch(`${LOCKED}/api/v1/cameras`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.deepEqual(await list.json(), [], 'the API reports the stopped cameras gone');
  assert.deepEqual(errors, []);
  await context.close();
});
