/**
 * The `onednn` backend: native CPU speed without libtensorflow.
 *
 * A TensorFlow.js backend that is the plain JavaScript CPU backend
 * (`MathBackendCPU`: same tensor storage, every one of its kernels) with the
 * kernels that dominate a ResNet training step replaced by a Node addon on
 * oneDNN (`native/`, built by `npm run build:native`): convolutions and both
 * of their gradients, matrix products, pooling and its gradients, BatchNorm,
 * ReLU, the broadcasting element-wise arithmetic and sums (see
 * `onednn-kernels.ts`). oneDNN and the addon's loops run on OpenMP threads,
 * all cores by default; `RESNET_ONEDNN_THREADS` (or `OMP_NUM_THREADS`) sets
 * how many, and idle threads sleep (`OMP_WAIT_POLICY`, default PASSIVE
 * here). The gradients of 3×3 convolutions run Winograd where oneDNN has it,
 * and bf16 is opt-in (see `configureOnednn`).
 *
 * Some training paths of TensorFlow.js do more work than a step needs: chains
 * of many small element-wise kernels, each a pass over memory and a
 * JavaScript allocation, or a gradient nobody reads. On this backend they are
 * replaced through hooks installed once and active only while `onednn` is
 * the current backend:
 *
 * - tf.layers' BatchNormalization in training mode (tf.moments, then
 *   tf.batchNorm, and the gradients of both) becomes one fused kernel with
 *   its own gradient. tfjs-layers is not modified: the layer class, found
 *   through TensorFlow.js's serialization registry, gets a `call` that takes
 *   the fused path in that one case and otherwise runs the original.
 * - ReLU's gradient (step, cast, multiply) becomes one kernel.
 * - tf.layers' Conv2D in training mode runs a convolution kernel whose
 *   gradient computes the input's part only when something needs it: the
 *   fused convolution TensorFlow.js uses computes it always, and for the
 *   first layer (7×7 over the images) that wasted pass cost about 4% of a
 *   ResNet50 step.
 * - `tf.train.adam`'s update (about fifteen element-wise ops per weight)
 *   becomes one in-place pass per variable.
 * - While a model's own training step, evaluation or prediction runs, a
 *   layer whose output only one layer reads may do that layer's work too
 *   (see "Fusing"): in inference a Conv2D folds in the BatchNorm after it
 *   (and the ReLU after that); in training a BatchNorm applies the ReLU
 *   after it. On this 2-core machine such element-wise passes are bound by
 *   memory bandwidth, so the saving is the pass itself.
 *
 * The addon runs 1×1 stride-1 convolutions as matrix products, and
 * convolutions with at most four output positions as one product per
 * filter tap (see native/src/addon.cc).
 */
import * as tf from '@tensorflow/tfjs';
import type { NamedAttrMap, NamedTensorMap, Tensor } from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

import { BackendError } from '../errors.js';
import { findProjectRoot } from '../paths.js';
import {
  BATCH_NORM_RELU_TRAINING,
  BATCH_NORM_TRAINING,
  BATCH_NORM_TRAINING_GRAD,
  CONV2D_BATCH_NORM,
  CONV2D_BIAS,
  MOVING_AVERAGES,
  nativeKernelConfigs,
  ONEDNN_BACKEND,
  OnednnAddon,
  RELU_GRAD,
} from './onednn-kernels.js';

export { ONEDNN_BACKEND, takeFallbackCounts } from './onednn-kernels.js';
export type { OnednnAddon } from './onednn-kernels.js';

/** Where `npm run build:native` puts the addon, from the project root. */
export const ADDON_RELATIVE_PATH = path.join('native', 'build', 'Release', 'onednn_backend.node');

/** How to build the addon, for messages. */
export const BUILD_HINT = 'build it with `bash scripts/setup.sh native` or `npm run build:native`';

let addon: OnednnAddon | undefined;

/**
 * Loads the native addon (once).
 *
 * @throws BackendError when it is not built or cannot load (oneDNN missing).
 */
export function loadOnednnAddon(): OnednnAddon {
  if (addon) return addon;
  const root = findProjectRoot();
  const file = path.join(root, ADDON_RELATIVE_PATH);
  if (!existsSync(file)) {
    throw new BackendError(
      `the oneDNN addon is not built (no ${ADDON_RELATIVE_PATH}); ${BUILD_HINT}`,
    );
  }
  const require = createRequire(path.join(root, 'package.json'));
  // OpenMP reads its settings when the addon pulls it in. Threads that sleep
  // at once when idle, rather than spin, keep a busy or shared machine (other
  // processes, V8's own threads) from stalling every parallel region on a
  // descheduled spinner: measured here under load, 2 threads trained 25 to 27
  // images/s passive against 13 to 23 spinning. OMP_WAIT_POLICY overrides.
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  try {
    addon = require(file) as OnednnAddon;
  } catch (error) {
    const why = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new BackendError(
      `the oneDNN addon at ${ADDON_RELATIVE_PATH} could not load (${why}); install ` +
        `libdnnl2 (Debian: apt-get install libdnnl-dev), then ${BUILD_HINT}`,
    );
  }
  const threads = process.env.RESNET_ONEDNN_THREADS;
  if (threads !== undefined && threads !== '') setOnednnThreads(Number(threads));
  addon.configure({
    winograd: process.env.RESNET_ONEDNN_WINOGRAD !== '0',
    bf16: process.env.RESNET_ONEDNN_BF16 === '1',
  });
  return addon;
}

