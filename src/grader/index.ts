/**
 * The checks the notebooks call, in the notebook's own process:
 *
 *   checkIdentityBlock(identityBlock)
 *   checkConvolutionalBlock(convolutionalBlock)
 *   checkResNet50(ResNet50)
 *
 * Each runs the same cases as `npm run grade` (minus the isolation), prints
 * one line when the exercise passes or one line per failing case, and
 * returns the result with its points and messages.
 */
import { buildCases, GradeReferences, judgeCases, loadReferences, probesOf } from './checks.js';
import {
  ConvolutionalBlockFn,
  IdentityBlockFn,
  ResNet50Fn,
  runProbe,
  Submission,
} from './probe.js';
import { exerciseLines } from './report.js';
import type { Exercise, ExerciseResult, ProbeOutput } from './types.js';

export type { ConvolutionalBlockFn, IdentityBlockFn, ResNet50Fn, Submission } from './probe.js';
export type { CaseResult, Exercise, ExerciseResult } from './types.js';
export { EXERCISES } from './types.js';

/** Options of the notebook checks; all optional. */
export interface CheckOptions {
  /**
   * Folder holding blocks.json and resnet50-summary.json. Defaults to the
   * project's `Requirements/reference/`.
   */
  referenceDir?: string;
  /** A file of extra cases in the layout of blocks.json. Defaults to none. */
  hidden?: string;
  /**
   * Seed of the fresh random inputs. Defaults to 0, the same every run. A
   * learner workspace carries the expected outputs of seeds 0 to 7 only.
   */
  seed?: number;
  /** Where the result lines go. Defaults to `console.log`; `() => {}` silences them. */
  print?: (line: string) => void;
}

const cache = new Map<string, GradeReferences>();

function references(options: CheckOptions): GradeReferences {
  const key = `${options.referenceDir ?? ''}\u0000${options.hidden ?? ''}`;
  let refs = cache.get(key);
  if (!refs) {
    refs = loadReferences(options.referenceDir, options.hidden);
    cache.set(key, refs);
  }
  return refs;
}

/**
 * Grades one exercise of a submission in this process.
 *
 * @throws DataError when a reference file is missing or malformed, and
 *   ArgumentError for a seed a learner workspace carries no outputs for.
 */
export function checkExercise(
  exercise: Exercise,
  submission: Submission,
  options: CheckOptions = {},
): ExerciseResult {
  const cases = buildCases(exercise, references(options), options.seed ?? 0);
  const outputs = new Map<string, ProbeOutput>();
  for (const probe of probesOf(cases)) outputs.set(probe.id, runProbe(submission, probe));
  const result = judgeCases(exercise, cases, outputs);
  const print = options.print ?? ((line: string) => console.log(line));
  exerciseLines(result).forEach((line) => print(line));
  return result;
}

/** Checks an identity block: reference tensors, the course's ones check, fresh inputs, shapes. */
export function checkIdentityBlock(
  identityBlock: IdentityBlockFn,
  options: CheckOptions = {},
): ExerciseResult {
  return checkExercise('identityBlock', { identityBlock }, options);
}

/** Checks a convolutional block: reference tensors, fresh inputs, shapes. */
export function checkConvolutionalBlock(
  convolutionalBlock: ConvolutionalBlockFn,
  options: CheckOptions = {},
): ExerciseResult {
  return checkExercise('convolutionalBlock', { convolutionalBlock }, options);
}

/** Checks ResNet50: input and output, parameter counts, the layer table, softmax. */
export function checkResNet50(ResNet50: ResNet50Fn, options: CheckOptions = {}): ExerciseResult {
  return checkExercise('ResNet50', { ResNet50 }, options);
}
