import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { initBackend } from '../src/backend/index.js';
import { loadSigns } from '../src/data/signs.js';
import { loadModel, saveModel } from '../src/io.js';
import { ResNet50 } from '../src/resnet50.js';
import { evaluate, shuffledIndices, train } from '../src/train.js';

const DATA = path.resolve('..', 'shared', 'datasets');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'resnet-train-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

before(async () => {
  await initBackend({ log: () => {} });
});

describe('train', () => {
  test('the loss falls on a small slice of SIGNS and live tensors stay flat', async () => {
    const data = loadSigns(DATA, { trainLimit: 16, testLimit: 8 });
    const model = ResNet50();
    const counts: number[] = [];
    const history = await train(model, data.xTrain, data.yTrain, {
      epochs: 3,
      batchSize: 8,
      onBatch: () => counts.push(tf.memory().numTensors),
    });
    const losses = history.epochs.map((e) => e.loss);
    assert.equal(losses.length, 3);
    assert.ok(losses[2] < losses[0], `loss should fall: ${losses.join(', ')}`);
    // The first step creates the optimizer's slots; from then on every step
    // must free what it makes.
    assert.deepEqual(new Set(counts.slice(1)).size, 1, `numTensors per step: ${counts.join(', ')}`);

    const before = tf.memory().numTensors;
    const e1 = await evaluate(model, data.xTest, data.yTest, { batchSize: 3 });
    const e2 = await evaluate(model, data.xTest, data.yTest, { batchSize: 8 });
    assert.equal(tf.memory().numTensors, before, 'evaluation leaves no tensors behind');
    assert.equal(e1.total, 8);
    assert.ok(Math.abs(e1.loss - e2.loss) < 1e-4, 'batching does not change the loss');
    assert.deepEqual(Array.from(e1.predictions), Array.from(e2.predictions));
    assert.equal(
      e1.confusion.flat().reduce((a, b) => a + b, 0),
      8,
      'every example lands in the confusion matrix once',
    );

    // A saved model loads back and predicts the same.
    const dir = path.join(tmp, 'saved');
    await saveModel(model, dir);
    const loaded = await loadModel(dir);
    const e3 = await evaluate(loaded, data.xTest, data.yTest);
    assert.ok(Math.abs(e3.loss - e1.loss) < 1e-5);
    loaded.dispose();
    model.dispose();
    tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]);
  });

  test('a shuffled order is a permutation, reproducible from its seed', () => {
    const a = shuffledIndices(100, 7);
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual(a, shuffledIndices(100, 7));
    assert.notDeepEqual(a, shuffledIndices(100, 8));
  });

  test('rejects wrong arguments', async () => {
    const model = ResNet50();
    const x = tf.zeros([4, 64, 64, 3]);
    await assert.rejects(train(model, x, tf.zeros([3, 6]), {}), /`y`.*one label row per image/);
    await assert.rejects(train(model, x, tf.zeros([4, 6]), { batchSize: 0 }), /`batchSize`/);
    model.dispose();
  });
});

function runCli(args: string[], onLine?: (line: string, child: ReturnType<typeof spawn>) => void) {
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const take = (chunk: Buffer) => {
      const text = chunk.toString();
      out += text;
      for (const line of text.split('\n')) if (line) onLine?.(line, child);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('command line', () => {
  test('train runs, evaluates and saves a run that evaluate reads back', async () => {
    const out = path.join(tmp, 'run');
    const trained = await runCli([
      'train', '--data', DATA, '--limit', '8', '--epochs', '1', '--batch-size', '4', '--out', out,
    ]);
    assert.equal(trained.code, 0, trained.out);
    assert.match(trained.out, /^\[backend\] /m);
    assert.match(trained.out, /^\[epoch 1\/1\] loss \d+\.\d{4} accuracy \d\.\d{4}/m);
    assert.match(trained.out, /^\[test\] loss \d+\.\d{4} accuracy \d\.\d{4} \(\d+\/8 correct\)/m);
    for (const file of ['model/model.json', 'model/weights.bin', 'history.json', 'run.json']) {
      assert.ok(existsSync(path.join(out, file)), `${file} written`);
    }
    const history = JSON.parse(readFileSync(path.join(out, 'history.json'), 'utf8'));
    assert.equal(history.epochs.length, 1);

    const evaluated = await runCli(['evaluate', '--model', out, '--data', DATA, '--limit', '8']);
    assert.equal(evaluated.code, 0, evaluated.out);
    assert.match(evaluated.out, /confusion matrix/);
  });

  test('Ctrl-C stops after the step in flight and still saves the run', async () => {
    const out = path.join(tmp, 'interrupted');
    let sent = false;
    const result = await runCli(
      ['train', '--data', DATA, '--limit', '16', '--epochs', '5', '--batch-size', '4', '--out', out],
      (line, child) => {
        if (!sent && line.startsWith('[epoch 1/5]')) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    );
    assert.ok(sent, result.out);
    assert.equal(result.code, 130, result.out);
    assert.match(result.out, /stopping after this step/);
    const run = JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8'));
    assert.equal(run.interrupted, true);
    assert.ok(existsSync(path.join(out, 'model', 'weights.bin')));
  });

  test('bad input gets a one-line error and a non-zero exit, no stack trace', async () => {
    const missing = await runCli(['train', '--data', path.join(tmp, 'nowhere'), '--limit', '4']);
    assert.equal(missing.code, 1);
    assert.match(missing.out, /^\[error\] .*nowhere.*npm run setup/m);
    assert.doesNotMatch(missing.out, /\n\s+at /);

    const flag = await runCli(['train', '--epochs', 'ten']);
    assert.equal(flag.code, 1);
    assert.match(flag.out, /\[error\] `--epochs` must be an integer of at least 1; received "ten"/);

    const model = await runCli(['evaluate', '--model', path.join(tmp, 'no-model')]);
    assert.equal(model.code, 1);
    assert.match(model.out, /\[error\] No TensorFlow\.js model at .*no-model/);

    // A damaged model: weights cut short, then a model.json that is no model.
    const damaged = path.join(tmp, 'damaged');
    mkdirSync(damaged, { recursive: true });
    cpSync(path.join(tmp, 'run', 'model', 'model.json'), path.join(damaged, 'model.json'));
    writeFileSync(
      path.join(damaged, 'weights.bin'),
      readFileSync(path.join(tmp, 'run', 'model', 'weights.bin')).subarray(0, 100_000),
    );
    const cut = await runCli(['evaluate', '--model', damaged, '--data', DATA, '--limit', '4']);
    assert.equal(cut.code, 1);
    assert.match(cut.out, /\[error\] The model at .*damaged could not be loaded: .*retrain/);
    assert.doesNotMatch(cut.out, /\n\s+at /);
    writeFileSync(path.join(damaged, 'model.json'), 'null');
    const nullModel = await runCli(['evaluate', '--model', damaged]);
    assert.match(nullModel.out, /\[error\] .*is not a TensorFlow\.js layers model/);

    // A run folder is never overwritten; the message points at --resume.
    const again = await runCli(['train', '--data', DATA, '--limit', '4', '--out', path.join(tmp, 'run')]);
    assert.equal(again.code, 1);
    assert.match(again.out, /`--out` must be a new or empty folder.*use --resume/);
    assert.ok(existsSync(path.join(tmp, 'run', 'model', 'weights.bin')), 'the old run is intact');

    const unknown = await runCli(['fly']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.out, /Unknown command "fly"/);
  });
});
