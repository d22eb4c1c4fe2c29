/**
 * Checkpoints of a training run: the model's weights (BatchNorm's moving
 * statistics included), the optimizer's state, the epoch reached and the
 * history so far, enough for `--resume` to continue exactly where an
 * uninterrupted run would be.
 *
 * A checkpoint is a folder written whole under a temporary name and then
 * swapped in by renames, so a crash mid-write leaves the previous one intact.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';

import { DataError, TrainingError } from './errors.js';
import { writeFileAtomic } from './io.js';
import type { History } from './train.js';

export const CHECKPOINT_DIR = 'checkpoint';

/** What a checkpoint records besides tensors. */
export interface CheckpointState {
  /** Epochs completed. */
  epoch: number;
  /** The run's settings (recipe, seed, batch size, …), as the run started. */
  settings: Record<string, unknown>;
  history: History;
}

interface TensorSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
}

/**
 * Adam's running powers of beta1 and beta2. Its getWeights() leaves them out
 * and setWeights() recomputes them as powers, which differs from the running
 * product in the last bit; a resumed run must continue from the same bits to
 * retrace the uninterrupted one, so the checkpoint keeps them.
 */
const ADAM_POWERS = ['accBeta1', 'accBeta2'] as const;

type AdamInternals = Partial<Record<(typeof ADAM_POWERS)[number], tf.Variable>>;

/** Writes named tensors as one binary file and one JSON list of their specs. */
async function writeTensors(
  dir: string,
  stem: string,
  tensors: Array<{ name: string; tensor: tf.Tensor }>,
): Promise<void> {
  const specs: TensorSpec[] = [];
  const parts: Uint8Array[] = [];
  for (const { name, tensor } of tensors) {
    const dtype = tensor.dtype === 'int32' ? 'int32' : 'float32';
    const values = await tensor.data();
    const copy = dtype === 'int32' ? Int32Array.from(values) : Float32Array.from(values);
    specs.push({ name, shape: tensor.shape, dtype });
    parts.push(new Uint8Array(copy.buffer));
  }
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const blob = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    blob.set(p, offset);
    offset += p.byteLength;
  }
  writeFileAtomic(path.join(dir, `${stem}.bin`), blob);
  writeFileAtomic(path.join(dir, `${stem}.json`), JSON.stringify(specs));
}

function readTensors(dir: string, stem: string): Array<{ name: string; tensor: tf.Tensor }> {
  const specs = JSON.parse(readFileSync(path.join(dir, `${stem}.json`), 'utf8')) as TensorSpec[];
  const bytes = readFileSync(path.join(dir, `${stem}.bin`));
  let offset = bytes.byteOffset;
  return specs.map((spec) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const buffer = bytes.buffer.slice(offset, offset + size * 4);
    offset += size * 4;
    const values = spec.dtype === 'int32' ? new Int32Array(buffer) : new Float32Array(buffer);
    if (values.length !== size) {
      throw new DataError(`${path.join(dir, `${stem}.bin`)} is shorter than its list says.`);
    }
    return { name: spec.name, tensor: tf.tensor(values, spec.shape, spec.dtype) };
  });
}

/**
 * Writes a checkpoint of `model` and its optimizer into `<runDir>/checkpoint`,
 * replacing the previous one only once the new one is complete.
 *
 * @throws TrainingError when the disk is full or the folder is not writable;
 *   the previous checkpoint stays.
 */
