/**
 * Names the likely mistake behind a failing block case, in the learner's
 * terms. The strongest evidence comes first: the grader's own block's output
 * for the same input and kernels, once per known mistake (see `variants.ts`;
 * computed by the teacher's grader, precomputed in a learner workspace), and
 * a learner's output that matches one of those exactly is that mistake. Then the kernel shapes the block asked for, then
 * the layers it applied, then what the output itself shows (NaN, negative
 * values, a shape).
 */
import * as tf from '@tensorflow/tfjs';

import { compareWithReference, Tolerance, unravel } from '../reference.js';
import { kernelShapes, Mistakes, tensor4d, variantBlock } from './variants.js';
import type { BlockProbe, BlockSpec, ProbeOutput, SymbolicProbe, TraceEntry } from './types.js';

/** A mistake the grader can recompute, and what to tell the learner about it. */
interface Suspect {
  mistakes: Mistakes;
  applies?: (spec: BlockSpec, training: boolean) => boolean;
  say: (spec: BlockSpec, training: boolean) => string;
}

const isConv = (spec: BlockSpec) => spec.block === 'convolutional';
const strided = (spec: BlockSpec) => isConv(spec) && spec.s > 1;

const SAY = {
  noFinalRelu:
    'your output equals the main path plus the shortcut with no final ReLU: apply a ReLU ' +
    "(tf.layers.activation({ activation: 'relu' })) to the sum.",
  noShortcut:
    'your output equals the main path alone: add the shortcut to the main path ' +
    '(tf.layers.add().apply([main, shortcut])) before the final ReLU.',
  reluBeforeBn:
    'your output matches ReLU applied before BatchNorm: in each group apply the Conv2D, ' +
    'then BatchNorm, then the ReLU.',
  convRelu:
    "your output matches convolutions with their own ReLU (activation: 'relu' on Conv2D): " +
    'leave Conv2D linear, the default, and put each ReLU after its BatchNorm.',
  noBatchNorm:
    'your values are untouched by normalisation: follow each Conv2D with ' +
    'tf.layers.batchNormalization({ axis: 3 }).',
  shortcutNoBn:
    "your shortcut skips BatchNorm: follow the shortcut's 1×1 Conv2D with a BatchNorm.",
  noShortcutConv:
    'your shortcut is the input itself: in the convolutional block it needs its own 1×1 ' +
    'Conv2D (F3 filters, strides s) and BatchNorm to reach the main path\'s shape.',
  paddingValid:
    "your f×f convolution uses padding 'valid', which shrinks each side by f - 1: use " +
    "padding 'same' so that the main path lines up with the shortcut at the add.",
  initializerUnused:
    'your convolutions do not use `options.initializer`: give each Conv2D ' +
    '`kernelInitializer: initializer(seed)`, so that the checks can hand your block known ' +
    'kernels.',
  bnAxis: (axis: unknown) =>
    `your BatchNorm normalises over axis ${String(axis)}: normalise over the channels, axis 3 ` +
    '(or -1), so that each channel gets its own mean and variance.',
  training: (training: boolean) =>
    training
      ? 'your BatchNorm used its moving statistics although `options.training` was true: ' +
        "pass `{ training }` from the options as the second argument of each BatchNorm's apply."
      : 'your BatchNorm normalised with the batch statistics although `options.training` ' +
        "was false: pass `{ training }` from the options to each BatchNorm's apply instead " +
        'of a fixed value.',
  stride: (where: string) =>
    `your stride s sits on the ${where}: the course puts it on the first 1×1 convolution ` +
    '(and on the shortcut); the other two convolutions use stride 1.',
};