/** How the addon runs convolutions (see `configureOnednn`). */
export interface OnednnConvOptions {
  /**
   * Winograd F(4×4, 3×3) for both gradients of 3×3 stride-1 layers whose
   * channels are multiples of 16: about twice as fast there, agreeing with
   * the direct algorithm to the kernel tests' 1e-4. Defaults to true
   * (`RESNET_ONEDNN_WINOGRAD=0` turns it off).
   */
  winograd?: boolean;
  /**
   * bfloat16 inputs for every convolution, f32 accumulation and outputs:
   * about twice as fast again on AVX-512 BF16 processors, at the price of
   * three significant digits in each convolution. Defaults to false
   * (`RESNET_ONEDNN_BF16=1` turns it on).
   */
  bf16?: boolean;
}

/**
 * Sets how convolutions run from now on; returns the settings in force.
 *
 * @throws BackendError when the addon cannot load.
 */
export function configureOnednn(options: OnednnConvOptions): Required<OnednnConvOptions> {
  return loadOnednnAddon().configure(options);
}

/** Whether the addon is built (it may still fail to load). */
export function isOnednnAddonBuilt(): boolean {
  try {
    return existsSync(path.join(findProjectRoot(), ADDON_RELATIVE_PATH));
  } catch {
    return false;
  }
}

/**
 * Sets how many threads oneDNN and the native kernels use.
 *
 * @throws BackendError when `threads` is not a positive integer.
 */
export function setOnednnThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new BackendError(
      `\`RESNET_ONEDNN_THREADS\` (or the thread count) must be a positive integer; ` +
        `received ${JSON.stringify(threads)}.`,
    );
  }
  loadOnednnAddon().setThreads(threads);
}

/** What the addon reports: oneDNN's version, its threads and the native memory it holds. */
export interface OnednnInfo {
  /** oneDNN's version, e.g. `2.6.3`. */
  version: string;
  /** OpenMP threads in use. */
  threads: number;
  /** Bytes of native memory the addon holds (scratchpad, reordered weights, workspaces). */
  bytes: number;
  /** How many native buffers those bytes are in. */
  buffers: number;
  /** oneDNN primitives built and cached (one per kernel and shape). */
  primitives: number;
}

/** Reports the addon's state; its `bytes` must stop growing after the first step. */
export function onednnInfo(): OnednnInfo {
  return loadOnednnAddon().info();
}

/**
 * The pool of the active `onednn` backend (see `OnednnBackend`).
 *
 * @throws BackendError when `onednn` is not the active backend.
 */
export function onednnPoolInfo(): OnednnPoolInfo {
  return activeOnednn('onednnPoolInfo').poolInfo();
}

/**
 * Releases the idle buffers of the active `onednn` backend's pool, which
 * otherwise stay for the next step of the same shapes.
 *
 * @throws BackendError when `onednn` is not the active backend.
 */
export function trimOnednnPool(): void {
  activeOnednn('trimOnednnPool').trimPool();
}

function activeOnednn(caller: string): OnednnBackend {
  const backend = tf.backend();
  if (!(backend instanceof OnednnBackend)) {
    throw new BackendError(`${caller}: the active backend is '${tf.getBackend()}', not onednn`);
  }
  return backend;
}

/** The most bytes of idle arrays the pool keeps (`RESNET_ONEDNN_POOL_MB`, default 4096). */
const POOL_LIMIT_BYTES = Number(process.env.RESNET_ONEDNN_POOL_MB ?? 4096) * 2 ** 20;

type BackendValues = tf.backend_util.BackendValues;
type DataId = object;

/** How much memory the backend's pool of output arrays holds. */
export interface OnednnPoolInfo {
  /** Bytes of all pooled arrays, in use or idle. */
  bytes: number;
  /** Bytes of the idle ones, waiting for a tensor of their size. */
  idleBytes: number;
}

/**
 * The backend: the CPU backend's storage and kernels, with native kernels
 * registered over the heavy ones under the name `onednn`.
 *
 * Its native kernels take their outputs from a pool of ArrayBuffers, reused
 * by exact size. A training step allocates gigabytes of tensors, all of the
 * same sizes as in the step before; fresh JavaScript arrays would cost a
 * page fault per 4 KiB and a zero fill each time, more than the arithmetic.
 * A buffer goes back to the pool when the last tensor whose values live in
 * it is disposed (views count: the CPU Slice kernel makes subarrays), and
 * reads hand out copies, so no array a caller keeps can change under it.
 */
