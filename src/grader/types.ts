/**
 * The grader's data: what the parent hands a child (probes: inputs only,
 * never expected values), what comes back (probe outputs), and the verdicts
 * (case and exercise results) the parent computes from them.
 */

/** The three graded functions, in the order the course asks for them. */
export const EXERCISES = ['identityBlock', 'convolutionalBlock', 'ResNet50'] as const;
export type Exercise = (typeof EXERCISES)[number];

/** A tensor as plain data, so that it crosses the IPC channel unchanged. */
export interface TensorData {
  shape: number[];
  values: number[];
}

export type BlockKind = 'identity' | 'convolutional';

/** What a block is asked to be: its kind, kernel size, filters and stride. */
export interface BlockSpec {
  block: BlockKind;
  f: number;
  filters: [number, number, number];
  /** Stride of a convolutional block; ignored for the identity block. */
  s: number;
}

/**
 * Run a block on a concrete input with given kernels (handed out in the
 * order the block asks for them), or with every kernel filled with one value.
 */
export interface BlockProbe extends BlockSpec {
  kind: 'block';
  id: string;
  training: boolean;
  input: TensorData;
  kernels: TensorData[] | { constant: number };
}

/**
 * Apply a block `repeat` times to a symbolic input and build a model from
 * it: checks the output shape and that layer names do not collide.
 */
export interface SymbolicProbe extends BlockSpec {
  kind: 'symbolic';
  id: string;
  inputShape: number[];
  repeat: number;
}

/** Build ResNet50, read its layer table and, optionally, predict once. */
export interface ModelProbe {
  kind: 'model';
  id: string;
  inputShape: [number, number, number];
  classes: number;
  /** An input batch to predict on, if the case needs probabilities. */
  predict?: TensorData;
  /** Whether to send the whole layer table back. */
  table: boolean;
}

export type Probe = BlockProbe | SymbolicProbe | ModelProbe;

/** One layer application seen while a block ran (for the diagnosis). */
export interface TraceEntry {
  className: string;
  /** Conv2D: kernelSize, strides, padding, activation; BN: axis; Activation: activation. */
  config: Record<string, unknown>;
  /** The `training` the layer was applied with, if any. */
  training?: boolean | null;
  inputShapes: Array<Array<number | null>>;
  outputShape?: Array<number | null>;
  error?: string;
}

/** The layer table of a model, with names and parameter counts. */
export interface ModelTable {
  rows: unknown[][];
  names: string[];
  total: number;
  trainable: number;
  nonTrainable: number;
}

/** What one probe gave. `error` is set when the learner's code threw. */
export interface ProbeOutput {
  id: string;
  error?: string;
  /** The output tensor of a block probe, or the probabilities of a model probe. */
  output?: TensorData;
  /** The symbolic output shape (null for the batch). */
  symbolicShape?: Array<number | null>;
  /** Kernel shapes the block asked its initialiser for, in call order. */
  kernelRequests?: Array<number[] | null>;
  trace?: TraceEntry[];
  /** ResNet50 probes: the input and output shapes and the layer table. */
  modelInputShape?: Array<number | null>;
  modelOutputShape?: Array<number | null>;
  table?: ModelTable;
}

/** One graded case: its points and, when it failed, why, to the learner. */
export interface CaseResult {
  name: string;
  points: number;
  maximum: number;
  passed: boolean;
  /** Hidden cases come from `--reference` and are not shown to learners in advance. */
  hidden: boolean;
  /** Empty when passed; otherwise one line in the second person. */
  message: string;
}

/** One exercise: `grade.json` holds a list of these. */
export interface ExerciseResult {
  exercise: Exercise;
  points: number;
  maximum: number;
  /** One line per failing case (or one for the whole exercise). */
  messages: string[];
  cases: CaseResult[];
}
