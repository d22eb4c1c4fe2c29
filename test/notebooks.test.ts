/**
 * The notebooks: committed clean (no outputs, ids on every cell, the
 * resnet-ts kernel), executed headless in quick mode with every graded check
 * passing, and their HTML reports opened in a headless Chromium with the
 * network cut off: every figure drawn, no request made, no console error.
 *
 * The execution tests need Jupyter and the registered kernel, the browser
 * tests Chromium at /usr/bin/chromium; where one is missing those tests are
 * skipped with the reason printed, except under CI (which installs both), where
 * they run and fail.
 * Reports and screenshots go to reports/quick/.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';

import {
  checkJupyter,
  findErrorOutput,
  KERNEL_NAME,
  describeFailure,
  makeOffline,
  NotebookJson,
  NotebookResult,
  readNotebook,
  runNotebook,
} from '../scripts/run-notebooks.js';
import { findProjectRoot } from '../src/paths.js';

const ROOT = findProjectRoot();
const NOTEBOOK_DIR = path.join(ROOT, 'notebooks');
const OUT_DIR = path.join(ROOT, 'reports', 'quick');
const CHROMIUM = '/usr/bin/chromium';

/** Each notebook, the graded checks it must pass and the figures its report must hold. */
const EXPECTED = [
  {
    file: '01-identity-block.ipynb',
    checks: ['identityBlock'],
    plots: 1,
    diagrams: 1,
    grids: 0,
  },
  {
    file: '02-convolutional-block.ipynb',
    checks: ['convolutionalBlock'],
    plots: 0,
    diagrams: 1,
    grids: 0,
  },
  {
    file: '03-resnet50-signs.ipynb',
    checks: ['ResNet50'],
    // class counts, training curves, confusion matrix, own photo's probabilities
    plots: 4,
    diagrams: 1,
    // samples and own photo always; misclassified images when there are any
    grids: 2,
  },
];

function skipReason(what: string, reason: string): string {
  const text = `SKIPPED ${what}: ${reason}`;
  console.warn(`\n${'!'.repeat(78)}\n${text}\n${'!'.repeat(78)}\n`);
  return text;
}