/** The mistakes tried in turn; the first whose output matches names the cause. */
const SUSPECTS: Suspect[] = [
  { mistakes: { noFinalRelu: true }, say: () => SAY.noFinalRelu },
  { mistakes: { noShortcut: true }, say: () => SAY.noShortcut },
  {
    mistakes: { noShortcut: true, noFinalRelu: true },
    say: () =>
      'your output equals the main path alone, without the final ReLU: add the shortcut, ' +
      'then apply a ReLU to the sum.',
  },
  { mistakes: { reluBeforeBn: true }, say: () => SAY.reluBeforeBn },
  { mistakes: { convRelu: 'all' }, say: () => SAY.convRelu },
  { mistakes: { convRelu: 'main' }, applies: isConv, say: () => SAY.convRelu },
  { mistakes: { training: false }, applies: (_, t) => t, say: () => SAY.training(true) },
  { mistakes: { training: true }, applies: (_, t) => !t, say: () => SAY.training(false) },
  { mistakes: { noBatchNorm: true }, say: () => SAY.noBatchNorm },
  ...[0, 1, 2].map((axis) => ({
    mistakes: { bnAxis: axis },
    applies: (_: BlockSpec, t: boolean) => t,
    say: () => SAY.bnAxis(axis),
  })),
  {
    mistakes: { strideOn: 1 },
    applies: strided,
    say: () => SAY.stride('f×f convolution (as torchvision\'s "v1.5" does)'),
  },
  { mistakes: { strideOn: 2 }, applies: strided, say: () => SAY.stride('last 1×1 convolution') },
  { mistakes: { noShortcutConv: true }, applies: isConv, say: () => SAY.noShortcutConv },
  { mistakes: { shortcutNoBn: true }, applies: isConv, say: () => SAY.shortcutNoBn },
];

/** Matching a variant uses the case's tolerance, loosened a little for float32 paths. */
function matches(actual: tf.Tensor, expected: tf.Tensor, tol: Tolerance): boolean {
  if (!tf.util.arraysEqual(actual.shape, expected.shape)) return false;
  const loose = { rtol: Math.max(tol.rtol, 1e-3), atol: Math.max(tol.atol, 1e-4) };
  return compareWithReference(actual, expected.arraySync() as number[], loose).ok;
}

/** The mistakes the diagnosis tries for a block, in order (what release:student precomputes). */
export function suspectMistakes(spec: BlockSpec, training: boolean): Mistakes[] {
  return SUSPECTS.filter((s) => !s.applies || s.applies(spec, training)).map((s) => s.mistakes);
}

/** The probe's kernels as tensors (ones of the right shapes for a constant probe). */
export function probeKernels(probe: BlockProbe): tf.Tensor4D[] {
  if (Array.isArray(probe.kernels)) {
    return probe.kernels.map((k) => tensor4d(k));
  }
  const value = probe.kernels.constant;
  const shapes = kernelShapes(probe, probe.input.shape[3]);
  return shapes.map((s) => tf.fill(s, value) as unknown as tf.Tensor4D);
}

/** Which known mistake, if any, reproduces the learner's output exactly. */
export function matchVariant(probe: BlockProbe, output: tf.Tensor, tol: Tolerance): string {
  const input = tensor4d(probe.input);
  const kernels = probeKernels(probe);
  try {
    for (const suspect of SUSPECTS) {
      if (suspect.applies && !suspect.applies(probe, probe.training)) continue;
      const variant = variantBlock(probe, input, kernels, probe.training, suspect.mistakes);
      if (!variant) continue;
      const hit = matches(output, variant, tol);
      variant.dispose();
      if (hit) return suspect.say(probe, probe.training);
    }
    return '';
  } finally {
    tf.dispose([input, ...kernels]);
  }
}

