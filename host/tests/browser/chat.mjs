// Opens the chat page twice in headless Chromium, types a message in one and
// checks that it appears in both, then prints the WebSocket extensions the
// browser negotiated. Usage: node chat.mjs URL (https:// with a test
// certificate: certificate errors are ignored).
// Exits 0 on success; prints what it saw and exits 1 otherwise.
import { chromium } from 'playwright-core';

const url = process.argv[2];
if (!url) {
  console.error('usage: node chat.mjs URL');
  process.exit(2);
}

function location_scheme(u) {
  return new URL(u).protocol;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const pages = [await context.newPage(), await context.newPage()];
  for (const page of pages) {
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'connected',
      null, { timeout: 10000 });
  }
  const [ada, bob] = pages;
  await ada.fill('#input', '/nick ada');
  await ada.press('#input', 'Enter');
  await ada.waitForSelector('#messages li:has-text("nickname set to [ada]")', { timeout: 10000 });

  await ada.fill('#input', 'hello from the browser');
  await ada.press('#input', 'Enter');
  for (const page of pages) {
    await page.waitForSelector('#messages li:has-text("ada: hello from the browser")', { timeout: 10000 });
  }
  // Long enough for the host to compress it on its way to both pages.
  const long = 'a longer line that the host compresses, '.repeat(8).trim();
  await ada.fill('#input', long);
  await ada.press('#input', 'Enter');
  for (const page of pages) {
    await page.waitForSelector(`#messages li:has-text("ada: ${long}")`, { timeout: 10000 });
  }
  const extensions = await ada.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/chat');
    ws.onopen = () => { resolve(ws.extensions); ws.close(); };
    ws.onerror = () => reject(new Error('the WebSocket failed'));
  }));
  console.log('protocol: ' + location_scheme(url) + '; extensions: ' + extensions);
  const bobSees = await bob.$$eval('#messages li', (lis) => lis.map((li) => li.textContent));
  if (bobSees.some((t) => t.includes('nickname set'))) {
    throw new Error('the nick reply leaked to another page: ' + JSON.stringify(bobSees));
  }
  console.log('chat page ok: ' + JSON.stringify(bobSees));
} catch (e) {
  console.error('chat page failed: ' + e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
