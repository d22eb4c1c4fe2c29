/**
 * What the grader's live block (`variants.ts`, teacher side) and the learner
 * workspace's lookup share: the mistake switches, tensors from plain data,
 * the kernel shapes a block asks for, and the file of precomputed outputs.
 *
 * The learner workspace carries no working block: `npm run release:student`
 * runs the live block on every public case (the reference tensors, the
 * course's constant-ones check and the fresh inputs of a few fixed seeds),
 * once right and once per diagnosable mistake, and writes the outputs into
 * `Requirements/grader/expected.json.gz`. There `variants.ts` answers from
 * that file, found by a hash of the block's spec, mode, input and kernels.
 */
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

import { DataError } from '../errors.js';
import type { BlockSpec, TensorData } from './types.js';

/** One mistake or a combination; every field defaults to "done right". */
export interface Mistakes {
  /** The output is ReLU(main path): no shortcut at all. */
  noShortcut?: boolean;
  /** Each group applies ReLU before BatchNorm instead of after it. */
  reluBeforeBn?: boolean;
  /** A ReLU inside the convolutions (activation: 'relu' on Conv2D). */
  convRelu?: 'all' | 'main';
  /** The sum of the main path and the shortcut is returned without ReLU. */
  noFinalRelu?: boolean;
  /** No BatchNorm anywhere. */
  noBatchNorm?: boolean;
  /** BatchNorm normalises over this axis instead of the channels (3). */
  bnAxis?: number;
  /** BatchNorm runs in this mode whatever the block was asked for. */
  training?: boolean;
  /** Which main-path convolution carries the stride (0, the first, is right). */
  strideOn?: 0 | 1 | 2;
  /** The convolutional block's shortcut is the input itself. */
  noShortcutConv?: boolean;
  /** The convolutional block's shortcut convolution has no BatchNorm. */
  shortcutNoBn?: boolean;
}

/** A 4-D tensor from plain data (NHWC inputs, HWIO kernels). */
export function tensor4d(data: TensorData): tf.Tensor4D {
  return tf.tensor(data.values, data.shape, 'float32') as unknown as tf.Tensor4D;
}

/** The kernel shapes a block needs, in the order it asks for them. */
export function kernelShapes(spec: BlockSpec, channels: number): number[][] {
  const [F1, F2, F3] = spec.filters;
  const shapes = [
    [1, 1, channels, F1],
    [spec.f, spec.f, F1, F2],
    [1, 1, F2, F3],
  ];
  if (spec.block === 'convolutional') shapes.push([1, 1, channels, F3]);
  return shapes;
}

/** The seeds of the fresh inputs whose outputs a learner workspace carries. */
export const PUBLIC_SEEDS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7];

/** The precomputed outputs, relative to the project root. */
export const PRECOMPUTED_FILE = 'Requirements/grader/expected.json.gz';

/** The layout of `expected.json.gz`. */
export interface PrecomputedOutputs {
  version: 1;
  /** The fresh-input seeds covered, as `PUBLIC_SEEDS` was at release time. */
  seeds: number[];
  /** Distinct output tensors, each float32 value written just long enough to read back exactly. */
  tensors: TensorData[];
  /** `blockKey` → `mistakeKey` → index in `tensors`. A missing mistake cannot be computed. */
  blocks: Record<string, Record<string, number>>;
}

/**
 * Names one block computation: kind, kernel size, filters, stride (of a
 * convolutional block), mode, and the exact float32 bytes of the input and
 * kernels, hashed.
 */
export function blockKey(
  spec: BlockSpec,
  input: tf.Tensor,
  kernels: tf.Tensor[],
  training: boolean,
): string {
  const s = spec.block === 'convolutional' ? spec.s : 1;
  const mode = training ? 'training' : 'inference';
  const hash = createHash('sha256');
  hash.update([spec.block, spec.f, spec.filters.join('x'), s, mode].join('/'));
  for (const t of [input, ...kernels]) {
    const values = t.dataSync() as Float32Array;
    hash.update(`|${t.shape.join('x')}|`);
    hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }
  return hash.digest('hex').slice(0, 32);
}

/** Names a set of mistakes: its switches in a fixed order ('' for none). */
export function mistakeKey(mistakes: Mistakes = {}): string {
  return Object.entries(mistakes)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
}

/** The shortest decimal that reads back as the same float32. */
export function float32Text(value: number): number {
  const v = Math.fround(value);
  if (!Number.isFinite(v)) return v;
  for (let digits = 6; digits < 9; digits++) {
    const short = Number(v.toPrecision(digits));
    if (Math.fround(short) === v) return short;
  }
  return Number(v.toPrecision(9));
}

/**
 * Reads the precomputed outputs of the project at `root`.
 *
 * @throws DataError when the file is missing or not in the layout above.
 */
export function loadPrecomputed(root: string): PrecomputedOutputs {
  const file = path.join(root, PRECOMPUTED_FILE);
  if (!existsSync(file)) {
    throw new DataError(
      `${file} is missing: the checks of a learner workspace read their expected outputs ` +
        'from it. Regenerate the workspace with `npm run release:student -- OUT` in the ' +
        'solution repository.',
      file,
    );
  }
  let parsed: Partial<PrecomputedOutputs>;
  try {
    parsed = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8')) as PrecomputedOutputs;
  } catch (error) {
    throw new DataError(`${file} is not gzip'd JSON: ${(error as Error).message}`, file);
  }
  if (parsed.version !== 1 || !Array.isArray(parsed.tensors) || !parsed.blocks) {
    throw new DataError(
      `${file} must hold version 1 with \`tensors\` and \`blocks\`; received version ` +
        `${JSON.stringify(parsed.version)}. Regenerate the workspace.`,
      file,
    );
  }
  return parsed as PrecomputedOutputs;
}

/**
 * Looks a block computation up: the output tensor, or undefined when the
 * file has none for it (a mistake that cannot be computed, or a case that
 * was not precomputed).
 */
export function lookupBlock(
  outputs: PrecomputedOutputs,
  key: string,
  mistakes: Mistakes = {},
): tf.Tensor4D | undefined {
  const index = outputs.blocks[key]?.[mistakeKey(mistakes)];
  if (index === undefined) return undefined;
  return tensor4d(outputs.tensors[index]);
}