export class OnednnBackend extends MathBackendCPU {
  /** Stamps of data whose values the addon may keep reordered (weights). */
  private readonly stamps = new WeakMap<DataId, number>();
  private nextStamp = 1;
  /** Derived stamps by the stamps they derive from, and the reverse. */
  private readonly derived = new Map<string, number>();
  private readonly derivedKey = new Map<number, string>();
  private readonly dependents = new Map<number, number[]>();
  private readonly idle = new Map<number, ArrayBuffer[]>();
  /** Pooled buffers, with how many data entries use each. */
  private readonly users = new Map<ArrayBuffer, number>();
  private pooledBytes = 0;
  private idleBytes = 0;

  constructor() {
    super();
    // The CPU backend greets its first tensor with advice to install
    // tfjs-node; that advice is wrong for this backend.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /** A float32 array of `length` elements for a new tensor, contents undefined. */
  allocateFloat32(length: number): Float32Array {
    const bytes = length * 4;
    const buffer = this.idle.get(bytes)?.pop();
    if (buffer !== undefined) {
      this.idleBytes -= bytes;
      this.users.set(buffer, 0);
      return new Float32Array(buffer);
    }
    const fresh = new ArrayBuffer(bytes);
    this.users.set(fresh, 0);
    this.pooledBytes += bytes;
    return new Float32Array(fresh);
  }

  /**
   * A stamp for the current values of `dataId`, the same at every call until
   * they may change (`valuesChanged`) or the data is disposed. Convolution
   * kernels pass it to the addon, which then reorders those weights once.
   */
  weightStamp(dataId: DataId): number {
    let stamp = this.stamps.get(dataId);
    if (stamp === undefined) this.stamps.set(dataId, (stamp = this.nextStamp++));
    return stamp;
  }

  /**
   * A stamp for values computed from those of all of `dataIds` (a filter with
   * a BatchNorm folded in): the same at every call until any of them changes.
   */
  derivedStamp(dataIds: DataId[]): number {
    const parts = dataIds.map((id) => this.weightStamp(id));
    const key = parts.join(',');
    let stamp = this.derived.get(key);
    if (stamp === undefined) {
      stamp = this.nextStamp++;
      this.derived.set(key, stamp);
      this.derivedKey.set(stamp, key);
      for (const part of parts) {
        const list = this.dependents.get(part);
        if (list === undefined) this.dependents.set(part, [stamp]);
        else list.push(stamp);
      }
    }
    return stamp;
  }

  /** Says that the values of `dataId` changed in place (or are going): its stamp ends. */
  valuesChanged(dataId: DataId): void {
    const stamp = this.stamps.get(dataId);
    if (stamp === undefined) return;
    this.stamps.delete(dataId);
    const native = loadOnednnAddon();
    native.forgetWeights(stamp);
    // And so do the stamps derived from it.
    for (const derived of this.dependents.get(stamp) ?? []) {
      const key = this.derivedKey.get(derived);
      if (key === undefined) continue; // already ended through another part
      this.derived.delete(key);
      this.derivedKey.delete(derived);
      native.forgetWeights(derived);
    }
    this.dependents.delete(stamp);
  }

  /** The pool's size. */
  poolInfo(): OnednnPoolInfo {
    return { bytes: this.pooledBytes, idleBytes: this.idleBytes };
  }

  /** Lets the garbage collector have the idle buffers (after training, say). */
  trimPool(): void {
    this.pooledBytes -= this.idleBytes;
    this.idleBytes = 0;
    this.idle.clear();
  }

  override write(values: BackendValues, shape: number[], dtype: tf.DataType): DataId {
    const id = super.write(values, shape, dtype);
    this.track(values, 1);
    return id;
  }

  override move(
    dataId: DataId,
    values: BackendValues,
    shape: number[],
    dtype: tf.DataType,
    refCount: number,
  ): void {
    this.valuesChanged(dataId);
    super.move(dataId, values, shape, dtype, refCount);
    this.track(values, 1);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const values = this.data.get(dataId)?.values;
    const released = super.disposeData(dataId, force);
    if (values !== undefined && !this.data.has(dataId)) {
      this.track(values, -1);
      this.valuesChanged(dataId);
    }
    return released;
  }

  override readSync(dataId: DataId): BackendValues {
    const values = super.readSync(dataId);
    return ArrayBuffer.isView(values) && this.users.has(values.buffer as ArrayBuffer)
      ? (values as Float32Array).slice()
      : values;
  }

  private track(values: BackendValues | undefined, delta: number): void {
    if (!ArrayBuffer.isView(values)) return;
    const buffer = values.buffer as ArrayBuffer;
    const count = this.users.get(buffer);
    if (count === undefined) return;
    if (count + delta > 0) {
      this.users.set(buffer, count + delta);
      return;
    }
    const bytes = buffer.byteLength;
    if (this.idleBytes + bytes > POOL_LIMIT_BYTES) {
      // Past the limit the buffer is left to the garbage collector.
      this.users.delete(buffer);
      this.pooledBytes -= bytes;
      return;
    }
    let list = this.idle.get(bytes);
    if (list === undefined) this.idle.set(bytes, (list = []));
    // Marked idle by leaving the users map: a stale view cannot release it twice.
    this.users.delete(buffer);
    list.push(buffer);
    this.idleBytes += bytes;
  }
}

let registered = false;

/**
 * Registers the `onednn` backend with TensorFlow.js (once): the native
 * kernels, every other CPU kernel under the new name, and the training
 * hooks. Does not make it the active backend.
 *
 * @throws BackendError when the addon cannot load.
 */
export function registerOnednnBackend(): void {
  if (registered) return;
  const native = loadOnednnAddon();
  // The CPU kernels are registered when @tensorflow/tfjs loads; make sure the
  // CPU backend itself exists too, as some of its kernels assume it.
  tf.registerBackend(ONEDNN_BACKEND, () => new OnednnBackend(), 0);
  const configs = nativeKernelConfigs(native);
  const ours = new Set(configs.map((c) => c.kernelName));
  const all = [
    ...tf.getKernelsForBackend('cpu')
      .filter((c) => !ours.has(c.kernelName))
      .map((c) => ({ ...c, backendName: ONEDNN_BACKEND })),
    ...configs,
  ];
  for (const config of all) tf.registerKernel(profiling ? profiled(config) : config);
  registerGradients();
  hookBatchNormalization();
  hookConv2D();
  hookActivation();
  hookModelSteps();
  hookAdam(native);
  registered = true;
}

/**
 * The loader for `src/backend/index.ts`: registers the backend and makes it
 * the active one.
 *
 * @throws BackendError when the addon is not built or cannot load.
 */
export async function loadOnednnBackend(): Promise<void> {
  registerOnednnBackend();
  const ok = await tf.setBackend(ONEDNN_BACKEND);
  if (!ok) throw new BackendError(`TensorFlow.js could not start its '${ONEDNN_BACKEND}' backend`);
  await tf.ready();
}

// --- Profiling ----------------------------------------------------------------

/** Whether kernels are timed (`RESNET_ONEDNN_PROFILE=1` when the backend registers). */
const profiling = process.env.RESNET_ONEDNN_PROFILE === '1';
const profile = new Map<string, { calls: number; ms: number; native: boolean }>();

function profiled(config: tf.KernelConfig): tf.KernelConfig {
  const inner = config.kernelFunc;
  const native = !tf.getKernelsForBackend('cpu').some((c) => c.kernelFunc === inner);
  return {
    ...config,
    kernelFunc: (args) => {
      const start = performance.now();
      const out = inner(args);
      const entry = profile.get(config.kernelName) ?? { calls: 0, ms: 0, native };
      entry.calls += 1;
      entry.ms += performance.now() - start;
      profile.set(config.kernelName, entry);
      return out;
    },
  };
}

/**
 * Time spent in each kernel since the last call, slowest first; empty unless
 * `RESNET_ONEDNN_PROFILE=1` was set before the backend registered. `native`
 * says whether the kernel is one of the addon's or the CPU backend's.
 */
export function takeOnednnProfile(): Array<{
  kernel: string;
  calls: number;
  ms: number;
  native: boolean;
}> {
  const rows = [...profile].map(([kernel, e]) => ({ kernel, ...e }));
  profile.clear();
  return rows.sort((a, b) => b.ms - a.ms);
}

function onOnednn(): boolean {
  return tf.getBackend() === ONEDNN_BACKEND;
}

function runKernel(name: string, inputs: NamedTensorMap, attrs = {}): Tensor | Tensor[] {
  return tf.engine().runKernel(name, inputs, attrs) as Tensor | Tensor[];
}

// --- Gradients ----------------------------------------------------------------

function registerGradients(): void {
  // ReLU: the stock gradient stays in force on every other backend.
  const stockRelu = tf.getGradient('Relu');
  tf.registerGradient({
    ...stockRelu,
    kernelName: 'Relu',
    gradFunc: (dy, saved, attrs) => {
      if (!onOnednn() || Array.isArray(dy) || saved[0].dtype !== 'float32') {
        return stockRelu.gradFunc(dy, saved, attrs);
      }
      const [x] = saved;
      return { x: () => runKernel(RELU_GRAD, { dy, x }) as Tensor };
    },
  });

  // Unlike FusedConv2D's, each part is computed only if the engine asks:
  // it does not for an input that no trainable weight depends on.
  tf.registerGradient({
    kernelName: CONV2D_BIAS,
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter] = saved;
      const { strides, pad } = attrs as unknown as tf.Conv2DAttrs;
      const geometry = { strides, pad, dataFormat: 'NHWC' };
      const g = dy as Tensor;
      return {
        x: () => runKernel('Conv2DBackpropInput', { dy: g, filter }, { ...geometry, inputShape: x.shape }) as Tensor,
        filter: () =>
          runKernel('Conv2DBackpropFilter', { x, dy: g }, { ...geometry, filterShape: filter.shape }) as Tensor,
        bias: () => tf.sum(g, [0, 1, 2]),
      };
    },
  });

  registerBatchNormGradient(BATCH_NORM_TRAINING, false);
  registerBatchNormGradient(BATCH_NORM_RELU_TRAINING, true);
}

