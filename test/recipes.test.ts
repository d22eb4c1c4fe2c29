import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { augmentBatch } from '../src/augment.js';
import { initBackend } from '../src/backend/index.js';
import {
  evaluateWithBatchStatistics, learningRateSchedule, parseRecipeName, recalibrateBatchNorm,
  RECIPES, setBatchNormMomentum, zeroResidualGamma,
} from '../src/recipes.js';
import { ResNet50 } from '../src/resnet50.js';
import { findNewestRun } from '../src/runs.js';

before(async () => {
  await initBackend({ log: () => {} });
});

/** A model whose output is its BatchNorm's output, so statistics are easy to check. */
function bnModel(): tf.LayersModel {
  const input = tf.input({ shape: [2, 2, 3] });
  const bn = tf.layers.batchNormalization({ axis: 3, epsilon: 1e-3 });
  const flat = tf.layers.flatten().apply(bn.apply(input)) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: flat });
}

function movingStats(model: tf.LayersModel): { mean: number[]; variance: number[] } {
  const weights = model.layers[1].getWeights();
  return {
    mean: Array.from(weights[2].dataSync()),
    variance: Array.from(weights[3].dataSync()),
  };
}

describe('BatchNorm statistics', () => {
  test('re-estimation sets the moving statistics to the average of the batch statistics', async () => {
    const model = bnModel();
    const x = tf.randomNormal([8, 2, 2, 3], 2, 3, 'float32', 7);
    await recalibrateBatchNorm(model, x, 4);
    const expected = tf.tidy(() => {
      const halves = [x.slice(0, 4), x.slice(4, 4)].map((h) => tf.moments(h, [0, 1, 2]));
      return {
        mean: Array.from(halves[0].mean.add(halves[1].mean).div(2).dataSync()),
        variance: Array.from(halves[0].variance.add(halves[1].variance).div(2).dataSync()),
      };
    });
    const got = movingStats(model);
    got.mean.forEach((m, i) => assert.ok(Math.abs(m - expected.mean[i]) < 1e-4, `mean ${i}`));
    got.variance.forEach((v, i) => assert.ok(Math.abs(v - expected.variance[i]) < 1e-3, `var ${i}`));
    // The layers are themselves again: predict() uses the moving statistics.
    assert.ok(!Object.prototype.hasOwnProperty.call(model.layers[1], 'call'));
    assert.equal((model.layers[1] as unknown as { momentum: number }).momentum, 0.99);
    x.dispose();
    model.dispose();
  });

  test('evaluating with batch statistics leaves the moving statistics as they were', async () => {
    const input = tf.input({ shape: [2, 2, 3] });
    const bn = tf.layers.batchNormalization({ axis: 3 }).apply(input);
    const pooled = tf.layers.globalAveragePooling2d({}).apply(bn);
    const out = tf.layers.dense({ units: 3, activation: 'softmax' }).apply(pooled) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    const before = movingStats(model);
    const x = tf.randomNormal([6, 2, 2, 3], 5, 2, 'float32', 3);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], 'int32'), 3);
    const e = await evaluateWithBatchStatistics(model, x, y, 3);
    assert.equal(e.total, 6);
    assert.deepEqual(movingStats(model), before);
    tf.dispose([x, y]);
    model.dispose();
  });

  test('momentum is set on every BatchNorm layer, and checked', () => {
    const model = bnModel();
    setBatchNormMomentum(model, 0.9);
    assert.equal((model.layers[1] as unknown as { momentum: number }).momentum, 0.9);
    assert.throws(() => setBatchNormMomentum(model, 1), /`momentum` must be a number in \[0, 1\)/);
    model.dispose();
  });
});

