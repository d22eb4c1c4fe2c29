import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { initBackend } from '../src/backend/index.js';
import {
  CHECKPOINT_DIR, findCheckpoint, readCheckpointState, restoreCheckpoint, writeCheckpoint,
} from '../src/checkpoint.js';
import { loadSigns, SignsData } from '../src/data/signs.js';
import { TrainingError } from '../src/errors.js';
import { writeFileAtomic } from '../src/io.js';
import { compileForRecipe, RECIPES, trainOptionsFor } from '../src/recipes.js';
import { ResNet50 } from '../src/resnet50.js';
import { History, train } from '../src/train.js';

const DATA = path.resolve('..', 'shared', 'datasets');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'resnet-ckpt-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let data: SignsData;
before(async () => {
  await initBackend({ log: () => {} });
  data = loadSigns(DATA, { trainLimit: 16, testLimit: 4 });
});
after(() => tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]));

// The improved recipe exercises every moving part: schedule, augmentation,
// label smoothing, zeroed residual scales and a BatchNorm momentum of its own.
const recipe = { ...RECIPES.improved, epochs: 3, batchSize: 8 };

function freshModel(): tf.LayersModel {
  const model = ResNet50({ seed: 3 });
  compileForRecipe(model, recipe);
  return model;
}

async function runEpochs(
  model: tf.LayersModel,
  runDir: string,
  options: { startEpoch?: number; history?: History; stopAfter?: number } = {},
): Promise<History> {
  let done = options.startEpoch ?? 0;
  return train(model, data.xTrain, data.yTrain, {
    ...trainOptionsFor(recipe, data.xTrain.shape[0]),
    seed: 5,
    startEpoch: options.startEpoch,
    history: options.history,
    onEpoch: async (record, history) => {
      await writeCheckpoint(runDir, model, { epoch: record.epoch, settings: {}, history });
      done = record.epoch;
    },
    shouldStop: () => options.stopAfter !== undefined && done >= options.stopAfter,
  });
}

function maxWeightDifference(a: tf.LayersModel, b: tf.LayersModel): number {
  return tf.tidy(() =>
    Math.max(
      ...a.weights.map((w, i) => tf.abs(w.read().sub(b.weights[i].read())).max().dataSync()[0]),
    ),
  );
}

describe('checkpoints and resume', () => {
  test('a run stopped after epoch 1 and resumed ends where the uninterrupted run ends', async () => {
    const whole = freshModel();
    const wholeHistory = await runEpochs(whole, path.join(tmp, 'whole'));

    const first = freshModel();
    const cut = await runEpochs(first, path.join(tmp, 'cut'), { stopAfter: 1 });
    assert.equal(cut.interrupted, true);
    assert.equal(cut.epochs.length, 1);
    first.dispose();

    // A new process would start from scratch: a new model, then the checkpoint.
    const resumed = freshModel();
    const state = await restoreCheckpoint(path.join(tmp, 'cut'), resumed);
    assert.equal(state.epoch, 1);
    const resumedHistory = await runEpochs(resumed, path.join(tmp, 'cut'), {
      startEpoch: state.epoch,
      history: state.history,
    });

    assert.equal(resumedHistory.epochs.length, 3);
    assert.equal(resumedHistory.interrupted, false);
    wholeHistory.epochs.forEach((e, i) => {
      const r = resumedHistory.epochs[i];
      assert.ok(Math.abs(e.loss - r.loss) <= 1e-5 * Math.abs(e.loss), `epoch ${i + 1}: ${e.loss} vs ${r.loss}`);
    });
    const diff = maxWeightDifference(whole, resumed);
    assert.ok(diff < 1e-5, `weights differ by up to ${diff}`);
    whole.dispose();
    resumed.dispose();
  });

  test('a crash mid-swap leaves a complete checkpoint that resume finds', () => {
    const run = path.join(tmp, 'cut');
    const epoch = readCheckpointState(run).epoch;
    // Crash while writing the next one: a partial folder beside the old.
    const crashed = path.join(tmp, 'crash-while-writing');
    cpSync(run, crashed, { recursive: true });
    mkdirSync(path.join(crashed, `${CHECKPOINT_DIR}.partial`));
    writeFileSync(path.join(crashed, `${CHECKPOINT_DIR}.partial`, 'weights.bin'), 'half');
    assert.equal(findCheckpoint(crashed), path.join(crashed, CHECKPOINT_DIR));
    assert.equal(readCheckpointState(crashed).epoch, epoch);
    // Crash between the two renames: only the old one is complete.
    const swapped = path.join(tmp, 'crash-between-renames');
    cpSync(run, swapped, { recursive: true });
    renameSync(path.join(swapped, CHECKPOINT_DIR), path.join(swapped, `${CHECKPOINT_DIR}.old`));
    assert.equal(findCheckpoint(swapped), path.join(swapped, `${CHECKPOINT_DIR}.old`));
    assert.equal(readCheckpointState(swapped).epoch, epoch);
  });

  test('a NaN loss stops training with a clear message and writes no checkpoint', async () => {
    const run = path.join(tmp, 'nan');
    const model = freshModel();
    const before = await runEpochs(model, run, { stopAfter: 1 });
    assert.equal(before.epochs.length, 1);
    // NaN labels make a NaN loss whatever the images (augmentation clips
    // images, which would hide NaN pixels).
    const poisoned = data.yTrain.mul(NaN);
    await assert.rejects(
      train(model, data.xTrain, poisoned, { ...trainOptionsFor(recipe, 16), startEpoch: 1 }),
      (e: unknown) => e instanceof TrainingError && /loss became NaN at epoch 2, step 1/.test(e.message),
    );
    assert.equal(readCheckpointState(run).epoch, 1, 'the last good checkpoint stays');
    poisoned.dispose();
    model.dispose();
  });

  test('no checkpoint: a clear message', () => {
    assert.throws(() => readCheckpointState(path.join(tmp, 'nothing')), /No checkpoint in .*nothing/);
  });
});

