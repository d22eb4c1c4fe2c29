/**
 * Training and evaluation: the course's recipe (Adam, categorical
 * cross-entropy, mini-batches of shuffled examples) with progress reported
 * per batch and per epoch, and a test-set evaluation with per-class figures.
 *
 * Every batch is cut, trained and freed inside the loop, so the number of
 * live tensors stays flat from step to step.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError, TrainingError } from './errors.js';
import { seededRandom } from './random.js';

export { seededRandom };

export interface TrainOptions {
  /** Passes over the training set. Defaults to 10, as the course. */
  epochs?: number;
  /** Examples per step. Defaults to 32. */
  batchSize?: number;
  /** Adam's learning rate. Defaults to 0.00015, as the course. */
  learningRate?: number;
  /** Seed of the order of examples in each epoch. Defaults to 0. */
  seed?: number;
  /** Called after every step with the running figures of the epoch. */
  onBatch?: (progress: BatchProgress) => void;
  /**
   * Called after every epoch, and awaited (a checkpoint can be written here
   * before the next epoch starts).
   */
  onEpoch?: (record: EpochRecord, history: History) => void | Promise<void>;
  /** Epochs already done (when resuming). Defaults to 0. */
  startEpoch?: number;
  /** The history of those epochs (when resuming). */
  history?: History;
  /** The learning rate of each step, 0-based over the whole run. Defaults to constant. */
  learningRateAt?: (step: number) => number;
  /** Makes an augmented copy of a batch; `seed` is fixed by run seed, epoch and step. */
  augment?: (x: tf.Tensor4D, seed: number) => tf.Tensor4D;
  /**
   * Asked before every step; returning true ends training after the step in
   * flight (the history then says `interrupted`). For Ctrl-C.
   */
  shouldStop?: () => boolean;
}

/** Defaults of the course's recipe. */
export const COURSE_RECIPE = { epochs: 10, batchSize: 32, learningRate: 0.00015 } as const;

export interface BatchProgress {
  epoch: number;
  epochs: number;
  /** Steps done in this epoch, 1-based. */
  batch: number;
  batches: number;
  /** Running means over the epoch so far, weighted by batch size. */
  loss: number;
  accuracy: number;
  imagesPerSecond: number;
  /** Seconds left in this epoch at the current speed. */
  etaSeconds: number;
}

export interface EpochRecord {
  epoch: number;
  loss: number;
  accuracy: number;
  seconds: number;
  imagesPerSecond: number;
}

export interface History {
  epochs: EpochRecord[];
  /** True when `shouldStop` ended training early. */
  interrupted: boolean;
  options: { epochs: number; batchSize: number; learningRate: number; seed: number };
}

/** A seeded permutation of 0..n-1 (Fisher–Yates). */
export function shuffledIndices(n: number, seed: number): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const random = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

function checkPositive(name: string, value: number, integer: boolean): void {
  const ok = Number.isFinite(value) && value > 0 && (!integer || Number.isInteger(value));
  if (!ok) {
    throw new ArgumentError(name, integer ? 'a positive integer' : 'a positive number', value);
  }
}

/** Compiles the model with Adam and categorical cross-entropy, tracking accuracy. */
export function compileForTraining(model: tf.LayersModel, learningRate: number): void {
  model.compile({
    optimizer: tf.train.adam(learningRate),
    loss: 'categoricalCrossentropy',
    metrics: ['accuracy'],
  });
}

/**
 * Trains `model` on images `x` [n, h, w, c] and one-hot labels `y` [n, classes].
 * Compiles the model with Adam at `learningRate` unless it is compiled already.
 *
 * @throws TrainingError when the loss becomes NaN or infinite.
 */