/**
 * The gradient of the fused training BatchNorm, with the ReLU fused in or
 * not: the ReLU variant also saves its output, whose sign masks dy.
 */
function registerBatchNormGradient(kernelName: string, relu: boolean): void {
  tf.registerGradient({
    kernelName,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [relu, true, true],
    gradFunc: (dys, saved, attrs) => {
      const dy = (Array.isArray(dys) ? dys[0] : dys) as Tensor;
      const [x, gamma, ...outputs] = saved;
      const [y, mean, variance]: Array<Tensor | undefined> = relu ? outputs : [undefined, ...outputs];
      // All three gradients come from one kernel run, made here and not in
      // the thunks: the engine runs each thunk in its own tidy, which would
      // dispose the other two.
      const inputs: NamedTensorMap = { dy, x, mean: mean!, variance: variance!, gamma };
      if (y !== undefined) inputs.y = y;
      const [dx, dgamma, dbeta] = runKernel(BATCH_NORM_TRAINING_GRAD, inputs, {
        epsilon: (attrs as { epsilon: number }).epsilon,
      }) as Tensor[];
      return { x: () => dx, gamma: () => dgamma, beta: () => dbeta };
    },
  });
}

// --- Layer hooks ----------------------------------------------------------------

/** A tf.layers `call` method, with the layer's fields this project reads as `this`. */
type LayerCall<L> = (
  this: L,
  inputs: Tensor | Tensor[],
  kwargs: tf.serialization.ConfigDict,
) => Tensor | Tensor[];

