import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { gradeSubmission } from '../src/grader/grade.js';
import {
  checkConvolutionalBlock,
  checkIdentityBlock,
  ExerciseResult,
} from '../src/grader/index.js';
import {
  clearNotebook,
  releaseStudent,
  ReleaseError,
  stripSolutions,
} from '../scripts/release-student.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'release-test-'));
const ws = path.join(tmp, 'ws');
const quiet = { print: () => {} };
let files: string[] = [];

before(() => {
  tf.env().set('PROD', true);
  files = releaseStudent(ws);
  // The learner would run `npm run setup`; the project's own modules stand in.
  symlinkSync(path.resolve('node_modules'), path.join(ws, 'node_modules'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('solution markers', () => {
  const source = [
    'function f() {',
    '  check();',
    '  // BEGIN SOLUTION',
    '  // STUB: // Write the body.',
    "  // STUB: throw new Error('not implemented yet: f');",
    '  return 42;',
    '  // END SOLUTION',
    '}',
  ].join('\n');

  test('a region becomes its STUB lines at the same indentation', () => {
    assert.equal(
      stripSolutions(source),
      ['function f() {', '  check();', '  // Write the body.',
        "  throw new Error('not implemented yet: f');", '}'].join('\n'),
    );
  });

  test('text without markers comes back unchanged', () => {
    assert.equal(stripSolutions('const a = 1;\n'), 'const a = 1;\n');
  });

  test('unbalanced or empty regions are refused with file and line', () => {
    const strip = (text: string, file: string) => () => stripSolutions(text, file);
    assert.throws(strip('// BEGIN SOLUTION\n// STUB: x', 'a.ts'), /a\.ts:1: BEGIN SOLUTION never/);
    assert.throws(strip('x\n// END SOLUTION', 'b.ts'), /b\.ts:2: END SOLUTION without/);
    assert.throws(strip('// BEGIN SOLUTION\ny\n// END SOLUTION', 'c.ts'), ReleaseError);
  });

  test('notebook outputs and execution counts are cleared', () => {
    const code = { cell_type: 'code', outputs: [{ text: 'answer' }], execution_count: 3 };
    const nb = { cells: [code, { cell_type: 'markdown', source: ['# Title'] }], nbformat: 4 };
    const cleared = JSON.parse(clearNotebook(JSON.stringify(nb)));
    assert.deepEqual(cleared.cells[0].outputs, []);
    assert.equal(cleared.cells[0].execution_count, null);
    assert.deepEqual(cleared.cells[1], nb.cells[1]);
  });
});

describe('the learner workspace', () => {
  test('holds what setup and the notebooks need, and none of the grader tests', () => {
    for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/blocks.ts',
      'src/resnet50.ts', 'src/grader/index.ts', 'src/grader/variants.ts',
      'Requirements/reference/blocks.json', 'Requirements/grader/expected.json.gz']) {
      assert.ok(files.includes(f), `${f} is missing`);
    }
    if (existsSync('scripts/setup.sh')) assert.ok(files.includes('scripts/setup.sh'));
    const notebooks = existsSync('notebooks')
      ? readdirSync('notebooks').filter((f) => f.endsWith('.ipynb'))
      : [];
    for (const nb of notebooks) assert.ok(files.includes(`notebooks/${nb}`), nb);
    for (const f of files) {
      assert.doesNotMatch(f, /grader\.test|release\.test|fixtures\/(broken|hostile)/);
      assert.doesNotMatch(f, /learner-blocks|release-student|precompute\.ts|variants-lookup/);
      assert.doesNotMatch(f, /^Requirements\/datasets\/./);
    }
    assert.ok(existsSync(path.join(ws, 'Requirements', 'datasets')));
    // build:native and setup's native step need the addon's sources, not its build.
    for (const f of ['native/binding.gyp', 'native/src/addon.cc']) {
      assert.ok(files.includes(f), `${f} is missing`);
    }
    assert.ok(!files.some((f) => f.startsWith('native/build/')), 'native/build/ was shipped');
    const pkg = JSON.parse(readFileSync(path.join(ws, 'package.json'), 'utf8'));
    assert.equal(pkg.scripts['release:student'], undefined);
    assert.equal(pkg.scripts.grade, 'tsx src/grader/main.ts');
  });

  test('the graded bodies are stubs; signatures, JSDoc and helpers stay', () => {
    const blocks = readFileSync(path.join(ws, 'src/blocks.ts'), 'utf8');
    const resnet = readFileSync(path.join(ws, 'src/resnet50.ts'), 'utf8');
    for (const text of [blocks, resnet]) {
      assert.doesNotMatch(text, /SOLUTION|STUB|BlockContext|ctx\.|convolutionalBlock\(h, 3/);
    }
    assert.match(blocks, /export function identityBlock<T extends BlockInput>\(/);
    assert.match(blocks, /\* The identity block: the shortcut carries the input unchanged/);
    assert.match(blocks, /not implemented yet: identityBlock/);
    assert.match(blocks, /not implemented yet: convolutionalBlock/);
    assert.match(resnet, /export function ResNet50\(options: ResNet50Options = \{\}\)/);
    assert.match(resnet, /export const RESNET50_STAGES/);
    assert.match(resnet, /not implemented yet: ResNet50/);
  });

  test('type-checks, under the project TypeScript and the notebook kernel\'s 5.0', () => {
    // Only the graded modules and what they import: other modules are not the release's.
    writeFileSync(
      path.join(ws, 'tsconfig.release.json'),
      JSON.stringify({
        extends: './tsconfig.json',
        include: ['src/blocks.ts', 'src/resnet50.ts', 'src/grader/*.ts'],
      }),
    );
    const compilers = [
      path.resolve('node_modules/typescript/bin/tsc'),
      path.resolve('node_modules/@tslab/typescript-for-tslab/bin/tsc'),
    ].filter((c) => existsSync(c));
    for (const tsc of compilers) {
      const args = [tsc, '-p', 'tsconfig.release.json'];
      const run = spawnSync(process.execPath, args, { cwd: ws, encoding: 'utf8' });
      assert.equal(run.status, 0, `${tsc}:\n${run.stdout}${run.stderr}`);
    }
  });

  test('graded as it is, every exercise says it is not implemented yet', async () => {
    const report = await gradeSubmission({ submission: ws, seed: 2, print: () => {} });
    assert.equal(report.points, 0);
    for (const e of report.exercises) {
      assert.match(e.messages.join('\n'), new RegExp(`not implemented ${e.exercise} yet`));
    }
    assert.ok(existsSync(path.join(ws, 'grade.json')), 'a workspace keeps its own report');
  });

  test('its non-graded modules work unchanged', () => {
    const run = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        "import('./src/reference.ts')" +
          '.then((r) => console.log(r.loadBlockReference().cases.length))',
      ],
      { cwd: ws, encoding: 'utf8' },
    );
    assert.equal(run.stdout.trim(), '5', run.stderr);
  });

  test('carries no working block: its grader only looks outputs up', () => {
    const grader = files.filter((f) => f.startsWith('src/grader/') && f.endsWith('.ts'));
    assert.ok(grader.length >= 10, grader.join(', '));
    for (const f of grader) {
      const text = readFileSync(path.join(ws, f), 'utf8');
      // BatchNorm's statistics and epsilon, and convolutions or ReLUs written with tf ops.
      assert.doesNotMatch(text, /\btf\.(moments|batchNorm|conv2d|relu|sqrt)\b|EPSILON\b/, f);
    }
    const variants = readFileSync(path.join(ws, 'src/grader/variants.ts'), 'utf8');
    assert.match(variants, /Requirements\/grader\/expected\.json\.gz/);
    assert.match(variants, /export function variantBlock\(/);
    const size = statSync(path.join(ws, 'Requirements/grader/expected.json.gz')).size;
    assert.ok(size < 2 ** 20, `expected.json.gz is ${size} bytes`);
  });

  /** Runs `body` in a process inside the workspace; it prints JSON, which comes back parsed. */
  function inWorkspace(body: string): unknown {
    const file = path.join(ws, 'check-in-workspace.ts');
    writeFileSync(
      file,
      [
        "import * as tf from '@tensorflow/tfjs';",
        "import path from 'node:path';",
        "import { pathToFileURL } from 'node:url';",
        "import * as grader from './src/grader/index.ts';",
        "tf.env().set('PROD', true);",
        'const quiet = { print: () => {} };',
        '// The solution and the fixtures come from the repository, as a learner\'s code would.',
        'const repo = (f: string) => import(pathToFileURL(path.join(process.env.REPO!, f)).href);',
        body,
      ].join('\n'),
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', file], {
      cwd: ws,
      encoding: 'utf8',
      env: { ...process.env, REPO: path.resolve('.') },
    });
    rmSync(file);
    assert.equal(run.status, 0, run.stderr);
    return JSON.parse(run.stdout);
  }

  const summary = (r: ExerciseResult) => [r.exercise, r.points, r.maximum, r.messages];

  test('its checks give the solution full marks, from the precomputed outputs', () => {
    const results = inWorkspace(`
      const blocks = await repo('src/blocks.ts');
      const lines: string[] = [];
      const print = (l: string) => lines.push(l);
      const id = grader.checkIdentityBlock(blocks.identityBlock, { print });
      const conv = grader.checkConvolutionalBlock(blocks.convolutionalBlock, { print, seed: 7 });
      console.log(JSON.stringify({ id, conv, lines }));
    `) as { id: ExerciseResult; conv: ExerciseResult; lines: string[] };
    assert.deepEqual(summary(results.id), ['identityBlock', 9, 9, []]);
    assert.deepEqual(summary(results.conv), ['convolutionalBlock', 9, 9, []]);
    assert.match(results.lines[0], /^\[check\] identityBlock: 9\/9 points/);
  });

  test('each broken fixture gets the same feedback there as from the live grader', async () => {
    const names = readdirSync('test/fixtures/broken').map((f) => f.replace(/\.ts$/, ''));
    const there = inWorkspace(`
      const out: unknown[] = [];
      for (const name of ${JSON.stringify(names)}) {
        const m = await repo(\`test/fixtures/broken/\${name}.ts\`);
        out.push(grader.checkIdentityBlock(m.identityBlock, quiet));
        out.push(grader.checkConvolutionalBlock(m.convolutionalBlock, { ...quiet, seed: 3 }));
      }
      console.log(JSON.stringify(out));
    `) as ExerciseResult[];
    const live: ExerciseResult[] = [];
    for (const name of names) {
      const m = await import(`./fixtures/broken/${name}.js`);
      live.push(checkIdentityBlock(m.identityBlock, quiet));
      live.push(checkConvolutionalBlock(m.convolutionalBlock, { ...quiet, seed: 3 }));
    }
    assert.equal(there.length, live.length);
    live.forEach((r, i) => {
      assert.deepEqual(summary(there[i]), summary(r), names[Math.floor(i / 2)]);
    });
    const failing = there.filter((r) => r.points < r.maximum);
    assert.ok(failing.length >= names.length, 'the fixtures lost too few points');
  });

  test('its checks refuse a seed whose outputs it does not carry', () => {
    const error = inWorkspace(`
      const blocks = await repo('src/blocks.ts');
      try {
        grader.checkIdentityBlock(blocks.identityBlock, { ...quiet, seed: 8 });
        console.log(JSON.stringify('no error'));
      } catch (e) {
        console.log(JSON.stringify(String(e)));
      }
    `);
    assert.match(String(error), /ArgumentError: `seed` must be one of 0, 1, .*received 8/);
  });

  test('refuses to overwrite a folder that is not empty', () => {
    assert.throws(() => releaseStudent(ws), /not empty; pass --force/);
  });
});
