/**
 * Renders notebooks/assets/hand-two.svg (a hand showing two fingers, drawn
 * for this project) to hand-two.png with the system's Chromium, for the
 * "your own photo" section of notebooks/03-resnet50-signs.ipynb.
 *
 * Usage: npx tsx scripts/render-sample-sign.ts
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const assets = path.resolve('notebooks', 'assets');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage({ viewport: { width: 256, height: 256 } });
  await page.goto(pathToFileURL(path.join(assets, 'hand-two.svg')).href);
  await page.screenshot({ path: path.join(assets, 'hand-two.png') });
  console.log(`[render] wrote ${path.join(assets, 'hand-two.png')}`);
} finally {
  await browser.close();
}
