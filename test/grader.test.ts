import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { initBackend } from '../src/backend/index.js';
import { convolutionalBlock, identityBlock } from '../src/blocks.js';
import {
  checkConvolutionalBlock,
  checkIdentityBlock,
  checkResNet50,
  ExerciseResult,
} from '../src/grader/index.js';
import { buildCases, loadReferences, probesOf } from '../src/grader/checks.js';
import { parseArgs } from '../src/grader/cli.js';
import { probeKernels, suspectMistakes } from '../src/grader/diagnose.js';
import { gradeSubmission } from '../src/grader/grade.js';
import { precomputeOutputs } from '../src/grader/precompute.js';
import { blockKey, float32Text, lookupBlock, mistakeKey } from '../src/grader/precomputed.js';
import type { BlockProbe } from '../src/grader/types.js';
import { referenceBlock, tensor4d, variantBlock } from '../src/grader/variants.js';
import { compareWithReference, loadBlockReference, referenceDir } from '../src/reference.js';
import { ResNet50 } from '../src/resnet50.js';
import { learnerBlocks } from './fixtures/learner-blocks.js';

const FIXTURES = path.resolve('test/fixtures');
const quiet = { print: () => {} };
const tmp = mkdtempSync(path.join(os.tmpdir(), 'grader-test-'));

