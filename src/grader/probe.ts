/**
 * Runs probes against a submission's functions and records what happened:
 * the output, the kernel shapes each convolution asked for, and the layers
 * applied on the way. This side holds no expected values; it runs in the
 * child process when grading, and in the notebook's own process for the
 * check cells.
 */
import * as tf from '@tensorflow/tfjs';

import type { BlockInput, BlockOptions } from '../blocks.js';
import type { Initializer, InitializerFactory } from '../initializers.js';
import type { ResNet50Options } from '../resnet50.js';
import { layerTable, parameterCounts } from '../summary.js';
import type {
  BlockProbe,
  ModelProbe,
  Probe,
  ProbeOutput,
  SymbolicProbe,
  TraceEntry,
} from './types.js';
import { tensor4d } from './variants.js';

/** An identity block as a learner writes it (the solution's generic one fits). */
export type IdentityBlockFn = (
  X: BlockInput,
  f: number,
  filters: number[],
  options?: BlockOptions,
) => unknown;

/** A convolutional block as a learner writes it. */
export type ConvolutionalBlockFn = (
  X: BlockInput,
  f: number,
  filters: number[],
  s?: number,
  options?: BlockOptions,
) => unknown;

/** A ResNet50 builder as a learner writes it. */
export type ResNet50Fn = (options?: ResNet50Options) => unknown;

/** The functions of a submission; any may be missing. */
export interface Submission {
  identityBlock?: IdentityBlockFn;
  convolutionalBlock?: ConvolutionalBlockFn;
  ResNet50?: ResNet50Fn;
}

/** Outputs larger than this are refused rather than copied back. */
const MAX_OUTPUT_VALUES = 1_000_000;
/** A trace longer than this is cut: a block has a dozen layers. */
const MAX_TRACE = 64;

/** The message of whatever was thrown, first lines only. */
export function errorText(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.split('\n').slice(0, 3).join(' ').slice(0, 600);
}

// tfjs-layers accepts only instances of its own Initializer class and does
// not export it, so take the class from the prototype chain of a built-in one.
const InitializerBase = Object.getPrototypeOf(Object.getPrototypeOf(tf.initializers.zeros()))
  .constructor as abstract new () => Initializer;

/** Thrown when a convolution asks for a kernel of another shape than the case's. */
export class KernelShapeError extends Error {
  override name = 'KernelShapeError';
}

/** Hands out the case's kernels (or constants) and records each requested shape. */
class RecordingInitializer extends InitializerBase {
  static readonly className = 'RecordingInitializer';

  constructor(
    private readonly index: number,
    private readonly kernels: BlockProbe['kernels'],
    private readonly requests: Array<number[] | null>,
  ) {
    super();
  }

  override apply(shape: number[]): tf.Tensor {
    this.requests[this.index] = [...shape];
    const { kernels } = this;
    if (!Array.isArray(kernels)) return tf.fill(shape, kernels.constant);
    const kernel = kernels[this.index];
    if (!kernel || !tf.util.arraysEqual(kernel.shape, shape)) {
      throw new KernelShapeError(
        `convolution ${this.index + 1} asked for a kernel of shape ${JSON.stringify(shape)}` +
          (kernel ? `; this check's kernel for it is ${JSON.stringify(kernel.shape)}` : ''),
      );
    }
    return tf.tensor(kernel.values, kernel.shape, 'float32');
  }

  override getConfig(): Record<string, never> {
    return {};
  }
}

function recordingFactory(
  kernels: BlockProbe['kernels'],
  requests: Array<number[] | null>,
): InitializerFactory {
  return () => {
    requests.push(null);
    return new RecordingInitializer(requests.length - 1, kernels, requests);
  };
}

function shapeOf(x: unknown): Array<number | null> | undefined {
  const first = Array.isArray(x) ? x[0] : x;
  const shape = (first as { shape?: unknown } | undefined)?.shape;
  return Array.isArray(shape) ? [...shape] : undefined;
}

function traceConfig(layer: tf.layers.Layer): Record<string, unknown> {
  const config = layer.getConfig() as Record<string, unknown>;
  const pick = (...keys: string[]) => Object.fromEntries(keys.map((k) => [k, config[k]]));
  switch (layer.getClassName()) {
    case 'Conv2D':
      return pick('filters', 'kernelSize', 'strides', 'padding', 'activation');
    case 'BatchNormalization':
      return pick('axis');
    case 'Activation':
      return pick('activation');
    default:
      return {};
  }
}

/**
 * Records every layer application until the returned function is called.
 * Learners build blocks from layers, so this shows where a block went wrong
 * even when it throws before returning.
 */
function recordLayers(trace: TraceEntry[]): () => void {
  const proto = tf.layers.Layer.prototype as unknown as {
    apply: (this: tf.layers.Layer, inputs: unknown, kwargs?: Record<string, unknown>) => unknown;
  };
  const original = proto.apply;
  proto.apply = function (inputs, kwargs) {
    const inputList = Array.isArray(inputs) ? inputs : [inputs];
    const entry: TraceEntry = {
      className: this.getClassName(),
      config: {},
      training: kwargs && 'training' in kwargs ? (kwargs.training as boolean) : null,
      inputShapes: inputList.map((x) => shapeOf(x) ?? []),
    };
    try {
      entry.config = traceConfig(this);
    } catch {
      // A layer whose config cannot be read is still worth listing.
    }
    if (trace.length < MAX_TRACE) trace.push(entry);
    try {
      const out = original.call(this, inputs, kwargs);
      entry.outputShape = shapeOf(out);
      return out;
    } catch (error) {
      entry.error = errorText(error);
      throw error;
    }
  };
  return () => {
    proto.apply = original;
  };
}