const HOOKED = Symbol.for('resnet-ts.onednnHook');

/**
 * Replaces the `call` of the tf.layers class `className`, found through
 * TensorFlow.js's serialization registry, by `hook(original)`, once. The
 * hook takes its own path in the cases it covers and runs `original`
 * otherwise; tfjs-layers itself is not modified.
 */
function hookLayerCall<L>(
  className: string,
  hook: (original: LayerCall<L>) => LayerCall<L>,
): void {
  const entry = tf.serialization.SerializationMap.getMap().classNameMap[className];
  if (!entry) throw new BackendError(`tf.layers has no ${className} class registered`);
  const proto = (entry[0] as unknown as { prototype: { call: LayerCall<L> } }).prototype;
  if ((proto.call as unknown as Record<symbol, unknown>)[HOOKED]) return;
  const hooked = hook(proto.call);
  (hooked as unknown as Record<symbol, unknown>)[HOOKED] = true;
  proto.call = hooked;
}

/** A layer call's input when it is one tensor; else undefined. */
function singleInput(inputs: Tensor | Tensor[]): Tensor | undefined {
  return Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : undefined) : inputs;
}

/**
 * A layer call's one input when the hooks may take it: `onednn` active, a
 * training-mode call, a single rank-4 float32 tensor; else undefined.
 */
function trainingInput(
  inputs: Tensor | Tensor[],
  kwargs: tf.serialization.ConfigDict,
): Tensor | undefined {
  const x = singleInput(inputs);
  const ok = onOnednn() && Boolean(kwargs?.training) && x?.rank === 4 && x.dtype === 'float32';
  return ok ? x : undefined;
}

// --- Fusing a layer into the one before it ------------------------------------

/*
 * tf.layers runs a model layer by layer, each a pass over memory; some pairs
 * are cheaper as one pass. While a model's own training step, evaluation or
 * prediction runs (the functions below that execute `model.outputs`), a
 * layer whose one output goes only to a BatchNormalization may compute that
 * layer's work too, and a BatchNormalization that feeds only a ReLU
 * activation may apply it. The data it returns is marked with the layers it
 * has done the work of, and those layers pass it on unchanged. The pairs are
 * found in the model's graph once per model: a layer used once, whose output
 * is not one of the model's outputs and is read by exactly one layer, of
 * that model. Anything else runs as it is.
 */

/** A tf.layers layer or node, as far as the planning reads them. */
interface LayerLike {
  getClassName(): string;
  inboundNodes: Array<{ inboundLayers: LayerLike[] }>;
  outboundNodes: Array<{ outboundLayer: LayerLike }>;
  output: unknown;
  activation?: { getClassName(): string } | null;
}
interface ModelLike {
  layers: LayerLike[];
  outputs: unknown[];
}