export async function train(
  model: tf.LayersModel,
  x: tf.Tensor,
  y: tf.Tensor,
  options: TrainOptions = {},
): Promise<History> {
  const {
    epochs = COURSE_RECIPE.epochs,
    batchSize = COURSE_RECIPE.batchSize,
    learningRate = COURSE_RECIPE.learningRate,
    seed = 0,
  } = options;
  checkPositive('epochs', epochs, true);
  checkPositive('batchSize', batchSize, true);
  checkPositive('learningRate', learningRate, false);
  if (x.shape[0] !== y.shape[0]) {
    throw new ArgumentError(
      'y',
      `one label row per image (${x.shape[0]} rows)`,
      `a tensor of shape ${JSON.stringify(y.shape)}`,
    );
  }
  if (!model.optimizer) compileForTraining(model, learningRate);
  const startEpoch = options.startEpoch ?? 0;
  if (!(Number.isInteger(startEpoch) && startEpoch >= 0 && startEpoch <= epochs)) {
    throw new ArgumentError('startEpoch', `an integer from 0 to ${epochs}`, startEpoch);
  }

  const n = x.shape[0];
  const batches = Math.ceil(n / batchSize);
  const history: History = options.history
    ? { ...options.history, epochs: [...options.history.epochs], interrupted: false }
    : { epochs: [], interrupted: false, options: { epochs, batchSize, learningRate, seed } };
  const optimizer = model.optimizer as unknown as { learningRate: number };

  for (let epoch = startEpoch + 1; epoch <= epochs; epoch++) {
    // A new order every epoch, reproducible from the seed alone.
    const order = shuffledIndices(n, seed * 1000 + epoch);
    const start = performance.now();
    let seen = 0;
    let lossSum = 0;
    let correctSum = 0;

    for (let b = 0; b < batches; b++) {
      // A step on the WebAssembly or CPU backend settles its promises as
      // microtasks, which never let the event loop run: yield once per step
      // so that signals (Ctrl-C), timers and output get their turn.
      await new Promise((resolve) => setImmediate(resolve));
      if (options.shouldStop?.()) {
        history.interrupted = true;
        return history;
      }
      const idx = order.subarray(b * batchSize, Math.min(n, (b + 1) * batchSize));
      const step = (epoch - 1) * batches + b;
      const [xb, yb] = tf.tidy(() => {
        const indices = tf.tensor1d(idx, 'int32');
        const images = tf.gather(x, indices) as tf.Tensor4D;
        return [options.augment ? options.augment(images, seed * 1_000_003 + step) : images, tf.gather(y, indices)];
      });
      // Adam reads its learning rate at every step, so a schedule is a plain
      // assignment before it.
      if (options.learningRateAt) optimizer.learningRate = options.learningRateAt(step);
      let result: number | number[];
      try {
        result = await model.trainOnBatch(xb, yb);
      } finally {
        tf.dispose([xb, yb]);
      }
      const [loss, accuracy] = result as number[];
      if (!Number.isFinite(loss)) {
        throw new TrainingError(
          `The loss became ${loss} at epoch ${epoch}, step ${b + 1}: training diverged. ` +
            'Lower the learning rate (--learning-rate) and start again.',
        );
      }
      seen += idx.length;
      lossSum += loss * idx.length;
      correctSum += accuracy * idx.length;
      const seconds = (performance.now() - start) / 1000;
      const imagesPerSecond = seen / seconds;
      options.onBatch?.({
        epoch,
        epochs,
        batch: b + 1,
        batches,
        loss: lossSum / seen,
        accuracy: correctSum / seen,
        imagesPerSecond,
        etaSeconds: (n - seen) / imagesPerSecond,
      });
    }

    const seconds = (performance.now() - start) / 1000;
    const record: EpochRecord = {
      epoch,
      loss: lossSum / seen,
      accuracy: correctSum / seen,
      seconds,
      imagesPerSecond: seen / seconds,
    };
    history.epochs.push(record);
    await options.onEpoch?.(record, history);
  }
  return history;
}

export interface Evaluation {
  /** Mean categorical cross-entropy. */
  loss: number;
  accuracy: number;
  correct: number;
  total: number;
  /** Accuracy of each true class (NaN for a class with no examples). */
  perClass: number[];
  /** confusion[true][predicted] counts. */
  confusion: number[][];
  /** The predicted class of every example. */
  predictions: Int32Array;
}

/**
 * Evaluates `model` in inference mode (BatchNorm's moving statistics) on
 * images `x` and one-hot labels `y`, in batches.
 */
export async function evaluate(
  model: tf.LayersModel,
  x: tf.Tensor,
  y: tf.Tensor,
  options: { batchSize?: number } = {},
): Promise<Evaluation> {
  const batchSize = options.batchSize ?? COURSE_RECIPE.batchSize;
  checkPositive('batchSize', batchSize, true);
  const n = x.shape[0];
  const classes = y.shape[1] ?? 0;
  const predictions = new Int32Array(n);
  const truth = new Int32Array(n);
  let lossSum = 0;

  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    const [loss, predicted, actual] = tf.tidy(() => {
      const xb = x.slice(start, size);
      const yb = y.slice(start, size);
      const probs = model.predict(xb) as tf.Tensor;
      const clipped = probs.clipByValue(1e-7, 1 - 1e-7);
      const ce = tf.neg(tf.sum(tf.mul(yb, tf.log(clipped)), 1)).sum();
      return [ce, probs.argMax(1), yb.argMax(1)];
    });
    lossSum += (await loss.data())[0];
    predictions.set(await predicted.data(), start);
    truth.set(await actual.data(), start);
    tf.dispose([loss, predicted, actual]);
  }

  const confusion = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  let correct = 0;
  for (let i = 0; i < n; i++) {
    confusion[truth[i]][predictions[i]]++;
    if (truth[i] === predictions[i]) correct++;
  }
  const perClass = confusion.map((row, c) => {
    const count = row.reduce((a, b) => a + b, 0);
    return count === 0 ? NaN : row[c] / count;
  });
  return {
    loss: lossSum / n,
    accuracy: correct / n,
    correct,
    total: n,
    perClass,
    confusion,
    predictions,
  };
}