function missing(name: string): string {
  return `MissingExport: the submission does not export a function \`${name}\``;
}

function runBlock(sub: Submission, p: BlockProbe): ProbeOutput {
  const out: ProbeOutput = { id: p.id, kernelRequests: [], trace: [] };
  const fn = p.block === 'identity' ? sub.identityBlock : sub.convolutionalBlock;
  if (typeof fn !== 'function') {
    return { id: p.id, error: missing(`${p.block}Block`) };
  }
  const input = tensor4d(p.input);
  const options: BlockOptions = {
    training: p.training,
    initializer: recordingFactory(p.kernels, out.kernelRequests!),
  };
  const stop = recordLayers(out.trace!);
  let result: unknown;
  try {
    result =
      p.block === 'identity'
        ? sub.identityBlock!(input, p.f, [...p.filters], options)
        : sub.convolutionalBlock!(input, p.f, [...p.filters], p.s, options);
  } catch (error) {
    out.error = errorText(error);
  } finally {
    stop();
  }
  if (!out.error) {
    if (!(result instanceof tf.Tensor)) {
      out.error = `WrongType: returned ${describeValue(result)} instead of a tf.Tensor`;
    } else if (result.size > MAX_OUTPUT_VALUES) {
      out.error = `WrongShape: returned a tensor of shape ${JSON.stringify(result.shape)}`;
    } else {
      out.output = { shape: [...result.shape], values: Array.from(result.dataSync()) };
    }
  }
  if (result instanceof tf.Tensor && result !== input) result.dispose();
  input.dispose();
  return out;
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value instanceof tf.SymbolicTensor) return 'a symbolic tensor';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

function runSymbolic(sub: Submission, p: SymbolicProbe): ProbeOutput {
  const out: ProbeOutput = { id: p.id, kernelRequests: [], trace: [] };
  const fn = p.block === 'identity' ? sub.identityBlock : sub.convolutionalBlock;
  if (typeof fn !== 'function') return { id: p.id, error: missing(`${p.block}Block`) };
  const stop = recordLayers(out.trace!);
  try {
    const input = tf.input({ shape: p.inputShape });
    let h: unknown = input;
    for (let i = 0; i < p.repeat; i++) {
      h =
        p.block === 'identity'
          ? sub.identityBlock!(h as tf.SymbolicTensor, p.f, [...p.filters])
          : sub.convolutionalBlock!(h as tf.SymbolicTensor, p.f, [...p.filters], p.s);
      if (!(h instanceof tf.SymbolicTensor)) {
        out.error = `WrongType: returned ${describeValue(h)} for a symbolic input`;
        return out;
      }
    }
    // Building a model checks that the layers connect and that no layer name
    // is used twice (a hard-coded name breaks the second block).
    const model = tf.model({ inputs: input, outputs: h as tf.SymbolicTensor });
    out.symbolicShape = [...model.outputs[0].shape];
    model.dispose();
  } catch (error) {
    out.error = errorText(error);
  } finally {
    stop();
  }
  return out;
}

function runModel(sub: Submission, p: ModelProbe): ProbeOutput {
  const out: ProbeOutput = { id: p.id };
  if (typeof sub.ResNet50 !== 'function') return { id: p.id, error: missing('ResNet50') };
  let model: tf.LayersModel | undefined;
  try {
    const made: unknown = sub.ResNet50({ inputShape: p.inputShape, classes: p.classes });
    if (!(made instanceof tf.LayersModel)) {
      out.error = `WrongType: returned ${describeValue(made)} instead of a tf.LayersModel`;
      return out;
    }
    model = made;
    out.modelInputShape = [...model.inputs[0].shape];
    out.modelOutputShape = [...model.outputs[0].shape];
    if (p.table) {
      const counts = parameterCounts(model);
      out.table = {
        rows: layerTable(model) as unknown[][],
        names: model.layers.map((l) => l.name),
        total: counts.total,
        trainable: counts.trainable,
        nonTrainable: counts.nonTrainable,
      };
    }
    if (p.predict) {
      const x = tf.tensor(p.predict.values, p.predict.shape, 'float32');
      const y = tf.tidy(() => model!.predict(x) as tf.Tensor);
      out.output = { shape: [...y.shape], values: Array.from(y.dataSync()) };
      tf.dispose([x, y]);
    }
  } catch (error) {
    out.error = errorText(error);
  } finally {
    model?.dispose();
  }
  return out;
}

/** Runs one probe; never throws for anything the submission does. */
export function runProbe(sub: Submission, probe: Probe): ProbeOutput {
  switch (probe.kind) {
    case 'block':
      return runBlock(sub, probe);
    case 'symbolic':
      return runSymbolic(sub, probe);
    case 'model':
      return runModel(sub, probe);
  }
}
