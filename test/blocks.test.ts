import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { convolutionalBlock, identityBlock } from '../src/blocks.js';
import { initBackend } from '../src/backend/index.js';
import { ArgumentError } from '../src/errors.js';
import { constantInitializer } from '../src/initializers.js';
import {
  BlockMode,
  compareWithReference,
  loadBlockReference,
  runBlockCase,
} from '../src/reference.js';

const reference = loadBlockReference();
const MODES: BlockMode[] = ['inference', 'training'];

before(async () => {
  await initBackend({ backend: process.env.RESNET_BACKEND ? undefined : 'wasm', log: () => {} });
});

describe('blocks against the reference tensors', () => {
  for (const c of reference.cases) {
    for (const mode of MODES) {
      test(`${c.name} (${c.block}, f=${c.f}, filters=${JSON.stringify(c.filters)}) in ${mode}`, () => {
        const before = tf.memory().numTensors;
        const out = runBlockCase(c, mode);
        // BatchNorm over a batch of 2 or 3 images amplifies float32 rounding
        // in training mode; the reference README allows rtol 1e-3 there.
        const tol = mode === 'training' ? { rtol: 1e-3, atol: 1e-5 } : { rtol: 1e-4, atol: 1e-5 };
        const result = compareWithReference(out, c.expected[mode], tol);
        out.dispose();
        assert.ok(result.ok, result.message);
        assert.equal(tf.memory().numTensors, before, 'the block left tensors behind');
      });
    }
  }
});

describe("the course's identity-block check", () => {
  for (const mode of MODES) {
    test(`constant ones, ${mode}`, () => {
      const spec = reference.course.cases[mode];
      const X = tf.tensor(reference.course.input as number[][][][]);
      const out = identityBlock(X, spec.f, spec.filters, {
        training: mode === 'training',
        initializer: constantInitializer(1),
      });
      const full = compareWithReference(out, spec.output, { rtol: 1e-4, atol: 1e-4 });
      assert.ok(full.ok, full.message);
      // The figure the course prints: the mean over channels of the first and
      // last rows.
      const summary = tf.tidy(() =>
        tf.stack([out.slice([0, 0], [-1, 1]), out.slice([0, out.shape[1]! - 1], [-1, 1])], 1)
          .squeeze([2])
          .mean(3),
      );
      const s = compareWithReference(summary, spec.summary, { rtol: 1e-4, atol: 1e-4 });
      assert.ok(s.ok, s.message);
      tf.dispose([X, out, summary]);
    });
  }
});

describe('shapes', () => {
  test('a symbolic input builds layers with the expected output shape', () => {
    const x = tf.input({ shape: [15, 15, 256] });
    assert.deepEqual(identityBlock(x, 3, [64, 64, 256]).shape, [null, 15, 15, 256]);
    assert.deepEqual(convolutionalBlock(x, 3, [128, 128, 512], 2).shape, [null, 8, 8, 512]);
    assert.deepEqual(convolutionalBlock(x, 3, [64, 64, 256], 1).shape, [null, 15, 15, 256]);
  });

  test('a concrete input returns a tensor and keeps the spatial size (f x f is same)', () => {
    const x = tf.randomNormal([1, 7, 7, 5], 0, 1, 'float32', 1);
    const y = identityBlock(x, 5, [2, 3, 5], { training: false });
    assert.ok(y instanceof tf.Tensor);
    assert.deepEqual(y.shape, [1, 7, 7, 5]);
    assert.ok(y.min().arraySync() as number >= 0, 'the output of the final ReLU is non-negative');
    tf.dispose([x, y]);
  });
});

describe('wrong arguments name the argument, what was expected and what came', () => {
  const x = tf.zeros([1, 4, 4, 3]);
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['filters of two', () => identityBlock(x, 2, [4, 3]), /`filters`.*three positive integers.*\[4,3\]/],
    ['a zero filter', () => convolutionalBlock(x, 2, [4, 0, 3]), /`filters`.*\[4,0,3\]/],
    ['a fractional filter', () => identityBlock(x, 2, [4, 1.5, 3]), /`filters`/],
    ['F3 unlike the channels', () => identityBlock(x, 2, [4, 4, 8]), /`filters\[2\]`.*channels \(3\).*8/],
    ['f below 1', () => identityBlock(x, 0, [4, 4, 3]), /`f`.*at least 1.*0/],
    ['s below 1', () => convolutionalBlock(x, 2, [4, 4, 3], 0), /`s`.*at least 1.*0/],
    ['a 3-D tensor', () => identityBlock(tf.zeros([4, 4, 3]), 2, [4, 4, 3]), /`X`.*4-D.*\[4,4,3\]/],
    ['not a tensor', () => identityBlock([1, 2] as never, 2, [4, 4, 3]), /`X`.*tf\.Tensor/],
    [
      'training on a symbolic input',
      () => identityBlock(tf.input({ shape: [4, 4, 3] }), 2, [4, 4, 3], { training: true }),
      /`options\.training`.*symbolic/,
    ],
  ];
  test('a failure inside the block is the error you see, not a disposal error', () => {
    // int32 images are refused by BatchNorm; the layers after it never run.
    assert.throws(
      () => identityBlock(tf.zeros([1, 8, 8, 16], 'int32'), 3, [4, 4, 16]),
      (e: unknown) => !/Cannot dispose Layer/.test(String((e as Error).message)),
    );
  });
  for (const [what, call, pattern] of cases) {
    test(what, () => {
      assert.throws(call, (e: unknown) => e instanceof ArgumentError && pattern.test(e.message));
    });
  }
});