/** For a layer of the running model: the layers after it whose work it may do. */
interface Fusion {
  batchNorm?: LayerLike;
  relu?: LayerLike;
}
type Plan = Map<LayerLike, Fusion>;

const plans = new WeakMap<ModelLike, Plan>();
/** The plan of the model whose step is running, if any. */
let activePlan: Plan | undefined;
/** Data that already holds the work of these layers. */
const doneFor = new WeakMap<DataId, Set<LayerLike>>();

/** The one layer of `model` that reads `layer`'s output, when that is all that reads it. */
function soleReader(model: ModelLike, layer: LayerLike): LayerLike | undefined {
  if (layer.inboundNodes.length !== 1 || layer.outboundNodes.length !== 1) return undefined;
  if (model.outputs.includes(layer.output)) return undefined;
  const next = layer.outboundNodes[0].outboundLayer;
  const ok =
    model.layers.includes(next) &&
    next.inboundNodes.length === 1 &&
    next.inboundNodes[0].inboundLayers.length === 1;
  return ok ? next : undefined;
}

function isReluActivation(layer: LayerLike | undefined): boolean {
  return layer?.getClassName() === 'Activation' && layer.activation?.getClassName() === 'relu';
}

function planFor(model: ModelLike): Plan {
  let plan = plans.get(model);
  if (plan !== undefined) return plan;
  plan = new Map();
  for (const layer of model.layers) {
    const kind = layer.getClassName();
    if (kind !== 'Conv2D' && kind !== 'BatchNormalization') continue;
    const next = soleReader(model, layer);
    if (kind === 'BatchNormalization') {
      if (isReluActivation(next)) plan.set(layer, { relu: next });
    } else if (next?.getClassName() === 'BatchNormalization') {
      const after = soleReader(model, next);
      plan.set(layer, { batchNorm: next, relu: isReluActivation(after) ? after : undefined });
    }
  }
  plans.set(model, plan);
  return plan;
}

/** Runs `fn` with the plan of `model` in force. */
function withPlan<T>(model: ModelLike, fn: () => T): T {
  const outer = activePlan;
  activePlan = onOnednn() ? planFor(model) : undefined;
  try {
    return fn();
  } finally {
    activePlan = outer;
  }
}

/** The fusion planned for `layer` in the running model's step, if any. */
function plannedFor(layer: unknown): Fusion | undefined {
  return onOnednn() ? activePlan?.get(layer as LayerLike) : undefined;
}

/** Marks `y` as holding the work of `layers` too. */
function markDone(y: Tensor, layers: Array<LayerLike | undefined>): Tensor {
  doneFor.set(y.dataId, new Set(layers.filter((l): l is LayerLike => l !== undefined)));
  return y;
}

/** The input, when it already holds `layer`'s work; else undefined. */
function alreadyDone(layer: unknown, inputs: Tensor | Tensor[]): Tensor | undefined {
  const x = singleInput(inputs);
  return x !== undefined && doneFor.get(x.dataId)?.has(layer as LayerLike) ? x : undefined;
}

/**
 * Makes tf.layers' LayersModel run its training step, evaluation and
 * prediction with the model's plan in force (see above).
 */
function hookModelSteps(): void {
  type Step = (data: Tensor[]) => unknown;
  const proto = tf.LayersModel.prototype as unknown as Record<string, unknown> & {
    makeTrainFunction(this: ModelLike): Step;
    makeTestFunction(this: ModelLike & { testFunction: Step }): void;
    predictLoop(this: ModelLike, ...args: unknown[]): unknown;
  };
  if ((proto.predictLoop as unknown as Record<symbol, unknown>)[HOOKED]) return;
  const makeTrain = proto.makeTrainFunction;
  const makeTest = proto.makeTestFunction;
  const predictLoop = proto.predictLoop;
  if (typeof makeTrain !== 'function' || typeof makeTest !== 'function' || typeof predictLoop !== 'function') {
    throw new BackendError('tf.layers\' LayersModel no longer has the step functions the onednn hooks wrap');
  }
  proto.makeTrainFunction = function () {
    const step = makeTrain.call(this);
    return (data) => withPlan(this, () => step(data));
  };
  proto.makeTestFunction = function () {
    makeTest.call(this);
    const step = this.testFunction;
    this.testFunction = (data) => withPlan(this, () => step(data));
  };
  const hooked = function (this: ModelLike, ...args: unknown[]) {
    return withPlan(this, () => predictLoop.apply(this, args));
  };
  (hooked as unknown as Record<symbol, unknown>)[HOOKED] = true;
  proto.predictLoop = hooked;
}

/** A layer that passes on data already holding its work (see above). */
function hookActivation(): void {
  hookLayerCall<LayerLike>('Activation', (original) => function (inputs, kwargs) {
    return alreadyDone(this, inputs) ?? original.call(this, inputs, kwargs);
  });
}