export async function writeCheckpoint(
  runDir: string,
  model: tf.LayersModel,
  state: CheckpointState,
): Promise<void> {
  const final = path.join(runDir, CHECKPOINT_DIR);
  const partial = `${final}.partial`;
  const old = `${final}.old`;
  rmSync(partial, { recursive: true, force: true });
  try {
    mkdirSync(partial, { recursive: true });
    await writeTensors(
      partial,
      'weights',
      model.weights.map((w) => ({ name: w.originalName, tensor: w.read() })),
    );
    const optimizerWeights = model.optimizer ? await model.optimizer.getWeights() : [];
    const adam = (model.optimizer ?? {}) as unknown as AdamInternals;
    const powers = ADAM_POWERS.filter((p) => adam[p]).map((p) => ({
      name: `adam/${p}`,
      tensor: adam[p]!,
    }));
    try {
      await writeTensors(partial, 'optimizer', [...optimizerWeights, ...powers]);
    } finally {
      // getWeights makes a new tensor for the iteration count; the rest are
      // the optimizer's own variables, which stay.
      optimizerWeights.filter((w) => w.name === 'iter').forEach((w) => w.tensor.dispose());
    }
    // state.json last: a folder without it is not a checkpoint.
    writeFileAtomic(path.join(partial, 'state.json'), JSON.stringify(state, null, 2));

    rmSync(old, { recursive: true, force: true });
    if (existsSync(final)) renameSync(final, old);
    renameSync(partial, final);
    rmSync(old, { recursive: true, force: true });
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    if (error instanceof TrainingError) throw error;
    throw new TrainingError(
      `Could not write the checkpoint in ${runDir}: ${(error as Error).message}. ` +
        'The previous checkpoint, if any, is intact.',
    );
  }
}

/** The folder of the newest complete checkpoint of a run, if any. */
export function findCheckpoint(runDir: string): string | undefined {
  // `.old` is complete too: it is only there if a swap was cut short.
  for (const name of [CHECKPOINT_DIR, `${CHECKPOINT_DIR}.old`]) {
    const dir = path.join(runDir, name);
    if (existsSync(path.join(dir, 'state.json'))) return dir;
  }
  return undefined;
}

/** Reads a run's checkpoint state without touching tensors. */
export function readCheckpointState(runDir: string): CheckpointState {
  const dir = findCheckpoint(runDir);
  if (!dir) {
    throw new DataError(
      `No checkpoint in ${runDir}: a run writes one after each complete epoch, so this run ` +
        'either ended before its first epoch or is not a run folder. Start a new run instead.',
      runDir,
    );
  }
  return JSON.parse(readFileSync(path.join(dir, 'state.json'), 'utf8')) as CheckpointState;
}

/**
 * Loads a run's checkpoint into `model` (built with the same architecture)
 * and its compiled optimizer, and returns the checkpoint's state.
 *
 * @throws DataError when there is no checkpoint or it does not fit the model.
 */
export async function restoreCheckpoint(
  runDir: string,
  model: tf.LayersModel,
): Promise<CheckpointState> {
  const state = readCheckpointState(runDir);
  const dir = findCheckpoint(runDir)!;
  const weights = readTensors(dir, 'weights');
  try {
    if (weights.length !== model.weights.length) {
      throw new DataError(
        `The checkpoint in ${dir} holds ${weights.length} weights but the model has ` +
          `${model.weights.length}: it belongs to another model.`,
      );
    }
    model.weights.forEach((w, i) => {
      if (!tf.util.arraysEqual(w.shape as number[], weights[i].tensor.shape)) {
        throw new DataError(
          `Weight ${i} (${w.originalName}) has shape ${JSON.stringify(w.shape)} in the model ` +
            `but ${JSON.stringify(weights[i].tensor.shape)} in the checkpoint ${dir}.`,
        );
      }
      w.write(weights[i].tensor);
    });
  } finally {
    weights.forEach((w) => w.tensor.dispose());
  }
  if (model.optimizer) {
    const optimizer = readTensors(dir, 'optimizer');
    try {
      const powers = optimizer.filter((w) => w.name.startsWith('adam/'));
      const weights = optimizer.filter((w) => !w.name.startsWith('adam/'));
      if (weights.length > 0) await model.optimizer.setWeights(weights);
      const adam = model.optimizer as unknown as AdamInternals;
      for (const { name, tensor } of powers) adam[name.slice('adam/'.length) as keyof AdamInternals]?.assign(tensor);
    } finally {
      optimizer.forEach((w) => w.tensor.dispose());
    }
  }
  return state;
}