function jupyterProblem(): string | undefined {
  try {
    checkJupyter();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

function sourceText(cell: NotebookJson['cells'][number]): string {
  return Array.isArray(cell.source) ? cell.source.join('') : cell.source;
}

function streamText(nb: NotebookJson): string {
  const raw = nb as unknown as {
    cells: Array<{ outputs?: Array<{ output_type: string; text?: string | string[] }> }>;
  };
  return raw.cells
    .flatMap((c) => c.outputs ?? [])
    .filter((o) => o.output_type === 'stream')
    .map((o) => (Array.isArray(o.text) ? o.text.join('') : (o.text ?? '')))
    .join('');
}

describe('committed notebooks', () => {
  for (const { file } of EXPECTED) {
    it(`${file} has no outputs, no execution counts, an id on every cell`, () => {
      const raw = JSON.parse(readFileSync(path.join(NOTEBOOK_DIR, file), 'utf8')) as {
        nbformat: number;
        nbformat_minor: number;
        cells: Array<{
          id?: string;
          cell_type: string;
          outputs?: unknown[];
          execution_count?: unknown;
        }>;
      };
      assert.equal(raw.nbformat, 4);
      assert.ok(raw.nbformat_minor >= 5, 'cell ids need nbformat 4.5');
      const ids = new Set<string>();
      raw.cells.forEach((cell, i) => {
        assert.ok(cell.id, `cell ${i + 1} has no id`);
        assert.ok(!ids.has(cell.id), `cell id "${cell.id}" appears twice`);
        ids.add(cell.id);
        if (cell.cell_type === 'code') {
          assert.deepEqual(cell.outputs, [], `cell ${i + 1} ("${cell.id}") holds outputs`);
          assert.equal(cell.execution_count, null, `cell ${i + 1} ("${cell.id}") has a count`);
        }
      });
    });

    it(`${file} names the resnet-ts kernel and imports from ./src`, () => {
      const nb = readNotebook(path.join(NOTEBOOK_DIR, file));
      assert.deepEqual(nb.metadata.kernelspec, {
        name: KERNEL_NAME,
        display_name: 'TypeScript (resnet-ts)',
        language: 'typescript',
      });
      const code = nb.cells.filter((c) => c.cell_type === 'code').map(sourceText).join('\n');
      assert.doesNotMatch(code, /from '\.\.\/src/, 'the kernel runs in the project root: ./src');
      assert.match(sourceText(nb.cells[0]), /\.\/src\//, 'the first cell explains ./src imports');
    });
  }
});

describe('report helpers', () => {
  it('makeOffline removes external scripts, stylesheets and MathJax', () => {
    const html =
      '<head><script src="https://cdn.example/require.js"></script>' +
      '<script src="file:///usr/share/javascript/jquery/jquery.min.js"></script>' +
      '<link rel="stylesheet" href="https://cdn.example/a.css">' +
      '<script type="text/x-mathjax-config">init_mathjax();</script>' +
      '<script>var inline = 1;</script><img src="data:image/png;base64,AA=="></head>';
    const clean = makeOffline(html);
    assert.doesNotMatch(clean, /cdn\.example|jquery|mathjax/);
    assert.match(clean, /var inline = 1/);
    assert.match(clean, /data:image\/png/);
  });

  it('describeFailure names the failing cell and what it printed', () => {
    const nb: NotebookJson = {
      metadata: {},
      cells: [
        { cell_type: 'markdown', id: 'intro', source: '# x' },
        { cell_type: 'code', id: 'fine', source: 'const a = 1;', execution_count: 1, outputs: [] },
        {
          cell_type: 'code',
          id: 'typo',
          source: "const b: number = 'x';",
          execution_count: 2,
          outputs: [
            { output_type: 'stream', name: 'stderr', text: ["1:7 - Type 'string' is not\n"] },
          ],
        },
        { cell_type: 'code', id: 'never', source: 'b;', execution_count: null, outputs: [] },
      ],
    };
    assert.equal(
      describeFailure('x.ipynb', nb),
      'x.ipynb, cell 3 (code cell 2, id "typo") failed:\n1:7 - Type \'string\' is not',
    );
    const thrown: NotebookJson = {
      ...nb,
      cells: [
        nb.cells[0],
        {
          ...nb.cells[1],
          outputs: [{ output_type: 'error', ename: 'E', evalue: 'v', traceback: [] }],
        },
      ],
    };
    const fine = 'cell 2 (code cell 1, id "fine")';
    assert.equal(describeFailure('x.ipynb', thrown), `x.ipynb, ${fine} failed:\nE: v`);
    assert.equal(findErrorOutput('x.ipynb', thrown), `x.ipynb, ${fine}: E: v`);
  });
});

const noJupyter = jupyterProblem();

// CI installs Jupyter and Chromium: there a missing one must fail, not skip.
const executionSkip = noJupyter && !process.env.CI && skipReason('notebook execution', noJupyter);

const noJupyterAtAll = spawnSync('jupyter', ['--version']).status !== 0;

describe('the kernel check', { skip: noJupyterAtAll && !process.env.CI && skipReason('the kernel check', 'jupyter is not installed') }, () => {
  it('a kernel registered for another checkout is named, with the fix', () => {
    // Jupyter reads kernelspecs from JUPYTER_PATH before the system folders.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'resnet-kernels-'));
    const saved = process.env.JUPYTER_PATH;
    try {
      mkdirSync(path.join(dir, 'kernels', 'resnet-ts'), { recursive: true });
      writeFileSync(path.join(dir, 'kernels', 'resnet-ts', 'kernel.json'), JSON.stringify({
        argv: ['node', '/elsewhere/project/scripts/tslab-kernel.cjs', '{connection_file}'],
        display_name: 'TypeScript (resnet-ts)',
        language: 'typescript',
      }));
      process.env.JUPYTER_PATH = dir;
      assert.throws(() => checkJupyter(),
        /starts another checkout \(\/elsewhere\/project\/scripts\/tslab-kernel\.cjs\).*Run `bash scripts\/setup\.sh kernel` here/);
    } finally {
      if (saved === undefined) delete process.env.JUPYTER_PATH;
      else process.env.JUPYTER_PATH = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

});

describe('notebooks executed in quick mode', { skip: executionSkip }, () => {
  const results = new Map<string, NotebookResult>();
  const env = { ...process.env, RESNET_QUICK: '1' };

  before(async () => {
    mkdirSync(OUT_DIR, { recursive: true });
    for (const { file } of EXPECTED) {
      const result = await runNotebook(path.join(NOTEBOOK_DIR, file), OUT_DIR, env);
      console.log(`[notebooks] ${file}: ${result.seconds.toFixed(1)} s`);
      results.set(file, result);
    }
  });

  for (const expected of EXPECTED) {
    it(`${expected.file}: no errors, every graded check passes`, () => {
      const result = results.get(expected.file);
      assert.ok(result, 'the notebook did not run');
      const nb = readNotebook(result.ipynb);
      assert.equal(findErrorOutput(expected.file, nb), undefined);
      const text = streamText(nb);
      for (const check of expected.checks) {
        assert.match(text, new RegExp(`^\\[check\\] ${check}: .*all \\d+ cases pass\\.$`, 'm'));
      }
      assert.doesNotMatch(text, /cases fail/);
      assert.doesNotMatch(text, /ShapeError|not implemented yet/);
    });

    it(`${expected.file}: the report holds its figures, offline`, () => {
      const result = results.get(expected.file);
      assert.ok(result, 'the notebook did not run');
      const html = readFileSync(result.html, 'utf8');
      const count = (re: RegExp) => (html.match(re) ?? []).length;
      assert.equal(count(/<div id="resnet-plot-[^"]+" class="resnet-plot"/g), expected.plots);
      assert.equal(count(/<div class="resnet-diagram"><svg/g), expected.diagrams);
      assert.ok(count(/<div class="resnet-grid"/g) >= expected.grids, 'image grids missing');
      assert.equal(count(/window\.__resnetDefine = window\.define/g), 1, 'plotly.js once');
      assert.doesNotMatch(html, /<script\b[^>]*\bsrc=/i, 'no script loaded from elsewhere');
      const externalLink = /<link\b[^>]*href="(https?:|file:|\/\/)/i;
      assert.doesNotMatch(html, externalLink, 'no external stylesheet');
      if (expected.file.startsWith('03')) assert.match(html, /QUICK RUN\./);
    });
  }

  it('a failing cell stops the run, naming the notebook and the cell', async () => {
    const EMPTY_CODE = { cell_type: 'code', metadata: {}, execution_count: null, outputs: [] };
    const dir = mkdtempSync(path.join(os.tmpdir(), 'resnet-nb-'));
    try {
      const broken = {
        cells: [
          { cell_type: 'markdown', id: 'intro', metadata: {}, source: ['# broken'] },
          { ...EMPTY_CODE, id: 'fine', source: ['const a = 1;'] },
          { ...EMPTY_CODE, id: 'boom', source: ["const deliberate: number = 'a type error';"] },
          { ...EMPTY_CODE, id: 'never', source: ['a;'] },
        ],
        metadata: readNotebook(path.join(NOTEBOOK_DIR, EXPECTED[0].file)).metadata,
        nbformat: 4,
        nbformat_minor: 5,
      };
      const file = path.join(dir, 'broken.ipynb');
      writeFileSync(file, JSON.stringify(broken));
      await assert.rejects(runNotebook(file, path.join(dir, 'out'), env), (error: Error) => {
        assert.match(error.message, /broken\.ipynb, cell 3 \(code cell 2, id "boom"\) failed/);
        assert.match(error.message, /not assignable to type 'number'/);
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const noBrowser =
  noJupyter !== undefined
    ? `no reports to open (${noJupyter})`
    : !existsSync(CHROMIUM)
      ? `Chromium is not at ${CHROMIUM} (install it with bash scripts/setup.sh system)`
      : undefined;

const browserSkip = noBrowser && !process.env.CI && skipReason('report rendering', noBrowser);

describe('reports in a headless browser, offline', { skip: browserSkip }, () => {
  // Imported here so that a machine without playwright-core can still run the rest.
  let browser: import('playwright-core').Browser;

  before(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run',
      ],
    });
  });

  after(async () => {
    await browser?.close();
  });

  for (const expected of EXPECTED) {
    const name = path.basename(expected.file, '.ipynb');
    it(`${name}.html draws every figure with no request and no console error`, async () => {
      const file = path.join(OUT_DIR, `${name}.html`);
      assert.ok(existsSync(file), `${file} is missing: the execution tests should have written it`);
      const url = pathToFileURL(file).href;
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const attempted: string[] = [];
      const errors: string[] = [];
      try {
        await context.route('**/*', (route) => {
          const target = route.request().url();
          if (target === url) return route.continue();
          attempted.push(target);
          return route.abort();
        });
        const page = await context.newPage();
        page.on('request', (request) => {
          const target = request.url();
          if (target !== url && !target.startsWith('data:') && !attempted.includes(target)) {
            attempted.push(target);
          }
        });
        page.on('console', (message) => {
          if (message.type() === 'error') errors.push(message.text());
        });
        page.on('pageerror', (error) => errors.push(error.message));
        await page.goto(url, { waitUntil: 'load', timeout: 60_000 });
        await page.waitForFunction(
          () =>
            Array.from(document.querySelectorAll('.resnet-plot')).every(
              (el) => el.querySelector('.main-svg') !== null,
            ),
          undefined,
          { timeout: 30_000 },
        );
        const drawn = await page.locator('.resnet-plot.js-plotly-plot').count();
        assert.equal(drawn, expected.plots, 'every figure is a drawn plotly plot');
        assert.equal(await page.locator('.resnet-diagram svg').count(), expected.diagrams);
        const brokenImages = await page.evaluate(() => {
          const images = Array.from(document.images);
          return images.filter((i) => !i.complete || i.naturalWidth === 0).length;
        });
        assert.equal(brokenImages, 0, 'every inline image decodes');
        await page.screenshot({ path: path.join(OUT_DIR, `${name}.png`), fullPage: true });
        assert.deepEqual(attempted, [], 'the report requested nothing beyond itself');
        assert.deepEqual(errors, [], 'the console shows no errors');
      } finally {
        await context.close();
      }
    });
  }
});