/** What the kernel shapes the block asked for say about its convolutions. */
export function diagnoseKernels(probe: BlockProbe, requests: Array<number[] | null>): string {
  const want = kernelShapes(probe, probe.input.shape[3]);
  if (requests.length === 0) return '';
  if (probe.block === 'identity' && requests.length > 3) {
    return (
      `your identity block made ${requests.length} convolutions; it has three, all on the ` +
      'main path: its shortcut is the input itself.'
    );
  }
  for (let i = 0; i < Math.min(requests.length, want.length); i++) {
    const got = requests[i];
    if (!got || tf.util.arraysEqual(got, want[i])) continue;
    const [kh, kw, , filters] = got;
    if (i === 1 && (kh !== probe.f || kw !== probe.f) && filters === want[1][3]) {
      return (
        `your middle convolution asked for a ${kh}×${kw} kernel; with f = ${probe.f} it needs ` +
        `${probe.f}×${probe.f}: pass \`kernelSize: f\` to the second Conv2D.`
      );
    }
    const which = ['first', 'second', 'third', 'shortcut'][i];
    return (
      `your ${which} convolution asked for a kernel of shape ${JSON.stringify(got)} ` +
      `(height, width, in channels, filters); it needs ${JSON.stringify(want[i])}: check its ` +
      'kernelSize and filters, and that the convolutions are made in the order main 1, ' +
      'main 2, main 3, shortcut.'
    );
  }
  if (isConv(probe) && requests.length === 3) return SAY.noShortcutConv;
  return '';
}

/**
 * The kernel requests and the layer trace together: convolutions that never
 * asked for a kernel mean the initialiser went unused.
 */
function diagnoseStructure(probe: BlockProbe, out: ProbeOutput): string {
  const requests = out.kernelRequests ?? [];
  const trace = out.trace ?? [];
  if (requests.length === 0 && trace.some((e) => e.className === 'Conv2D')) {
    return SAY.initializerUnused;
  }
  return diagnoseKernels(probe, requests) || diagnoseTrace(probe, trace, probe.training);
}

const kernelOf = (e: TraceEntry) => (e.config.kernelSize as number[] | undefined)?.[0] ?? 1;
const strideOf = (e: TraceEntry) => (e.config.strides as number[] | undefined)?.[0] ?? 1;

/**
 * What the layers the block applied say, for the mistakes a trace shows
 * plainly. Empty when the trace is silent (a block written with tf ops).
 */
export function diagnoseTrace(spec: BlockSpec, trace: TraceEntry[], training?: boolean): string {
  const convs = trace.filter((e) => e.className === 'Conv2D');
  const bns = trace.filter((e) => e.className === 'BatchNormalization');
  if (trace.length === 0) return '';
  if (convs.some((e) => e.config.activation !== undefined && e.config.activation !== 'linear')) {
    return SAY.convRelu;
  }
  if (convs.some((e) => kernelOf(e) > 1 && e.config.padding === 'valid')) return SAY.paddingValid;
  const badAxis = bns.find((e) => e.config.axis !== 3 && e.config.axis !== -1);
  if (badAxis) return SAY.bnAxis(badAxis.config.axis);
  // Only a concrete input says which mode BatchNorm should run in.
  if (training !== undefined && bns.some((e) => e.training !== training)) {
    return SAY.training(training);
  }
  for (let i = 1; i < trace.length; i++) {
    const reluThenBn =
      trace[i].className === 'BatchNormalization' &&
      trace[i - 1].className === 'Activation' &&
      trace[i - 1].config.activation === 'relu';
    if (reluThenBn) return SAY.reluBeforeBn;
  }
  if (strided(spec) && convs.length >= 2) {
    const main = convs.slice(0, 3);
    const at = main.findIndex((e) => strideOf(e) > 1);
    if (at === 1) return SAY.stride('f×f convolution');
    if (at === 2) return SAY.stride('last 1×1 convolution');
  }
  if (isConv(spec) && convs.length === 3) return SAY.noShortcutConv;
  const add = trace.find((e) => e.className === 'Add');
  if (!add && convs.length > 0) return SAY.noShortcut;
  if (add?.error) return addMismatch(add);
  const last = trace[trace.length - 1];
  if (last.className === 'Add') return SAY.noFinalRelu;
  return '';
}

