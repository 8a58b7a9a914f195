// Opens a sieve HTML report in headless Chromium (playwright-core driving the system's
// chromium), saves a full-page screenshot, and fails (exit 1) if the page logs a console error
// or warning, throws, shows a broken image, or requests anything other than the file itself
// and data: URIs. Requests leaving the file are aborted, so the check never touches the network.
//
// usage: node check.mjs REPORT.html SCREENSHOT.png   (CHROMIUM=/path overrides /usr/bin/chromium)
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [file, shot] = process.argv.slice(2);
if (!file || !shot) {
  console.error('usage: node check.mjs REPORT.html SCREENSHOT.png');
  process.exit(2);
}
const url = pathToFileURL(resolve(file)).href;
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route('**/*', (route) => {
    const u = route.request().url();
    return u === url ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (u !== url && !u.startsWith('data:')) problems.push(`request outside the file: ${u}`);
  });
  await page.goto(url, { waitUntil: 'load' });
  const info = await page.evaluate(() => ({
    sections: [...document.querySelectorAll('main > section')].map((s) => s.id),
    images: document.images.length,
    broken: [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.src.slice(0, 60)),
    svgs: document.querySelectorAll('svg').length,
    notRun: [...document.querySelectorAll('.notrun')].map((e) => e.textContent),
  }));
  for (const b of info.broken) problems.push(`broken image: ${b}`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(
    `check_report: ${info.sections.length} sections (${info.sections.join(', ')}), ${info.images} images, ` +
      `${info.svgs} plots; screenshot ${shot}`,
  );
  for (const n of info.notRun) console.log(`check_report: ${n}`);
} finally {
  await browser.close();
}
if (problems.length) {
  for (const p of problems) console.error(`check_report: FAIL ${p}`);
  process.exit(1);
}
console.log('check_report: ok (no console errors or warnings, no page errors, no requests outside the file)');
