import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { initBackend } from '../src/backend/index.js';
import { ArgumentError } from '../src/errors.js';
import { loadLayerTableReference } from '../src/reference.js';
import { RESNET50_STAGES, ResNet50 } from '../src/resnet50.js';
import { compareLayerTable, layerTable, parameterCounts, printSummary } from '../src/summary.js';

before(async () => {
  await initBackend({ log: () => {} });
});

describe('ResNet50', () => {
  const reference = loadLayerTableReference();
  let model: tf.LayersModel;
  before(() => {
    model = ResNet50({ inputShape: [64, 64, 3], classes: 6 });
  });

  test('matches the reference layer table row for row', () => {
    assert.deepEqual(compareLayerTable(model, reference), []);
    assert.equal(layerTable(model).length, reference.layers.length);
  });

  test('has 23,600,006 parameters, 53,120 of them non-trainable', () => {
    assert.deepEqual(parameterCounts(model), {
      total: 23_600_006,
      trainable: 23_546_886,
      nonTrainable: 53_120,
    });
  });

  test('the comparison catches a different model', () => {
    const small = ResNet50({ inputShape: [64, 64, 3], classes: 5 });
    const messages = compareLayerTable(small, reference);
    assert.ok(messages.some((m) => /Dense.*\[null,5\]/.test(m)), messages.join('\n'));
    small.dispose();
  });

  test('names layers from stage, block and branch', () => {
    const names = new Set(model.layers.map((l) => l.name));
    for (const { stage, blocks } of RESNET50_STAGES) {
      assert.ok(names.has(`conv${stage}_block1_0_conv`), `stage ${stage} has a shortcut conv`);
      assert.ok(names.has(`conv${stage}_block${blocks}_out`));
      assert.ok(!names.has(`conv${stage}_block${blocks + 1}_out`));
    }
  });

  test('prints a Keras-style summary with the totals', () => {
    const lines: string[] = [];
    printSummary(model, (line) => lines.push(line));
    assert.equal(lines[0], 'Model: "ResNet50"');
    assert.ok(lines.includes('Total params: 23,600,006'));
    assert.ok(lines.includes('Non-trainable params: 53,120'));
    assert.ok(lines.some((l) => /^conv5_block3_out \(Activation\)\s+\(None, 2, 2, 2048\)/.test(l)));
  });

  test('predicts a probability distribution over the classes', () => {
    const probs = tf.tidy(() => model.predict(tf.zeros([2, 64, 64, 3])) as tf.Tensor);
    assert.deepEqual(probs.shape, [2, 6]);
    const sums = probs.sum(1).arraySync() as number[];
    sums.forEach((s) => assert.ok(Math.abs(s - 1) < 1e-5));
    probs.dispose();
  });

  test('rejects an input too small for its pooling, and a bad class count', () => {
    assert.throws(() => ResNet50({ inputShape: [32, 32, 3] }), (e: unknown) =>
      e instanceof ArgumentError && /`inputShape`.*\[32,32,3\]/.test(e.message));
    assert.throws(() => ResNet50({ classes: 0 }), (e: unknown) =>
      e instanceof ArgumentError && /`classes`/.test(e.message));
  });
});
