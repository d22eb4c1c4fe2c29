/**
 * The graded cases of each exercise: which probes to run, how many points
 * each case is worth, and how to judge what came back. Cases and expected
 * values stay on this side; only the probes (inputs and kernels) go to the
 * submission.
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';

import { ArgumentError } from '../errors.js';
import { seededRandom } from '../random.js';
import {
  BlockCase,
  BlockReference,
  loadBlockReference,
  loadLayerTableReference,
  referenceDir,
  Tolerance,
} from '../reference.js';
import type { LayerTableReference } from '../summary.js';
import { diagnoseError, judgeBlockOutput } from './diagnose.js';
import { compareTable } from './table.js';
import type {
  BlockProbe,
  BlockSpec,
  CaseResult,
  Exercise,
  ExerciseResult,
  ModelProbe,
  Probe,
  ProbeOutput,
  SymbolicProbe,
  TensorData,
} from './types.js';
import { CHECKABLE_SEEDS, kernelShapes, referenceBlock, tensor4d } from './variants.js';

/** The references a grading run holds in memory. */
export interface GradeReferences {
  blocks: BlockReference;
  table: LayerTableReference;
  /** Teacher-supplied cases in the layout of blocks.json (`--reference`). */
  hidden?: BlockReference;
}

/**
 * Reads the references: blocks.json and resnet50-summary.json from `dir`
 * (defaults to this project's `Requirements/reference/`) and, if given, a
 * file of hidden cases.
 */
export function loadReferences(dir?: string, hiddenFile?: string): GradeReferences {
  const base = dir ?? referenceDir();
  return {
    blocks: loadBlockReference(path.join(base, 'blocks.json')),
    table: loadLayerTableReference(path.join(base, 'resnet50-summary.json')),
    hidden: hiddenFile ? loadBlockReference(hiddenFile) : undefined,
  };
}

/** One graded case: its probes and its judge, which returns '' on a pass. */
export interface GradedCase {
  name: string;
  points: number;
  hidden: boolean;
  probes: Probe[];
  judge: (outputs: Map<string, ProbeOutput>) => string;
}

type Nested = number | Nested[];

/** The reference README's tolerances; BatchNorm over a tiny batch needs rtol 1e-3. */
const TOLERANCE: Record<'inference' | 'training', Tolerance> = {
  inference: { rtol: 1e-4, atol: 1e-5 },
  training: { rtol: 1e-3, atol: 1e-5 },
};
/** The course's constant-ones figures are float64; allow float32 rounding. */
const COURSE_TOLERANCE: Tolerance = { rtol: 1e-4, atol: 1e-4 };

function flatten(nested: Nested): TensorData {
  const t = tf.tensor(nested as number[]);
  const data = { shape: [...t.shape], values: Array.from(t.dataSync()) };
  t.dispose();
  return data;
}


function randomData(shape: number[], next: () => number, scale: number): TensorData {
  const size = shape.reduce((a, b) => a * b, 1);
  return { shape, values: Array.from({ length: size }, () => (next() * 2 - 1) * scale) };
}

const MODES = ['inference', 'training'] as const;

function blockCase(
  exercise: Exercise,
  name: string,
  hidden: boolean,
  probe: BlockProbe,
  expected: Nested | (() => tf.Tensor),
  tol: Tolerance,
): GradedCase {
  return {
    name,
    points: 1,
    hidden,
    probes: [probe],
    judge: (outputs) => {
      const want = typeof expected === 'function' ? expected() : tf.tensor(expected as number[]);
      try {
        return judgeBlockOutput(exercise, probe, outputs.get(probe.id), want, tol);
      } finally {
        want.dispose();
      }
    },
  };
}

