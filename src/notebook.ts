/**
 * Small helpers the notebooks share: the quick-run switch, shape checks that
 * print one line, and training progress shown in place in a cell.
 *
 * The tslab kernel is looked up when first needed, so this module also loads
 * in tests and scripts, where only the display functions are unavailable.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { ArgumentError, DataError } from './errors.js';
import { findProjectRoot } from './paths.js';
import { epochLine, progressLine } from './progress.js';
import type { BatchProgress, EpochRecord } from './train.js';

/** The part of tslab's `Display` the notebooks use. */
export interface TextHtmlDisplay {
  html(html: string): void;
  text(text: string): void;
}

interface TslabModule {
  display: TextHtmlDisplay;
  newDisplay(): TextHtmlDisplay;
}

const NOT_IN_KERNEL =
  'this works inside the "TypeScript (resnet-ts)" notebook kernel only ' +
  '(register it with `bash scripts/setup.sh kernel`)';

function loadTslab(): TslabModule {
  // The kernel resolves `tslab` to its own instance, the one wired to
  // Jupyter; a plain require from the project root reaches the same file.
  const require = createRequire(path.join(findProjectRoot(), 'package.json'));
  try {
    return require('tslab') as TslabModule;
  } catch (error) {
    throw new DataError(`Cannot load tslab (${(error as Error).message}): ${NOT_IN_KERNEL}.`);
  }
}

/** Wraps a tslab display so that a call outside the kernel says what is wrong. */
function guarded(display: TextHtmlDisplay): TextHtmlDisplay {
  const call = (f: () => void) => {
    try {
      f();
    } catch (error) {
      throw new DataError(`tslab cannot display (${(error as Error).message}): ${NOT_IN_KERNEL}.`);
    }
  };
  return {
    html: (html) => call(() => display.html(html)),
    text: (text) => call(() => display.text(text)),
  };
}

/** tslab's display: each call adds one output to the running cell. */
export function tslabDisplay(): TextHtmlDisplay {
  return guarded(loadTslab().display);
}

/** A display entry of its own: each call replaces what it showed before. */
export function tslabNewDisplay(): TextHtmlDisplay {
  return guarded(loadTslab().newDisplay());
}

/**
 * Whether this is a quick run: `RESNET_QUICK` set to `1` (or `true`). The
 * notebooks then train on a few images for one epoch, to test that they run.
 */
export function isQuickRun(env: Record<string, string | undefined> = process.env): boolean {
  const value = (env.RESNET_QUICK ?? '').trim().toLowerCase();
  return value === '1' || value === 'true' || value === 'yes';
}

/** A tensor's shape as Python prints it, with None for an unknown batch. */
export function formatShape(shape: ReadonlyArray<number | null>): string {
  const items = shape.map((d) => (d === null ? 'None' : String(d)));
  return `(${items.join(', ')}${items.length === 1 ? ',' : ''})`;
}

/** A shape the text promised and the code did not give. */
export class ShapeError extends Error {
  override name = 'ShapeError';
}

/**
 * Checks a tensor's (or a symbolic tensor's, or a plain) shape against the
 * expected one, and prints one line; `null` in `expected` matches any size
 * (the batch of a symbolic tensor).
 *
 * @throws ShapeError naming both shapes when they differ.
 */
export function expectShape(
  label: string,
  actual: tf.Tensor | tf.SymbolicTensor | ReadonlyArray<number | null>,
  expected: ReadonlyArray<number | null>,
  print: (line: string) => void = (line) => console.log(line),
): void {
  if (!Array.isArray(expected)) {
    throw new ArgumentError('expected', 'an array of sizes', expected);
  }
  const shape: ReadonlyArray<number | null> =
    actual instanceof tf.Tensor || actual instanceof tf.SymbolicTensor
      ? (actual.shape as Array<number | null>)
      : actual;
  const same =
    shape.length === expected.length &&
    expected.every((d, i) => d === null || d === shape[i]);
  if (!same) {
    throw new ShapeError(
      `${label} has shape ${formatShape(shape)}; expected ${formatShape(expected)}. ` +
        'Check the strides, the padding and the filter counts.',
    );
  }
  print(`[shape] ${label}: ${formatShape(shape)}, as expected`);
}

/** One point of a training curve, recorded after every step. */
export interface StepPoint {
  /** Epochs done, fractional: 1.5 is half-way through the second epoch. */
  x: number;
  loss: number;
  accuracy: number;
}

/**
 * Training progress in a notebook cell: one line redrawn in place after
 * every step, one line printed per epoch, and every step's figures kept for
 * the curves. Pass `batch` and `epoch` as `train`'s `onBatch` and `onEpoch`.
 */
export class NotebookProgress {
  /** The running loss and accuracy after every step. */
  readonly steps: StepPoint[] = [];
  private bar: TextHtmlDisplay | undefined;

  constructor(
    private readonly print: (line: string) => void = (line) => console.log(line),
    private readonly makeBar: () => TextHtmlDisplay = tslabNewDisplay,
  ) {}

  /** Records a step and redraws the progress line. */
  readonly batch = (p: BatchProgress): void => {
    this.steps.push({ x: p.epoch - 1 + p.batch / p.batches, loss: p.loss, accuracy: p.accuracy });
    this.bar ??= this.makeBar();
    this.bar.text(progressLine(p));
  };

  /** Prints the epoch's line; the next step starts a new progress line. */
  readonly epoch = (record: EpochRecord, epochs: number): void => {
    this.print(epochLine(record, epochs));
    this.bar = undefined;
  };
}

/** The accuracies `explainAccuracyGap` compares. */
export interface AccuracyFigures {
  /** Mean accuracy of the last training epoch (BatchNorm on batch statistics). */
  training: number;
  /** Accuracy on the same training images in inference mode (moving statistics). */
  trainingInference: number;
  /** Accuracy on the test images in inference mode. */
  test: number;
  /** Training steps taken, for the share of BatchNorm's starting values left. */
  steps: number;
  /** BatchNorm's momentum. Defaults to 0.99, TensorFlow.js's and Keras's default. */
  momentum?: number;
}

/**
 * One line reading the gap between training and test accuracy: none worth
 * naming; overfitting (the training images still score well in inference
 * mode); or inference mode itself (they do not: BatchNorm's moving averages
 * have not caught up with the statistics training used).
 */
export function explainAccuracyGap(f: AccuracyFigures): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  if (f.test >= f.training - 0.1) {
    return (
      `[diagnosis] test accuracy ${pct(f.test)} is no more than 10 points below the training ` +
      `accuracy ${pct(f.training)}: no sign of overfitting.`
    );
  }
  if (f.trainingInference < f.training - 0.2) {
    const left = Math.pow(f.momentum ?? 0.99, f.steps);
    return (
      `[diagnosis] the training images themselves score only ${pct(f.trainingInference)} in ` +
      `inference mode against ${pct(f.training)} while training, so the low test accuracy is ` +
      'not overfitting: inference mode is off. BatchNorm infers with moving averages of the ' +
      `batch statistics; after ${f.steps} steps they still hold ${pct(left)} of their ` +
      'starting values (mean 0, variance 1), a large error where the real variances are ' +
      'small, and they trail weights that are still changing. More steps, a lower momentum, ' +
      'or recomputing the statistics with the final weights would close the gap.'
    );
  }
  return (
    `[diagnosis] the training images score ${pct(f.trainingInference)} in inference mode, ` +
    `close to ${pct(f.training)} while training, but the test images ${pct(f.test)}: ` +
    'the model has overfitted its training images.'
  );
}
