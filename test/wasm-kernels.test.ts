/**
 * The wasm training kernels against the plain CPU backend: the same inputs go
 * through each backend and the results must agree to a relative 1e-4, plus an
 * absolute 1e-5 times the largest reference magnitude for entries near zero
 * (sums of many float32 products cancel there, and the two backends add in
 * different orders).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import * as tf from '@tensorflow/tfjs';

import { initBackend } from '../src/backend/index.js';
import { registerWasmTrainingKernels } from '../src/backend/wasm-kernels.js';
import { assertCloseToCpu, Readback, sizeOf, values } from './helpers/seeded.js';

const assertClose = (label: string, actual: Readback, expected: Readback): void =>
  assertCloseToCpu(label, 'wasm', actual, expected, RTOL);

const RTOL = 1e-4;

type Pad = 'same' | 'valid' | number | [[0, 0], [number, number], [number, number], [0, 0]];

/** Runs `f` on a backend, on tensors made there from `inputs`, and reads the result. */
async function runOn(
  backend: 'cpu' | 'wasm',
  inputs: Array<{ shape: number[]; seed: number }>,
  f: (...xs: tf.Tensor[]) => tf.Tensor,
): Promise<{ shape: number[]; data: Float32Array }> {
  await tf.setBackend(backend);
  const xs = inputs.map(({ shape, seed }) => tf.tensor(values(sizeOf(shape), seed), shape));
  const y = f(...xs);
  const result = { shape: y.shape, data: (await y.data()) as Float32Array };
  tf.dispose([...xs, y]);
  return result;
}

/** Computes `f` on both backends from the same inputs and compares. */
async function agree(
  label: string,
  inputs: Array<{ shape: number[]; seed: number }>,
  f: (...xs: tf.Tensor[]) => tf.Tensor,
): Promise<void> {
  const expected = await runOn('cpu', inputs, f);
  const actual = await runOn('wasm', inputs, f);
  assertClose(label, actual, expected);
}

function convOutShape(x: number[], filter: number[], stride: number, pad: Pad): number[] {
  const info = tf.backend_util.computeConv2DInfo(
    x as [number, number, number, number],
    filter as [number, number, number, number],
    stride,
    1,
    pad,
  );
  return info.outShape;
}

interface ConvCase {
  x: number[];
  k: number;
  outChannels: number;
  stride: number;
  pad: Pad;
}

/** kernel sizes 1-7, strides 1-3, both paddings; odd sizes and channels not multiples of 4. */
function convCases(): ConvCase[] {
  const cases: ConvCase[] = [];
  for (const k of [1, 2, 3, 5, 7]) {
    for (const stride of [1, 2, 3]) {
      for (const pad of ['same', 'valid'] as const) {
        // Batch 1 with few channels (scalar gather path), batch 3 with 17
        // (block-copy path); spatial sizes odd and unequal.
        cases.push({ x: [1, 9, 11, 3], k, outChannels: 5, stride, pad });
        cases.push({ x: [3, 11, 9, 17], k, outChannels: 6, stride, pad });
      }
    }
  }
  // Explicit and numeric paddings, including one wider than the filter reach.
  const explicit: Pad = [[0, 0], [2, 1], [0, 3], [0, 0]];
  cases.push({ x: [2, 10, 7, 5], k: 3, outChannels: 7, stride: 2, pad: explicit });
  cases.push({ x: [2, 8, 8, 6], k: 1, outChannels: 3, stride: 2, pad: 1 });
  cases.push({ x: [2, 8, 9, 6], k: 5, outChannels: 3, stride: 3, pad: 2 });
  return cases;
}

function caseName({ x, k, outChannels, stride, pad }: ConvCase): string {
  const filter = `${k}x${k}x${outChannels}`;
  return `x ${JSON.stringify(x)}, ${filter}, stride ${stride}, pad ${JSON.stringify(pad)}`;
}

before(async () => {
  await initBackend({ backend: 'wasm', log: () => {} });
});