describe('writes that fail lose nothing', () => {
  test('a full disk: a clear message, and the previous file is intact', () => {
    const file = path.join(tmp, 'history.json');
    writeFileSync(file, 'previous');
    // Writes to /dev/full fail with ENOSPC, as on a full disk.
    symlinkSync('/dev/full', `${file}.tmp-${process.pid}`);
    assert.throws(
      () => writeFileAtomic(file, 'next'),
      (e: unknown) => e instanceof TrainingError && /disk is full.*Nothing earlier was lost/.test(e.message),
    );
    assert.equal(readFileSync(file, 'utf8'), 'previous');
    assert.ok(!existsSync(`${file}.tmp-${process.pid}`), 'the temporary file is cleaned up');
  });
});

function runCli(args: string[], killWhen?: (out: string) => boolean) {
  return new Promise<{ code: number | null; signal: string | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args]);
    let out = '';
    let killed = false;
    const take = (chunk: Buffer) => {
      out += chunk.toString();
      if (!killed && killWhen?.(out)) {
        killed = true;
        child.kill('SIGKILL');
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

describe('command line', () => {
  test('a run killed outright resumes with --resume and completes its epochs', async () => {
    const out = path.join(tmp, 'killed');
    const common = ['--data', DATA];
    const killed = await runCli(
      ['train', ...common, '--limit', '8', '--epochs', '3', '--batch-size', '4', '--seed', '2', '--out', out],
      (text) => /\[epoch 2\/3\] 1\/2/.test(text),
    );
    assert.equal(killed.signal, 'SIGKILL', killed.out);
    assert.equal(readCheckpointState(out).epoch, 1);

    const rejected = await runCli(['train', '--resume', out, '--epochs', '5']);
    assert.equal(rejected.code, 1);
    assert.match(rejected.out, /`--epochs` must be left out with --resume/);

    const resumed = await runCli(['train', ...common, '--resume', out]);
    assert.equal(resumed.code, 0, resumed.out);
    assert.match(resumed.out, /\[resume\] .*1 of 3 epochs done/);
    assert.doesNotMatch(resumed.out, /\[epoch 1\/3\] loss/);
    assert.match(resumed.out, /\[epoch 3\/3\] loss/);
    const run = JSON.parse(readFileSync(path.join(out, 'run.json'), 'utf8'));
    assert.equal(run.epochsDone, 3);
    assert.equal(run.resumedFromEpoch, 1);
    assert.equal(run.seed, 2);
  });

  test('an unwritable run folder fails before training starts', async () => {
    const blocker = path.join(tmp, 'a-file');
    writeFileSync(blocker, '');
    const result = await runCli(['train', '--data', DATA, '--limit', '4', '--out', path.join(blocker, 'run')]);
    assert.equal(result.code, 1);
    assert.match(result.out, /\[error\] Cannot write the run folder .*a-file\/run \(ENOTDIR\): choose another with --out/);
    assert.doesNotMatch(result.out, /\[epoch/);
  });
});
