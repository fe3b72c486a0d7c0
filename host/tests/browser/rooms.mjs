// The rooms page resuming after a drop, in headless Chromium: two pages in
// one room; the host closes one page's socket (admin API) while the other
// sends; the reconnected page must show every message once, in order.
// Usage: node rooms.mjs URL ADMIN_URL ADMIN_TOKEN. Exits 0 on success;
// prints what it saw and exits 1 otherwise.
import { chromium } from 'playwright-core';

const [url, adminUrl, token] = process.argv.slice(2);
if (!token) {
  console.error('usage: node rooms.mjs URL ADMIN_URL ADMIN_TOKEN');
  process.exit(2);
}

async function admin(method, path) {
  const res = await fetch(adminUrl + path, { method, headers: { authorization: `Bearer ${token}` } });
  return [res.status, await res.json()];
}

const texts = (page) => page.$$eval('#messages li', (lis) => lis.map((li) => `${li.dataset.offset} ${li.textContent}`));
// Polled on a timer: a page in the background gets no animation frames.
const opened = (page, n) => page.waitForFunction(
  (n) => Number(document.body.dataset.opens || 0) >= n, n, { polling: 100, timeout: 15000 });

async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
let failed = false;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const ada = await context.newPage();
  const bob = await context.newPage();
  await ada.goto(`${url}rooms.html?room=harbour&name=ada`);
  await opened(ada, 1);
  await bob.goto(`${url}rooms.html?room=harbour&name=bob`);
  await opened(bob, 1);
  await say(bob, 'before the drop');
  await ada.waitForSelector('#messages li:has-text("bob: before the drop")', { timeout: 10000 });

  // The host closes ada's socket; bob talks while ada is away.
  const [status, list] = await admin('GET', '/connections?route=/rooms');
  const mine = list.connections.find((c) => c.metadata.name === 'ada');
  if (status !== 200 || !mine) throw new Error(`no connection of ada: ${status} ${JSON.stringify(list)}`);
  const [closed] = await admin('DELETE', `/connections/${mine.id}?code=4000&reason=dropped`);
  if (closed !== 202) throw new Error(`closing ada's socket answered ${closed}`);
  // The page waits a second before it reconnects: bob speaks meanwhile.
  for (let i = 1; i <= 5; i++) await say(bob, `while away ${i}`);
  await bob.waitForSelector('#messages li:has-text("bob: while away 5")', { timeout: 10000 });

  await opened(ada, 2);
  await ada.waitForSelector('#messages li:has-text("bob: while away 5")', { timeout: 10000 });
  await say(bob, 'after the return');
  await ada.waitForSelector('#messages li:has-text("bob: after the return")', { timeout: 10000 });
  const [seenByAda, seenByBob] = [await texts(ada), await texts(bob)];
  const notice = await ada.textContent('#notice');
  const replayed = Number(await ada.evaluate(() => document.body.dataset.replayed));
  console.log(`replayed on return: ${replayed}`);
  console.log(`ada: ${JSON.stringify(seenByAda)}`);
  console.log(`bob: ${JSON.stringify(seenByBob)}`);
  console.log(`notice: ${JSON.stringify(notice)}`);
  const want = ['bob: before the drop', ...[1, 2, 3, 4, 5].map((i) => `bob: while away ${i}`), 'bob: after the return'];
  const shown = seenByAda.map((t) => t.slice(t.indexOf(' ') + 1));
  const offsets = seenByAda.map((t) => Number(t.slice(0, t.indexOf(' '))));
  if (JSON.stringify(shown) !== JSON.stringify(want)) throw new Error('ada did not see every message once, in order');
  if (offsets.some((o, i) => i > 0 && o !== offsets[i - 1] + 1)) throw new Error(`offsets have a gap: ${offsets}`);
  if (JSON.stringify(seenByAda) !== JSON.stringify(seenByBob)) throw new Error('ada and bob saw different rooms');
  if (notice) throw new Error('nothing was lost, but the page says so');
  if (!(replayed >= 1)) throw new Error('the page came back after bob had spoken, yet nothing was replayed');
  console.log('ok: every message once, in order, after a drop');
} catch (e) {
  failed = true;
  console.log(`FAILED: ${e.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