describe('recipes', () => {
  test('the course recipe is the course: constant 0.00015, batch 32, 10 epochs, momentum 0.99', () => {
    const c = RECIPES.course;
    assert.deepEqual(
      [c.learningRate, c.batchSize, c.epochs, c.batchNormMomentum, c.augment, c.labelSmoothing],
      [0.00015, 32, 10, 0.99, false, 0],
    );
    const lr = learningRateSchedule(c, 340);
    assert.equal(lr(0), 0.00015);
    assert.equal(lr(339), 0.00015);
  });

  test('the cosine schedule warms up, peaks and decays to near zero', () => {
    const r = { ...RECIPES.improved, learningRate: 0.001, warmupFraction: 0.1 };
    const lr = learningRateSchedule(r, 100);
    assert.ok(lr(0) < lr(5) && lr(5) < lr(9));
    assert.ok(Math.abs(lr(10) - 0.001) < 1e-12);
    assert.ok(lr(99) < 1e-5);
  });

  test("the course recipe leaves the network as built; the improved one zeroes the blocks' last scales", () => {
    assert.equal(RECIPES.course.zeroResidualGamma, false);
    assert.equal(RECIPES.improved.zeroResidualGamma, true);
    const model = ResNet50({ seed: 0 });
    const gammas = () => new Map(model.layers
      .filter((l) => l.getClassName() === 'BatchNormalization')
      .map((l) => [l.name, Array.from(l.getWeights()[0].dataSync())]));
    const before = gammas();
    assert.equal(zeroResidualGamma(model), 16, 'ResNet50 has 16 residual blocks');
    for (const [name, after] of gammas()) {
      if (/_3_bn$/.test(name)) assert.ok(after.every((g) => g === 0), `${name} is zeroed`);
      else assert.deepEqual(after, before.get(name), `${name} is left alone`);
    }
    // An identity block whose last scale is zero passes its input through the
    // shortcut alone (its input is already a ReLU output, and beta is zero).
    const block = model.getLayer('conv2_block2_out');
    const inputOf = tf.model({ inputs: model.inputs, outputs: model.getLayer('conv2_block1_out').output });
    const outputOf = tf.model({ inputs: model.inputs, outputs: block.output });
    const x = tf.randomUniform([2, 64, 64, 3], 0, 1, 'float32', 3);
    const [a, b] = [inputOf.predict(x) as tf.Tensor, outputOf.predict(x) as tf.Tensor];
    assert.ok(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] < 1e-6, 'block output equals its input');
    tf.dispose([x, a, b]);
    model.dispose();
    const plain = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3] })] });
    assert.throws(() => zeroResidualGamma(plain), /ResNet built by ResNet50\(\)/);
  });

  test('the improved recipe is the default', () => {
    assert.equal(parseRecipeName(undefined), 'improved');
    assert.equal(parseRecipeName('course'), 'course');
  });

  test('an unknown recipe names the allowed ones', () => {
    assert.throws(() => parseRecipeName('fast'), /`--recipe` must be one of course, improved; received "fast"/);
  });
});

describe('augmentation', () => {
  test('keeps shape and range, and the same seed gives the same images', () => {
    const x = tf.randomUniform([4, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const a = augmentBatch(x, 42);
    const b = augmentBatch(x, 42);
    const c = augmentBatch(x, 43);
    assert.deepEqual(a.shape, x.shape);
    assert.ok(a.min().dataSync()[0] >= 0 && a.max().dataSync()[0] <= 1);
    assert.equal(tf.abs(a.sub(b)).max().dataSync()[0], 0);
    assert.ok(tf.abs(a.sub(c)).max().dataSync()[0] > 0);
    assert.ok(tf.abs(a.sub(x)).max().dataSync()[0] > 0, 'it changes the images');
    tf.dispose([x, a, b, c]);
  });
});

describe('saved runs', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'resnet-runs-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  function fakeRun(name: string, run: Record<string, unknown>, withModel = true) {
    const dir = path.join(root, name);
    mkdirSync(path.join(dir, 'model'), { recursive: true });
    writeFileSync(path.join(dir, 'run.json'), JSON.stringify(run));
    writeFileSync(path.join(dir, 'history.json'), JSON.stringify({ epochs: [], interrupted: false }));
    if (withModel) writeFileSync(path.join(dir, 'model', 'model.json'), '{}');
  }

  test('the newest complete run wins; quick, interrupted and model-less runs do not count', () => {
    assert.equal(findNewestRun(path.join(root, 'none')), undefined);
    const whole = { epochs: 10, epochsDone: 10, limit: null, interrupted: false };
    fakeRun('old', { ...whole, recipe: 'improved', finished: '2026-01-01T00:00:00Z' });
    fakeRun('new', { ...whole, recipe: 'course', finished: '2026-02-01T00:00:00Z' });
    fakeRun('quick', { ...whole, limit: 64, finished: '2026-03-01T00:00:00Z' });
    fakeRun('cut', { ...whole, epochsDone: 4, interrupted: true, finished: '2026-03-02T00:00:00Z' });
    fakeRun('nomodel', { ...whole, finished: '2026-03-03T00:00:00Z' }, false);
    assert.equal(path.basename(findNewestRun(root)!.dir), 'new');
    assert.equal(path.basename(findNewestRun(root, 'course')!.dir), 'new');
    assert.equal(path.basename(findNewestRun(root, 'improved')!.dir), 'old');
    assert.equal(findNewestRun(root, 'other'), undefined);
  });
});