before(async () => {
  await initBackend({ backend: 'cpu', log: () => {} });
  tf.env().set('PROD', true);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const full = (r: ExerciseResult) => r.points === r.maximum && r.messages.length === 0;

describe("the grader's own block reproduces the reference tensors", () => {
  const ref = loadBlockReference();
  for (const c of ref.cases) {
    for (const mode of ['inference', 'training'] as const) {
      test(`${c.name} (${mode})`, () => {
        const spec = { block: c.block, f: c.f, filters: c.filters, s: c.s ?? 2 };
        const flat = (n: unknown) => {
          const t = tf.tensor(n as number[]);
          const data = { shape: t.shape, values: Array.from(t.dataSync()) };
          t.dispose();
          return data;
        };
        const out = tf.tidy(() =>
          referenceBlock(
            spec,
            tensor4d(flat(c.input)),
            c.kernels.map((k) => tensor4d(flat(k))),
            mode === 'training',
          ),
        );
        const tol = mode === 'training' ? { rtol: 1e-3, atol: 1e-5 } : { rtol: 1e-4, atol: 1e-5 };
        const result = compareWithReference(out, c.expected[mode], tol);
        out.dispose();
        assert.ok(result.ok, result.message);
      });
    }
  }

  test('a mistake that makes the add impossible gives no variant', () => {
    const x = tf.ones([1, 4, 4, 3]) as tf.Tensor4D;
    const shapes: Array<[number, number, number, number]> = [
      [1, 1, 3, 2],
      [2, 2, 2, 2],
      [1, 1, 2, 5],
      [1, 1, 3, 5],
    ];
    const ks = shapes.map((s) => tf.ones(s) as tf.Tensor4D);
    const filters: [number, number, number] = [2, 2, 5];
    const spec = { block: 'convolutional' as const, f: 2, filters, s: 2 };
    assert.equal(variantBlock(spec, x, ks, true, { noShortcutConv: true }), undefined);
    tf.dispose([x, ...ks]);
  });
});

describe("the learner workspace's precomputed outputs", () => {
  test('read back exactly as the live block computes them, mistakes included', () => {
    const refs = loadReferences();
    const outputs = precomputeOutputs(refs, [4]);
    assert.deepEqual(outputs.seeds, [4]);
    let compared = 0;
    for (const exercise of ['identityBlock', 'convolutionalBlock'] as const) {
      const probes = probesOf(buildCases(exercise, refs, 4)).filter(
        (p): p is BlockProbe => p.kind === 'block',
      );
      for (const probe of probes) {
        const x = tensor4d(probe.input);
        const ks = probeKernels(probe);
        const key = blockKey(probe, x, ks, probe.training);
        for (const mistakes of [{}, ...suspectMistakes(probe, probe.training)]) {
          const what = `${probe.id} ${mistakeKey(mistakes)}`;
          const live = variantBlock(probe, x, ks, probe.training, mistakes);
          const stored = lookupBlock(outputs, key, mistakes);
          assert.equal(stored === undefined, live === undefined, what);
          if (live && stored) {
            assert.deepEqual(stored.shape, live.shape, what);
            assert.deepEqual(stored.dataSync(), live.dataSync(), what);
            compared++;
          }
          tf.dispose([live, stored].filter((t): t is tf.Tensor4D => t !== undefined));
        }
        tf.dispose([x, ...ks]);
      }
    }
    assert.ok(compared > 100, `only ${compared} outputs compared`);
  });

  test("a key tells inputs and modes apart, not an identity stride or mistakes' order", () => {
    const filters: [number, number, number] = [1, 1, 2];
    const spec = { block: 'identity' as const, f: 1, filters, s: 1 };
    const x = tf.ones([1, 1, 1, 2]);
    const y = tf.tensor([1, 1.0000001], [1, 1, 1, 2]);
    assert.notEqual(blockKey(spec, x, [], true), blockKey(spec, y, [], true));
    assert.notEqual(blockKey(spec, x, [], true), blockKey(spec, x, [], false));
    // A stride means nothing to the identity block.
    assert.equal(blockKey(spec, x, [], true), blockKey({ ...spec, s: 2 }, x, [], true));
    const swapped = [{ noShortcut: true, bnAxis: 0 }, { bnAxis: 0, noShortcut: true }];
    assert.equal(mistakeKey(swapped[0]), mistakeKey(swapped[1]));
    assert.equal(mistakeKey({ training: undefined }), '');
    for (const v of [0.1, -1 / 3, 1e-30, 123456.789, 0]) {
      assert.equal(Math.fround(float32Text(v)), Math.fround(v));
    }
    tf.dispose([x, y]);
  });
});

describe('the notebook checks', () => {
  test('the solution scores full marks and each exercise prints one line', () => {
    const lines: string[] = [];
    const print = (line: string) => lines.push(line);
    const results = [
      checkIdentityBlock(identityBlock, { print }),
      checkConvolutionalBlock(convolutionalBlock, { print }),
      checkResNet50(ResNet50, { print }),
    ];
    results.forEach((r) => assert.ok(full(r), JSON.stringify(r.messages)));
    assert.equal(lines.length, 3);
    assert.match(lines[0], /^\[check\] identityBlock: 9\/9 points/);
  });

  test('a learner-style solution, built from layers, scores full marks', () => {
    const good = learnerBlocks();
    assert.ok(full(checkIdentityBlock(good.identityBlock, quiet)));
    assert.ok(full(checkConvolutionalBlock(good.convolutionalBlock, quiet)));
    assert.ok(full(checkResNet50(good.ResNet50, quiet)));
  });

  test('any fresh seed still gives the solution full marks', () => {
    for (const seed of [7, 123456]) {
      assert.ok(full(checkIdentityBlock(identityBlock, { ...quiet, seed })));
      assert.ok(full(checkConvolutionalBlock(convolutionalBlock, { ...quiet, seed })));
    }
  });

  test('a failing exercise prints a score line and one line per distinct cause', () => {
    const lines: string[] = [];
    const broken = learnerBlocks({ missingFinalRelu: true });
    checkIdentityBlock(broken.identityBlock, { print: (l) => lines.push(l) });
    assert.match(lines[0], /^\[check\] identityBlock: 1\/9 points; 8 of 9 cases fail:$/);
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.match(lines[1], /identity-small \(inference, training\);.*final ReLU/);
  });

  test('hidden cases count, are flagged hidden and are graded the same way', () => {
    const ref = loadBlockReference();
    const hidden = {
      ...ref,
      cases: ref.cases.map((c) => ({ ...c, name: `secret-${c.name}` })),
    };
    const file = path.join(tmp, 'hidden.json');
    writeFileSync(file, JSON.stringify(hidden));
    const good = checkIdentityBlock(identityBlock, { ...quiet, hidden: file });
    assert.equal(good.maximum, 13);
    assert.ok(full(good));
    assert.equal(good.cases.filter((c) => c.hidden).length, 4);
    const bad = checkConvolutionalBlock(
      learnerBlocks({ noShortcutConv: true }).convolutionalBlock,
      { ...quiet, hidden: file },
    );
    assert.ok(bad.cases.some((c) => c.hidden && /secret-conv-s1/.test(c.message)));
  });
});

/**
 * Each broken fixture, checked in this process: it must lose points on the
 * exercises its mistake shows in, and the feedback must name the mistake.
 */
const both = { identity: true, conv: true };
const convOnly = { identity: false, conv: true };
const BROKEN: Array<[string, RegExp, { identity: boolean; conv: boolean }]> = [
  ['missing-shortcut', /equals the main path alone/, both],
  ['relu-before-bn', /ReLU applied before BatchNorm/, both],
  ['relu-inside-conv', /activation: 'relu' on Conv2D/, both],
  ['missing-final-relu', /with no final ReLU/, both],
  ['middle-kernel-1x1', /middle convolution asked for a 1×1 kernel/, both],
  ['stride-on-middle', /stride s sits on the f×f convolution/, convOnly],
  ['valid-padding', /padding 'valid'/, both],
  ['no-shortcut-conv', /shortcut is the input itself/, convOnly],
  ['bn-wrong-axis', /normalises over axis 1/, both],
  ['training-ignored', /moving statistics although `options.training` was true/, both],
  ['hard-coded-names', /layer names collide/, both],
];

describe('each broken implementation gets its message and loses its points', () => {
  for (const [name, pattern, shows] of BROKEN) {
    test(name, async () => {
      const mod = await import(`./fixtures/broken/${name}.js`);
      const id = checkIdentityBlock(mod.identityBlock, quiet);
      const conv = checkConvolutionalBlock(mod.convolutionalBlock, quiet);
      for (const [result, expected] of [[id, shows.identity], [conv, shows.conv]] as const) {
        if (!expected) {
          assert.ok(full(result), `${result.exercise}: ${result.messages.join('\n')}`);
          continue;
        }
        assert.ok(result.points < result.maximum, `${result.exercise} kept all its points`);
        const failing = result.cases.filter((c) => !c.passed);
        for (const c of failing) assert.match(c.message, pattern, c.message);
      }
    });
  }

  test('ResNet50 built from broken blocks says what its layer table shows', async () => {
    const convRelu = await import('./fixtures/broken/relu-inside-conv.js');
    const a = checkResNet50(convRelu.ResNet50, quiet);
    assert.equal(a.points, a.maximum - 2);
    assert.match(a.messages.join('\n'), /Conv2D layers have their own activation/);
    const noAdd = await import('./fixtures/broken/missing-shortcut.js');
    const b = checkResNet50(noAdd.ResNet50, quiet);
    assert.match(b.messages.join('\n'), /0 Add layers; the course's has 16/);
  });
});

describe('grading in child processes', () => {
  const out = path.join(tmp, 'out');

  test('the solution (this project as a workspace) scores 24/24, with both reports', async () => {
    const report = await gradeSubmission({ submission: '.', outDir: out, seed: 5, ...quiet });
    assert.equal(report.points, 24);
    assert.equal(report.maximum, 24);
    const json = JSON.parse(readFileSync(path.join(out, 'grade.json'), 'utf8'));
    assert.deepEqual(
      json.exercises.map((e: ExerciseResult) => [e.exercise, e.points, e.maximum, e.messages]),
      [['identityBlock', 9, 9, []], ['convolutionalBlock', 9, 9, []], ['ResNet50', 6, 6, []]],
    );
    const html = readFileSync(path.join(out, 'grade.html'), 'utf8');
    assert.match(html, /<h1>Residual Networks: 24\/24 points<\/h1>/);
    assert.doesNotMatch(html, /<script|https?:\/\//);
  });

  test('a broken single file gets the same feedback as in the notebook', async () => {
    const file = path.join(FIXTURES, 'broken', 'missing-final-relu.ts');
    const report = await gradeSubmission({
      submission: file,
      outDir: out,
      exercises: ['convolutionalBlock'],
      seed: 0,
      ...quiet,
    });
    const broken = learnerBlocks({ missingFinalRelu: true });
    const inProcess = checkConvolutionalBlock(broken.convolutionalBlock, quiet);
    assert.deepEqual(report.exercises[0].messages, inProcess.messages);
  });

  test('a correct single file saved outside the project gets full marks', async () => {
    // As a learner saves it anywhere: no node_modules and no src/ beside it, so
    // '@tensorflow/tfjs' and '../../src/initializers.js' resolve from the grader.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'grader-single-'));
    try {
      mkdirSync(path.join(dir, 'sub'));
      const file = path.join(dir, 'sub', 'solution.ts');
      const source = readFileSync(path.join(FIXTURES, 'learner-blocks.ts'), 'utf8');
      writeFileSync(
        file,
        `${source}\nexport const { identityBlock, convolutionalBlock } = learnerBlocks();\n`,
      );
      const report = await gradeSubmission({
        submission: file,
        outDir: path.join(dir, 'out'),
        exercises: ['identityBlock', 'convolutionalBlock'],
        seed: 2,
        ...quiet,
      });
      for (const r of report.exercises) assert.ok(full(r), r.messages.join('\n'));
      assert.equal(report.points, 18);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const hostile = (name: string) => path.join(FIXTURES, 'hostile', `${name}.ts`);
  const grade = (name: string, extra: Partial<Parameters<typeof gradeSubmission>[0]> = {}) =>
    gradeSubmission({
      submission: hostile(name),
      outDir: out,
      exercises: ['identityBlock', 'convolutionalBlock'],
      seed: 1,
      ...quiet,
      ...extra,
    });

  /** The hostile identityBlock scores zero with `pattern`; the other block is still graded. */
  function zeroThenGraded(report: Awaited<ReturnType<typeof gradeSubmission>>, pattern: RegExp) {
    const [id, conv] = report.exercises;
    assert.equal(id.points, 0);
    assert.match(id.messages.join('\n'), pattern);
    assert.ok(full(conv), conv.messages.join('\n'));
  }

  test('a block that throws scores zero, with the error', async () => {
    zeroThenGraded(await grade('throws'), /threw "Error: boom/);
  });

  test('a block that never returns is stopped at the time limit', async () => {
    const report = await grade('hangs', { limits: { timeoutMs: 4000 } });
    zeroThenGraded(report, /did not finish within 4 s/);
  });

  test('a block that returns the wrong shape scores zero', async () => {
    zeroThenGraded(await grade('wrong-shape'), /shape \[1,2,3\]; it should be \[2,4,4,3\]/);
  });

  test('a block that returns NaN scores zero', async () => {
    zeroThenGraded(await grade('nan'), /contains NaN/);
  });

  test('a block that ends the process scores zero', async () => {
    zeroThenGraded(await grade('exits'), /ended the process \(exit code 3\)/);
  });

  test('heap exhaustion and buffer exhaustion are both stopped', async () => {
    const report = await grade('memory', { limits: { maxOldSpaceMb: 256, maxRssMb: 900 } });
    const [id, conv] = report.exercises;
    assert.equal(id.points + conv.points, 0);
    assert.match(id.messages.join('\n'), /ran out of memory|more than 900 MiB/);
    assert.match(conv.messages.join('\n'), /more than 900 MiB/);
  });

  test('writing to the reference or grade files scores zero; the files are restored', async () => {
    const refs = path.join(tmp, 'refs');
    const outDir = path.join(tmp, 'writes-out');
    mkdirSync(refs, { recursive: true });
    mkdirSync(outDir, { recursive: true });
    for (const f of ['blocks.json', 'resnet50-summary.json']) {
      copyFileSync(path.join(referenceDir(), f), path.join(refs, f));
    }
    const original = readFileSync(path.join(refs, 'blocks.json'), 'utf8');
    process.env.HOSTILE_WRITE_TARGETS = JSON.stringify([
      path.join(refs, 'blocks.json'),
      path.join(outDir, 'grade.json'),
    ]);
    try {
      const report = await grade('writes', { referenceDir: refs, outDir });
      zeroThenGraded(report, /wrote to .*blocks\.json.*grade\.json.*put the files back/);
    } finally {
      delete process.env.HOSTILE_WRITE_TARGETS;
    }
    assert.equal(readFileSync(path.join(refs, 'blocks.json'), 'utf8'), original);
    const json = JSON.parse(readFileSync(path.join(outDir, 'grade.json'), 'utf8'));
    assert.equal(json.exercises[0].points, 0);
  });
});

describe('the command line', () => {
  test('parses its options and rejects wrong ones with a message', () => {
    const o = parseArgs(['ws', '--exercise', 'ResNet50', '--seed', '4', '--timeout', '9']);
    assert.ok(o !== 'help');
    assert.deepEqual([o.exercises, o.seed, o.limits?.timeoutMs], [['ResNet50'], 4, 9000]);
    assert.throws(() => parseArgs(['ws', '--exercise', 'resnet']), /`--exercise` must be one of/);
    assert.throws(() => parseArgs([]), /Give the submission/);
    assert.throws(() => parseArgs(['a', 'b']), /one submission/);
    assert.equal(parseArgs(['--help']), 'help');
  });

  test('`npm run grade` grades, writes the reports and exits 0', () => {
    const outDir = path.join(tmp, 'cli-out');
    const run = spawnSync(
      'npm',
      ['run', '-s', 'grade', '--', 'test/fixtures/broken/no-shortcut-conv.ts', '--exercise',
        'convolutionalBlock', '--out', outDir],
      { encoding: 'utf8' },
    );
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^\[check\] convolutionalBlock: 0\/9 points/m);
    assert.match(run.stdout, /shortcut is the input itself/);
    assert.match(run.stdout, /^\[grade\] 0\/9 points/m);
    assert.ok(readFileSync(path.join(outDir, 'grade.html'), 'utf8').includes('convolutionalBlock'));
  });

  test('a missing submission exits 2 with a message', () => {
    const args = ['run', '-s', 'grade', '--', 'no/such/file.ts'];
    const run = spawnSync('npm', args, { encoding: 'utf8' });
    assert.equal(run.status, 2);
    assert.match(run.stderr, /does not exist/);
  });
});
