/**
 * The course's reference material in `Requirements/reference/`: block
 * reference tensors, the ResNet50 layer table, and the comparison of a
 * tensor with a reference (shape first, then values with rtol and atol).
 */
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { convolutionalBlock, identityBlock } from './blocks.js';
import { DataError } from './errors.js';
import { kernelSequence } from './initializers.js';
import { findProjectRoot } from './paths.js';
import type { LayerTableReference } from './summary.js';

type Nested = number | Nested[];

/** One case of `blocks.json`: input, HWIO kernels, expected outputs. */
export interface BlockCase {
  name: string;
  block: 'identity' | 'convolutional';
  f: number;
  filters: [number, number, number];
  /** Stride of a convolutional block. */
  s?: number;
  input: Nested;
  kernels: Nested[];
  expected: { inference: Nested; training: Nested };
}

/** The course's own identity-block check: constant inputs, kernels of ones. */
export interface CourseCheck {
  name: string;
  input: Nested;
  cases: Record<
    'inference' | 'training',
    { f: number; filters: [number, number, number]; output: Nested; summary: Nested }
  >;
}

export interface BlockReference {
  about: string;
  cases: BlockCase[];
  course: CourseCheck;
}

/** `Requirements/reference/` of this project. */
export function referenceDir(): string {
  return path.join(findProjectRoot(), 'Requirements', 'reference');
}

function readJson<T>(file: string, what: string): T {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new DataError(
      `Cannot read the ${what} at ${file}: ${(error as Error).message}. ` +
        'It ships with the project in Requirements/reference/; restore it with `git checkout`.',
      file,
    );
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new DataError(`The ${what} at ${file} is not valid JSON: ${(error as Error).message}`, file);
  }
}

/** Reads the block reference tensors (defaults to the project's copy). */
export function loadBlockReference(file = path.join(referenceDir(), 'blocks.json')): BlockReference {
  const ref = readJson<BlockReference>(file, 'block reference tensors');
  if (!Array.isArray(ref.cases)) {
    throw new DataError(`${file} has no \`cases\` list; is it a blocks.json file?`, file);
  }
  return ref;
}

/** Reads the ResNet50 layer table (defaults to the project's copy). */
export function loadLayerTableReference(
  file = path.join(referenceDir(), 'resnet50-summary.json'),
): LayerTableReference {
  const ref = readJson<LayerTableReference>(file, 'ResNet50 layer table');
  if (!Array.isArray(ref.layers)) {
    throw new DataError(`${file} has no \`layers\` list; is it a layer-table file?`, file);
  }
  return ref;
}

export type BlockMode = 'inference' | 'training';

/** The graded functions, as a learner or the solution provides them. */
export interface BlockImplementations {
  identityBlock: typeof identityBlock;
  convolutionalBlock: typeof convolutionalBlock;
}

/**
 * Runs one reference case through a block implementation with the case's
 * kernels, on a fresh copy of its input, and returns the output.
 */
export function runBlockCase(
  c: BlockCase,
  mode: BlockMode,
  impl: BlockImplementations = { identityBlock, convolutionalBlock },
): tf.Tensor {
  const input = tf.tensor(c.input as number[], undefined, 'float32');
  const kernels = c.kernels.map((k) => tf.tensor(k as number[], undefined, 'float32'));
  try {
    const options = { training: mode === 'training', initializer: kernelSequence(kernels) };
    return c.block === 'identity'
      ? impl.identityBlock(input, c.f, c.filters, options)
      : impl.convolutionalBlock(input, c.f, c.filters, c.s ?? 2, options);
  } finally {
    input.dispose();
    kernels.forEach((k) => k.dispose());
  }
}

export interface Tolerance {
  rtol: number;
  atol: number;
}

/** The reference README's float32 tolerance. */
export const DEFAULT_TOLERANCE: Tolerance = { rtol: 1e-4, atol: 1e-5 };

export interface Comparison {
  ok: boolean;
  /** Empty when ok; otherwise what differs, where, and by how much. */
  message: string;
  /** Largest |actual - expected|, when the shapes agree. */
  maxAbsError?: number;
}

/**
 * Compares a tensor with expected values: the shape first, then every value
 * within `atol + rtol * |expected|`, as numpy's `allclose` does.
 */
export function compareWithReference(
  actual: tf.Tensor,
  expected: Nested,
  tolerance: Tolerance = DEFAULT_TOLERANCE,
): Comparison {
  const want = tf.tensor(expected as number[]);
  try {
    if (!tf.util.arraysEqual(actual.shape, want.shape)) {
      return {
        ok: false,
        message: `shape ${JSON.stringify(actual.shape)}, expected ${JSON.stringify(want.shape)}`,
      };
    }
    const a = actual.dataSync();
    const b = want.dataSync();
    let worst = -1;
    let worstExcess = 0;
    let maxAbs = 0;
    for (let i = 0; i < a.length; i++) {
      const diff = Math.abs(a[i] - b[i]);
      maxAbs = Math.max(maxAbs, Number.isNaN(diff) ? Infinity : diff);
      const excess = diff - (tolerance.atol + tolerance.rtol * Math.abs(b[i]));
      if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
        worst = i;
        worstExcess = Number.isNaN(excess) ? Infinity : excess;
      }
    }
    if (worst < 0) return { ok: true, message: '', maxAbsError: maxAbs };
    const index = unravel(worst, actual.shape);
    return {
      ok: false,
      maxAbsError: maxAbs,
      message:
        `value at ${JSON.stringify(index)} is ${a[worst]}, expected ${b[worst]} ` +
        `(|difference| ${Math.abs(a[worst] - b[worst]).toPrecision(3)}, ` +
        `allowed ${(tolerance.atol + tolerance.rtol * Math.abs(b[worst])).toPrecision(3)})`,
    };
  } finally {
    want.dispose();
  }
}

/** The multi-dimensional index of element `flat` of a tensor of `shape`. */
export function unravel(flat: number, shape: number[]): number[] {
  const index = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    index[d] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return index;
}