function referenceCases(
  exercise: Exercise,
  cases: BlockCase[],
  kind: BlockSpec['block'],
  hidden: boolean,
): GradedCase[] {
  const result: GradedCase[] = [];
  for (const c of cases.filter((c) => c.block === kind)) {
    for (const mode of MODES) {
      const probe: BlockProbe = {
        kind: 'block',
        id: `${hidden ? 'hidden' : 'public'}:${c.name}:${mode}`,
        block: c.block,
        f: c.f,
        filters: c.filters,
        s: c.s ?? 2,
        training: mode === 'training',
        input: flatten(c.input),
        kernels: c.kernels.map((k) => flatten(k)),
      };
      const label = `${hidden ? 'hidden case ' : ''}${c.name} (${mode})`;
      result.push(blockCase(exercise, label, hidden, probe, c.expected[mode], TOLERANCE[mode]));
    }
  }
  return result;
}

/** Random input and kernels the learner has never seen; expected values from the grader's block. */
function freshCases(exercise: Exercise, spec: BlockSpec, inputShape: number[], seed: number) {
  const next = seededRandom(seed);
  const input = randomData(inputShape, next, 2);
  const kernels = kernelShapes(spec, inputShape[3]).map((s) => randomData(s, next, 0.5));
  return MODES.map((mode) => {
    const probe: BlockProbe = {
      kind: 'block',
      id: `fresh:${spec.block}:${mode}`,
      ...spec,
      training: mode === 'training',
      input,
      kernels,
    };
    const expected = () =>
      tf.tidy(() => {
        const x = tensor4d(input);
        const ks = kernels.map(tensor4d);
        return referenceBlock(spec, x, ks, mode === 'training');
      });
    const name = `fresh random input (${mode})`;
    return blockCase(exercise, name, false, probe, expected, TOLERANCE[mode]);
  });
}

function symbolicCase(spec: BlockSpec, inputShape: number[], expected: number[]): GradedCase {
  const id = `symbolic:${spec.block}`;
  const probe: SymbolicProbe = { kind: 'symbolic', id, ...spec, inputShape, repeat: 2 };
  const exercise = spec.block === 'identity' ? 'identityBlock' : 'convolutionalBlock';
  return {
    name: `two blocks in a row on a symbolic ${inputShape.join('×')} input`,
    points: 1,
    hidden: false,
    probes: [probe],
    judge: (outputs) => {
      const out = outputs.get(probe.id);
      if (!out) return 'no output came back for this case.';
      if (out.error !== undefined) {
        if (/name.*used|not unique|unique/i.test(out.error)) {
          return (
            'your layer names collide when the block is used twice in one model: leave ' +
            'the names to TensorFlow.js, or build them from `options.name`.'
          );
        }
        return diagnoseError(exercise, out.error, probe, out);
      }
      const want = [null, ...expected];
      if (JSON.stringify(out.symbolicShape) === JSON.stringify(want)) return '';
      return (
        `your blocks give the symbolic shape ${JSON.stringify(out.symbolicShape)}; it should ` +
        `be ${JSON.stringify(want)}: check the strides and padding, and that the block ` +
        'works on a tf.input() as well as on a tensor.'
      );
    },
  };
}

/** The course's own identity check: inputs of -1, 1 and 3, every kernel ones. */
function courseCases(blocks: BlockReference): GradedCase[] {
  const course = blocks.course;
  return MODES.map((mode) => {
    const spec = course.cases[mode];
    const probe: BlockProbe = {
      kind: 'block',
      id: `course:${mode}`,
      block: 'identity',
      f: spec.f,
      filters: spec.filters,
      s: 1,
      training: mode === 'training',
      input: flatten(course.input),
      kernels: { constant: 1 },
    };
    const name = `the course's constant-ones check (${mode})`;
    return blockCase('identityBlock', name, false, probe, spec.output, COURSE_TOLERANCE);
  });
}

function identityCases(refs: GradeReferences, seed: number): GradedCase[] {
  const fresh: BlockSpec = { block: 'identity', f: 3, filters: [3, 5, 4], s: 1 };
  return [
    ...referenceCases('identityBlock', refs.blocks.cases, 'identity', false),
    ...courseCases(refs.blocks),
    ...freshCases('identityBlock', fresh, [3, 5, 6, 4], seed),
    symbolicCase({ block: 'identity', f: 3, filters: [4, 6, 10], s: 1 }, [9, 11, 10], [9, 11, 10]),
    ...(refs.hidden ? referenceCases('identityBlock', refs.hidden.cases, 'identity', true) : []),
  ];
}