describe('wasm training kernels', () => {
  it('registers idempotently', () => {
    const kernel = tf.getKernel('Conv2DBackpropFilter', 'wasm');
    assert.ok(kernel, 'Conv2DBackpropFilter should be registered on wasm');
    registerWasmTrainingKernels();
    assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm')?.kernelFunc, kernel.kernelFunc);
  });

  it('Conv2DBackpropFilter matches the CPU backend', async () => {
    for (const c of convCases()) {
      const filterShape = [c.k, c.k, c.x[3], c.outChannels] as [number, number, number, number];
      const dyShape = convOutShape(c.x, filterShape, c.stride, c.pad);
      await agree(`Conv2DBackpropFilter, ${caseName(c)}`, [
        { shape: c.x, seed: 1 },
        { shape: dyShape, seed: 2 },
      ], (x, dy) => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, {
        strides: c.stride, pad: c.pad, dataFormat: 'NHWC', filterShape,
      }) as tf.Tensor);
    }
  });

  it('Conv2DBackpropInput matches the CPU backend', async () => {
    for (const c of convCases()) {
      const filterShape = [c.k, c.k, c.x[3], c.outChannels];
      const dyShape = convOutShape(c.x, filterShape, c.stride, c.pad);
      const xShape = c.x as [number, number, number, number];
      await agree(`Conv2DBackpropInput, ${caseName(c)}`, [
        { shape: dyShape, seed: 3 },
        { shape: filterShape, seed: 4 },
      ], (dy, filter) => tf.conv2dTranspose(
        dy as tf.Tensor4D, filter as tf.Tensor4D, xShape, c.stride, c.pad as 'same'));
    }
  });

  it('gradients of a strided convolution through tf.grads and tf.variableGrads', async () => {
    const x = { shape: [2, 13, 11, 7], seed: 5 };
    const w = { shape: [3, 3, 7, 9], seed: 6 };
    const loss = (xt: tf.Tensor, wt: tf.Tensor) =>
      tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, 2, 'same').square().sum();
    for (const which of [0, 1]) {
      await agree(`grad of conv2d with respect to input ${which}`, [x, w], (xt, wt) =>
        tf.grads(loss)([xt, wt])[which]);
    }
    await agree('variableGrads of conv2d', [x, w], (xt, wt) => {
      const v = tf.variable(wt);
      const { grads } = tf.variableGrads(() => loss(xt, v) as tf.Scalar, [v]);
      const g = tf.clone(grads[v.name]);
      tf.dispose([v, grads[v.name]]);
      return g;
    });
  });

  it('BatchMatMul with transposed operands matches the CPU backend', async () => {
    const cases: Array<[number[], number[], boolean, boolean]> = [
      [[37, 19], [37, 23], true, false],
      [[19, 37], [23, 37], false, true],
      [[37, 19], [23, 37], true, true],
      [[3, 37, 19], [3, 23, 37], true, true],
      // Large enough per batch entry for one XNNPACK product per entry.
      [[3, 70, 65], [3, 70, 66], true, false],
      [[2, 65, 70], [1, 70, 66], false, false],
      [[1, 65, 70], [4, 66, 70], false, true],
    ];
    for (const [aShape, bShape, ta, tb] of cases) {
      await agree(`matMul ${JSON.stringify(aShape)} x ${JSON.stringify(bShape)}, ` +
        `transposeA ${ta}, transposeB ${tb}`, [
        { shape: aShape, seed: 7 },
        { shape: bShape, seed: 8 },
      ], (a, b) => tf.matMul(a, b, ta, tb));
    }
    await agree('fused matMul with transposes, bias and relu', [
      { shape: [29, 17], seed: 9 },
      { shape: [13, 29], seed: 10 },
      { shape: [13], seed: 11 },
    ], (a, b, bias) =>
      tf.fused.matMul({ a, b, transposeA: true, transposeB: true, bias, activation: 'relu' }));
  });

  it('Tile, Sum, Mean and Identity match the CPU backend', async () => {
    const tiles: Array<[number[], number[]]> = [
      [[1, 1, 1, 5], [2, 3, 4, 1]],
      [[2, 3], [3, 2]],
      [[3, 1, 2], [1, 4, 1]],
      [[2, 2, 3], [1, 1, 1]],
    ];
    for (const [shape, reps] of tiles) {
      await agree(`tile ${JSON.stringify(shape)} by ${JSON.stringify(reps)}`, [{ shape, seed: 12 }],
        (x) => tf.tile(x, reps));
    }
    const reductions: Array<[number[], number[]]> = [
      [[4, 3, 5, 6], [0, 1, 2]],
      [[4, 3, 5, 6], [0]],
      [[4, 3, 5, 6], [1, 2]],
      [[7, 9], [0, 1]],
      [[7, 9], [0]],
    ];
    for (const [shape, axes] of reductions) {
      const what = `${JSON.stringify(shape)} over ${JSON.stringify(axes)}`;
      await agree(`sum ${what}`, [{ shape, seed: 13 }], (x) => tf.sum(x, axes));
      await agree(`mean ${what}, keepDims`, [{ shape, seed: 14 }], (x) => tf.mean(x, axes, true));
    }
    await agree('identity', [{ shape: [3, 4], seed: 15 }], (x) => tf.clone(x));
  });

  it('rejects NCHW data with a clear error', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 2, 5, 5]);
    const dy = tf.zeros([1, 2, 5, 5]);
    assert.throws(
      () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, {
        strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [1, 1, 2, 2],
      }),
      /`Conv2DBackpropFilter: dataFormat` must be 'NHWC'.*received "NCHW"/,
    );
    tf.dispose([x, dy]);
  });

  it('leaks no tensors and no backend data', async () => {
    await tf.setBackend('wasm');
    const x = tf.tensor(values(2 * 9 * 9 * 6, 16), [2, 9, 9, 6]) as tf.Tensor4D;
    const w = tf.tensor(values(3 * 3 * 6 * 4, 17), [3, 3, 6, 4]) as tf.Tensor4D;
    const a = tf.tensor(values(3 * 70 * 65, 18), [3, 70, 65]);
    const step = () =>
      tf.tidy(() => {
        const [gx, gw] = tf.grads((xt: tf.Tensor, wt: tf.Tensor) =>
          tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, 2, 'same').sum())([x, w]);
        const m = tf.matMul(a, a, true, false).sum();
        const t = tf.tile(w, [1, 1, 1, 2]).mean([0, 1, 2]);
        return tf.addN([gx.sum(), gw.sum(), m, t.sum(), tf.clone(x).sum()]);
      });
    step().dispose();
    const tensors = tf.memory().numTensors;
    const dataIds = tf.engine().backend.numDataIds();
    for (let i = 0; i < 3; i++) step().dispose();
    assert.equal(tf.memory().numTensors, tensors, 'tensors leaked');
    assert.equal(tf.engine().backend.numDataIds(), dataIds, 'wasm backend data leaked');
    tf.dispose([x, w, a]);
  });
});