function addMismatch(add: TraceEntry): string {
  const [a, b] = add.inputShapes;
  return (
    `your main path (${JSON.stringify(a)}) and shortcut (${JSON.stringify(b)}) reach the add ` +
    "with different shapes: check the strides and padding (the f×f convolution uses 'same'; " +
    'the stride s sits on the first convolution and on the shortcut).'
  );
}

/** A first index where the values are NaN or infinite, if any. */
function firstNonFinite(values: number[]): number {
  return values.findIndex((v) => !Number.isFinite(v));
}


/** Says what went wrong with an error a block threw. */
export function diagnoseError(
  exercise: string,
  error: string,
  probe?: BlockProbe | SymbolicProbe,
  out?: ProbeOutput,
): string {
  if (/not implemented yet/i.test(error)) {
    return `you have not implemented ${exercise} yet (it still throws "not implemented yet").`;
  }
  if (/^MissingExport/.test(error)) return `${error.replace(/^MissingExport: /, '')}.`;
  if (/^WrongType/.test(error)) {
    return `your ${exercise} ${error.replace(/^WrongType: /, '')}.`;
  }
  if (probe && out) {
    // A symbolic probe leaves the initialiser to the learner: only the trace speaks.
    const training = probe.kind === 'block' ? probe.training : undefined;
    const hint =
      probe.kind === 'block'
        ? diagnoseStructure(probe, out)
        : diagnoseTrace(probe, out.trace ?? [], training);
    // The cause is what the learner needs; the error text it led to varies by case.
    if (hint) return hint;
  }
  return `your ${exercise} threw ${quote(error)}.`;
}

function quote(error: string): string {
  return `"${error.length > 300 ? `${error.slice(0, 300)}…` : error}"`;
}

/**
 * Judges one block output against the expected values; returns '' when it
 * passes, else one sentence to the learner.
 */
export function judgeBlockOutput(
  exercise: string,
  probe: BlockProbe,
  out: ProbeOutput | undefined,
  expected: tf.Tensor,
  tol: Tolerance,
): string {
  if (!out) return 'no output came back for this case.';
  if (out.error !== undefined) return diagnoseError(exercise, out.error, probe, out);
  const data = out.output!;
  const bad = firstNonFinite(data.values);
  if (bad >= 0) {
    return (
      `your output contains ${data.values[bad]} at ${JSON.stringify(unravel(bad, data.shape))}: ` +
      'a NaN or infinity usually comes from an uninitialised weight or a division by zero.'
    );
  }
  if (!tf.util.arraysEqual(data.shape, expected.shape)) {
    const why =
      diagnoseStructure(probe, out) ||
      'a shape miss usually comes from the strides and padding: the f×f convolution uses ' +
        "'same', and in the convolutional block the stride s sits on the first convolution " +
        'and on the shortcut.';
    return (
      `your output has shape ${JSON.stringify(data.shape)}; it should be ` +
      `${JSON.stringify(expected.shape)}: ${why}`
    );
  }
  const actual = tf.tensor(data.values, data.shape, 'float32');
  try {
    const result = compareWithReference(actual, expected.arraySync() as number[], tol);
    if (result.ok) return '';
    const named = matchVariant(probe, actual, tol) || diagnoseStructure(probe, out);
    if (named) return named;
    const negative = data.values.findIndex((v) => v < 0);
    if (negative >= 0) {
      return (
        `your output has a negative value (${data.values[negative].toPrecision(3)} at ` +
        `${JSON.stringify(unravel(negative, data.shape))}): the block must end with a ReLU ` +
        'applied after the add.'
      );
    }
    return (
      `your output differs from the expected one: ${result.message}. Check the order in each ` +
      'group (Conv2D, BatchNorm, ReLU) and that the shortcut is added before the final ReLU.'
    );
  } finally {
    actual.dispose();
  }
}