function convolutionalCases(refs: GradeReferences, seed: number): GradedCase[] {
  const fresh: BlockSpec = { block: 'convolutional', f: 3, filters: [3, 4, 5], s: 2 };
  return [
    ...referenceCases('convolutionalBlock', refs.blocks.cases, 'convolutional', false),
    ...freshCases('convolutionalBlock', fresh, [3, 7, 6, 2], seed + 1),
    // ceil(ceil(9 / 2) / 2) = 3 and ceil(ceil(11 / 2) / 2) = 3: odd sizes catch
    // 'valid' padding on the strided convolutions.
    symbolicCase(
      { block: 'convolutional', f: 3, filters: [4, 6, 10], s: 2 },
      [9, 11, 3],
      [3, 3, 10],
    ),
    ...(refs.hidden
      ? referenceCases('convolutionalBlock', refs.hidden.cases, 'convolutional', true)
      : []),
  ];
}

function resnetCases(refs: GradeReferences, seed: number): GradedCase[] {
  const next = seededRandom(seed + 2);
  const main: ModelProbe = {
    kind: 'model',
    id: 'model:main',
    inputShape: [64, 64, 3],
    classes: 6,
    table: true,
    predict: randomData([1, 64, 64, 3], next, 1),
  };
  const sizes = [64, 72, 80, 96];
  const h = sizes[Math.floor(next() * sizes.length)];
  const w = sizes[Math.floor(next() * sizes.length)];
  const classes = 2 + Math.floor(next() * 9);
  const other: ModelProbe = {
    kind: 'model',
    id: 'model:fresh',
    inputShape: [h, w, 3],
    classes: classes === 6 ? 7 : classes,
    table: false,
  };
  const built = (out: ProbeOutput | undefined): string => {
    if (!out) return 'no output came back for this case.';
    if (out.error !== undefined) return diagnoseError('ResNet50', out.error);
    return '';
  };
  const ref = refs.table;
  return [
    {
      name: 'builds a model for 64×64×3 images and 6 classes',
      points: 1,
      hidden: false,
      probes: [main],
      judge: (outputs) => {
        const out = outputs.get(main.id);
        const failed = built(out);
        if (failed) return failed;
        const io = [out!.modelInputShape, out!.modelOutputShape];
        const want = [[null, 64, 64, 3], [null, 6]];
        if (JSON.stringify(io) === JSON.stringify(want)) return '';
        return (
          `your model takes ${JSON.stringify(io[0])} and gives ${JSON.stringify(io[1])}; it ` +
          `should take ${JSON.stringify(want[0])} and give ${JSON.stringify(want[1])}: use ` +
          '`inputShape` for tf.input and `classes` for the last Dense layer.'
        );
      },
    },
    {
      name: 'parameter counts',
      points: 1,
      hidden: false,
      probes: [main],
      judge: (outputs) => {
        const out = outputs.get(main.id);
        const failed = built(out);
        if (failed) return failed;
        const t = out!.table!;
        const got = [t.total, t.trainable, t.nonTrainable];
        const want = [ref.total_params, ref.trainable_params, ref.non_trainable_params];
        if (JSON.stringify(got) === JSON.stringify(want)) return '';
        return (
          `your model has ${got[0]} parameters (${got[1]} trainable, ${got[2]} not); the ` +
          `course's has ${want[0]} (${want[1]} trainable, ${want[2]} not).`
        );
      },
    },
    {
      name: 'layer table, row by row',
      points: 2,
      hidden: false,
      probes: [main],
      judge: (outputs) => {
        const out = outputs.get(main.id);
        const failed = built(out);
        if (failed) return failed;
        return compareTable(out!.table!, ref);
      },
    },
    {
      name: `another input size and class count (${h}×${w}×3, ${other.classes} classes)`,
      points: 1,
      hidden: false,
      probes: [other],
      judge: (outputs) => {
        const out = outputs.get(other.id);
        const failed = built(out);
        if (failed) return failed;
        const want = [[null, h, w, 3], [null, other.classes]];
        const io = [out!.modelInputShape, out!.modelOutputShape];
        if (JSON.stringify(io) === JSON.stringify(want)) return '';
        return (
          `for inputShape [${h}, ${w}, 3] and ${other.classes} classes your model takes ` +
          `${JSON.stringify(io[0])} and gives ${JSON.stringify(io[1])}: build it from the ` +
          'options, not from fixed numbers.'
        );
      },
    },
    {
      name: 'predicts a probability distribution',
      points: 1,
      hidden: false,
      probes: [main],
      judge: (outputs) => {
        const out = outputs.get(main.id);
        const failed = built(out);
        if (failed) return failed;
        const p = out!.output!;
        if (JSON.stringify(p.shape) !== '[1,6]') {
          const shape = JSON.stringify(p.shape);
          return `your model predicts shape ${shape} for one image; it should be [1,6].`;
        }
        const sum = p.values.reduce((a, b) => a + b, 0);
        const ok = p.values.every((v) => Number.isFinite(v) && v >= 0) && Math.abs(sum - 1) < 1e-4;
        if (ok) return '';
        return (
          `your model's outputs for one image sum to ${sum.toPrecision(4)} ` +
          `(${p.values.map((v) => v.toPrecision(3)).join(', ')}): end with a Dense layer ` +
          "with `activation: 'softmax'`."
        );
      },
    },
  ];
}