// --- Conv2D -------------------------------------------------------------------

/** The parts of tfjs-layers' Conv2D used here. */
interface Conv2DLike {
  rank: number;
  dataFormat: string;
  strides: number[];
  padding: 'same' | 'valid';
  dilationRate: number | number[];
  kernel: LayerVariableLike;
  bias: LayerVariableLike | null;
  activation: { apply(x: Tensor): Tensor; getClassName(): string } | null;
}

/**
 * Routes tf.layers' Conv2D, when `onednn` is active, for a rank-4 float32
 * channels-last input without dilation: in training mode through
 * CONV2D_BIAS; in inference, where the model's plan allows, through
 * CONV2D_BATCH_NORM with the BatchNorm (and ReLU) after it. Every other case
 * runs the layer's own `call`.
 */
function hookConv2D(): void {
  hookLayerCall<Conv2DLike>('Conv2D', (original) => function (inputs, kwargs) {
    const plain = this.rank === 2 && this.dataFormat === 'channelsLast' &&
      [this.dilationRate].flat().every((d) => d === 1);
    const folded = plain ? foldedConv(this, inputs, kwargs) : undefined;
    if (folded !== undefined) return folded;
    const x = trainingInput(inputs, kwargs);
    if (x === undefined || !plain) return original.call(this, inputs, kwargs);
    return tf.tidy(() => {
      const weights: NamedTensorMap = { x, filter: this.kernel.read() };
      if (this.bias != null) weights.bias = this.bias.read();
      const y = runKernel(CONV2D_BIAS, weights, { ...geometryOf(this), activation: 'linear' }) as Tensor;
      return this.activation != null ? this.activation.apply(y) : y;
    });
  });
}

/** The kernel attributes of a channels-last Conv2D layer without dilation. */
function geometryOf(layer: Conv2DLike): NamedAttrMap {
  return { strides: layer.strides, pad: layer.padding, dataFormat: 'NHWC', dilations: [1, 1] };
}

/**
 * Inference through a Conv2D whose output only a BatchNormalization reads
 * (see "Fusing"): that layer's normalisation with its moving statistics,
 * and the ReLU after it if planned, done in the convolution; undefined when
 * this call is not such a case.
 */
function foldedConv(
  layer: Conv2DLike,
  inputs: Tensor | Tensor[],
  kwargs: tf.serialization.ConfigDict,
): Tensor | undefined {
  const fusion = plannedFor(layer);
  const bn = fusion?.batchNorm as unknown as BatchNormalizationLike | undefined;
  const x = singleInput(inputs);
  const ok =
    bn !== undefined &&
    !kwargs?.training &&
    // No gradient of the folded kernel exists; tf.grad through predict gets the layers as they are.
    !(tf.engine() as unknown as { isTapeOn(): boolean }).isTapeOn() &&
    x?.rank === 4 &&
    x.dtype === 'float32' &&
    (layer.activation == null || layer.activation.getClassName() === 'linear') &&
    (bn.axis === -1 || bn.axis === 3) &&
    bn.gamma != null &&
    bn.beta != null;
  if (!ok) return undefined;
  const weights: NamedTensorMap = {
    x: x!,
    filter: layer.kernel.read(),
    mean: bn.movingMean.read(),
    variance: bn.movingVariance.read(),
    gamma: bn.gamma!.read(),
    beta: bn.beta!.read(),
  };
  if (layer.bias != null) weights.bias = layer.bias.read();
  const y = runKernel(CONV2D_BATCH_NORM, weights, {
    ...geometryOf(layer),
    epsilon: bn.epsilon,
    relu: fusion!.relu !== undefined,
  }) as Tensor;
  return markDone(y, [fusion!.batchNorm, fusion!.relu]);
}

// --- BatchNormalization -------------------------------------------------------

/** The parts of tfjs-layers' BatchNormalization (and LayerVariable) used here. */
interface LayerVariableLike {
  read(): Tensor;
  write(value: Tensor): void;
}
interface BatchNormalizationLike {
  axis: number;
  momentum: number;
  epsilon: number;
  gamma?: LayerVariableLike | null;
  beta?: LayerVariableLike | null;
  movingMean: LayerVariableLike;
  movingVariance: LayerVariableLike;
}

/**
 * Routes tf.layers' BatchNormalization in training mode through the fused
 * kernel when `onednn` is active, for the layer's usual case: a rank-4
 * float32 input normalised over its last axis, with both gamma and beta.
 * The moving statistics are updated exactly as the layer does.
 */