/**
 * The cases of one exercise. `seed` picks the fresh inputs; a grading run
 * draws a new one, the notebook checks a fixed one.
 */
export function buildCases(exercise: Exercise, refs: GradeReferences, seed: number): GradedCase[] {
  // A learner workspace carries the fresh blocks' outputs for a few seeds only.
  if (exercise !== 'ResNet50' && CHECKABLE_SEEDS && !CHECKABLE_SEEDS.includes(seed)) {
    throw new ArgumentError(
      'seed',
      `one of ${CHECKABLE_SEEDS.join(', ')} in a learner workspace`,
      seed,
      'Its checks carry the expected outputs of those seeds only; the teacher grades with any.',
    );
  }
  switch (exercise) {
    case 'identityBlock':
      return identityCases(refs, seed);
    case 'convolutionalBlock':
      return convolutionalCases(refs, seed);
    case 'ResNet50':
      return resnetCases(refs, seed);
  }
}

/** Every probe of the cases, once each, in order. */
export function probesOf(cases: GradedCase[]): Probe[] {
  const seen = new Map<string, Probe>();
  for (const c of cases) for (const p of c.probes) seen.set(p.id, p);
  return [...seen.values()];
}

/** Judges every case; a judge that throws fails its case rather than the run. */
export function judgeCases(
  exercise: Exercise,
  cases: GradedCase[],
  outputs: Map<string, ProbeOutput>,
): ExerciseResult {
  const results: CaseResult[] = cases.map((c) => {
    let message: string;
    try {
      message = c.judge(outputs);
    } catch (error) {
      message = `the grader could not judge this case (${(error as Error).message}).`;
    }
    return {
      name: c.name,
      points: message ? 0 : c.points,
      maximum: c.points,
      passed: !message,
      hidden: c.hidden,
      message: message ? `${c.name}: ${message}` : '',
    };
  });
  return summarise(exercise, results);
}

/** The whole exercise fails for one reason (a crash, a time-out, a write). */
export function failExercise(exercise: Exercise, cases: GradedCase[], why: string): ExerciseResult {
  const results = cases.map((c) => ({
    name: c.name,
    points: 0,
    maximum: c.points,
    passed: false,
    hidden: c.hidden,
    message: '',
  }));
  return { ...summarise(exercise, results), messages: [why] };
}

function summarise(exercise: Exercise, cases: CaseResult[]): ExerciseResult {
  return {
    exercise,
    points: cases.reduce((a, c) => a + c.points, 0),
    maximum: cases.reduce((a, c) => a + c.maximum, 0),
    messages: cases.filter((c) => !c.passed && c.message).map((c) => c.message),
    cases,
  };
}