function hookBatchNormalization(): void {
  hookLayerCall<BatchNormalizationLike>('BatchNormalization', (original) => function (inputs, kwargs) {
    const done = alreadyDone(this, inputs);
    if (done !== undefined) return done;
    const x = trainingInput(inputs, kwargs);
    const fused =
      x !== undefined &&
      (this.axis === -1 || this.axis === 3) &&
      this.gamma != null &&
      this.beta != null;
    if (!fused) return original.call(this, inputs, kwargs);
    const relu = plannedFor(this)?.relu;
    const y = tf.tidy(() => {
      const [y, mean, variance] = runKernel(
        relu !== undefined ? BATCH_NORM_RELU_TRAINING : BATCH_NORM_TRAINING,
        { x, gamma: this.gamma!.read(), beta: this.beta!.read() },
        { epsilon: this.epsilon },
      ) as Tensor[];
      const [movingMean, movingVariance] = runKernel(
        MOVING_AVERAGES,
        { movingMean: this.movingMean.read(), movingVariance: this.movingVariance.read(), mean, variance },
        { momentum: this.momentum },
      ) as Tensor[];
      this.movingMean.write(movingMean);
      this.movingVariance.write(movingVariance);
      return y;
    });
    return relu !== undefined ? markDone(y, [relu]) : y;
  });
}

// --- Adam ---------------------------------------------------------------------

/** The private state of tfjs-core's AdamOptimizer that its update uses. */
interface AdamState {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  accumulatedFirstMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  accumulatedSecondMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  incrementIterations(): void;
}
type VariableGradients = NamedTensorMap | Array<{ name: string; tensor: Tensor }>;

/**
 * Replaces AdamOptimizer's update, when `onednn` is active, by one native
 * pass per variable that updates the weights and both moments in place,
 * with the same float32 operations in the same order as the original.
 */
function hookAdam(native: OnednnAddon): void {
  const proto = tf.AdamOptimizer.prototype as unknown as {
    applyGradients(this: AdamState, grads: VariableGradients): void;
  };
  const original = proto.applyGradients;
  if ((original as unknown as Record<symbol, unknown>)[HOOKED]) return;

  const hooked = function (this: AdamState, grads: VariableGradients): void {
    if (!onOnednn()) return original.call(this, grads);
    const backend = tf.backend() as OnednnBackend;
    const names = Array.isArray(grads) ? grads.map((g) => g.name) : Object.keys(grads);
    // As the original: 1 − β^t in float32, from the float32 accumulators.
    const oneMinusAcc1 = Math.fround(1 - this.accBeta1.dataSync()[0]);
    const oneMinusAcc2 = Math.fround(1 - this.accBeta2.dataSync()[0]);
    const k = [
      this.beta1, 1 - this.beta1, this.beta2, 1 - this.beta2,
      oneMinusAcc1, oneMinusAcc2, this.epsilon, -this.learningRate,
    ];
    names.forEach((name, i) => {
      const value = tf.engine().registeredVariables[name];
      if (this.accumulatedFirstMoment[i] == null) {
        this.accumulatedFirstMoment[i] = {
          originalName: `${name}/m`,
          variable: tf.tidy(() => tf.zerosLike(value).variable(false)),
        };
      }
      if (this.accumulatedSecondMoment[i] == null) {
        this.accumulatedSecondMoment[i] = {
          originalName: `${name}/v`,
          variable: tf.tidy(() => tf.zerosLike(value).variable(false)),
        };
      }
      const gradient = Array.isArray(grads) ? grads[i].tensor : grads[name];
      if (gradient == null) return;
      const m = this.accumulatedFirstMoment[i]!.variable;
      const v = this.accumulatedSecondMoment[i]!.variable;
      const arrays = [value, m, v].map((t) => ownedValues(backend, t));
      const g = backend.data.get(gradient.dataId)?.values;
      if (!(g instanceof Float32Array) || arrays.some((a) => a === undefined)) {
        throw new BackendError(`Adam on ${ONEDNN_BACKEND}: variable ${name} is not float32`);
      }
      native.adam(arrays[0]!, arrays[1]!, arrays[2]!, g, k);
      backend.valuesChanged(value.dataId);
    });
    tf.tidy(() => {
      this.accBeta1.assign(tf.mul(this.accBeta1, this.beta1));
      this.accBeta2.assign(tf.mul(this.accBeta2, this.beta2));
    });
    this.incrementIterations();
  };
  (hooked as unknown as Record<symbol, unknown>)[HOOKED] = true;
  proto.applyGradients = hooked;
}

/**
 * A variable's array, safe to update in place: when another tensor shares
 * its memory (tf.clone does), the variable first gets a copy of its own.
 */
function ownedValues(backend: OnednnBackend, variable: tf.Variable): Float32Array | undefined {
  const values = backend.data.get(variable.dataId)?.values;
  if (!(values instanceof Float32Array)) return undefined;
  if (backend.refCount(variable.dataId) <= 1) return values;
  const copy = tf.tensor(values.slice(), variable.shape, 'float32');
  variable.assign(copy);
  // The variable now holds the only other reference to the copy's memory.
  copy.dispose();
  return backend.data.get(variable.dataId)?.values as Float32Array;
}
