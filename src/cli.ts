/**
 * The command line: `train` (ResNet50 on SIGNS, then evaluation and a saved
 * run), `evaluate` (a saved model on the test set) and `summary` (the layer
 * table). Run through npm: `npm run train -- --epochs 2`.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { BackendName, initBackend, parseBackendName } from './backend/index.js';
import { loadSigns } from './data/signs.js';
import { CHECKPOINT_DIR, readCheckpointState, restoreCheckpoint, writeCheckpoint } from './checkpoint.js';
import { ArgumentError, TrainingError } from './errors.js';
import { loadModel, MODEL_JSON, saveModel, writeFileAtomic } from './io.js';
import { findProjectRoot } from './paths.js';
import { epochLine, evaluationLines, ProgressPrinter } from './progress.js';
import { ResNet50 } from './resnet50.js';
import { printSummary } from './summary.js';
import {
  compileForRecipe,
  parseRecipeName,
  Recipe,
  RecipeName,
  RECIPES,
  recalibrateBatchNorm,
  trainOptionsFor,
} from './recipes.js';
import { evaluate, History, train } from './train.js';

const USAGE = `Usage: npm run <command> -- [flags]   (or: npx tsx src/cli.ts <command> [flags])

Commands:
  train      train ResNet50 on SIGNS, evaluate it on the test set, save the run
  evaluate   evaluate a saved model on the SIGNS test set (--model DIR)
  summary    print ResNet50's layer table

Flags:
  --recipe NAME        improved (default) or course (the course's own recipe)
  --epochs N           passes over the training set (default: the recipe's, 10)
  --batch-size N       examples per step (default: the recipe's: improved 16, course 32)
  --learning-rate X    Adam's (peak) learning rate (default: the recipe's)
  --seed N             seed of the weights and of the example order (default 0)
  --limit N            use only the first N examples of each split (quick runs)
  --backend NAME       auto, gpu, node, onednn, wasm or cpu (default: RESNET_BACKEND, else auto)
  --data DIR           folder with train_signs.h5 and test_signs.h5
                       (default Requirements/datasets)
  --out DIR            run folder to write (default runs/<date-time>)
  --resume DIR         continue an interrupted run from its last checkpoint
  --model DIR          (evaluate) a model folder, or a run folder holding model/
  --help               this text`;

const OPTIONS = {
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  'learning-rate': { type: 'string' },
  seed: { type: 'string' },
  limit: { type: 'string' },
  backend: { type: 'string' },
  data: { type: 'string' },
  out: { type: 'string' },
  model: { type: 'string' },
  recipe: { type: 'string' },
  resume: { type: 'string' },
  help: { type: 'boolean' },
} as const;

type Flags = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

function integerFlag(flags: Flags, name: 'epochs' | 'batch-size' | 'seed' | 'limit', min: number) {
  const text = flags[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    throw new ArgumentError(`--${name}`, `an integer of at least ${min}`, text);
  }
  return value;
}

function numberFlag(flags: Flags, name: 'learning-rate') {
  const text = flags[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!(Number.isFinite(value) && value > 0)) {
    throw new ArgumentError(`--${name}`, 'a positive number', text);
  }
  return value;
}

function timestamp(date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-` +
    `${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`
  );
}

async function startBackend(flags: Flags): Promise<BackendName> {
  const choice = await initBackend({
    backend: flags.backend === undefined ? undefined : parseBackendName(flags.backend),
  });
  return choice.name;
}

/** The settings a run starts with; a resumed run keeps them. */
interface RunSettings {
  recipe: RecipeName;
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  limit: number | null;
}

const RUN_FLAGS = ['recipe', 'epochs', 'batch-size', 'learning-rate', 'seed', 'limit'] as const;

function settingsFromFlags(flags: Flags): RunSettings {
  const recipe = RECIPES[parseRecipeName(flags.recipe)];
  return {
    recipe: recipe.name,
    epochs: integerFlag(flags, 'epochs', 1) ?? recipe.epochs,
    batchSize: integerFlag(flags, 'batch-size', 1) ?? recipe.batchSize,
    learningRate: numberFlag(flags, 'learning-rate') ?? recipe.learningRate,
    seed: integerFlag(flags, 'seed', 0) ?? 0,
    limit: integerFlag(flags, 'limit', 1) ?? null,
  };
}

/** Fails before any training if `dir` cannot be written, rather than after it. */
function ensureWritable(dir: string): void {
  const probe = path.join(dir, `.write-test-${process.pid}`);
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(probe, '');
    rmSync(probe);
  } catch (error) {
    throw new TrainingError(
      `Cannot write the run folder ${dir} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): ` +
        'choose another with --out.',
    );
  }
}

async function commandTrain(flags: Flags): Promise<number> {
  let outDir: string;
  let settings: RunSettings;
  if (flags.resume !== undefined) {
    const given = RUN_FLAGS.filter((name) => flags[name] !== undefined);
    if (given.length > 0) {
      throw new ArgumentError(
        `--${given[0]}`,
        'left out with --resume (a resumed run keeps the settings it started with)',
        flags[given[0]],
      );
    }
    outDir = path.resolve(flags.resume);
    settings = readCheckpointState(outDir).settings as unknown as RunSettings;
  } else {
    settings = settingsFromFlags(flags);
    outDir = path.resolve(flags.out ?? path.join(findProjectRoot(), 'runs', timestamp()));
  }
  const recipe: Recipe = {
    ...RECIPES[settings.recipe],
    epochs: settings.epochs,
    batchSize: settings.batchSize,
    learningRate: settings.learningRate,
  };
  const { seed, batchSize } = settings;
  if (flags.resume === undefined && existsSync(outDir) && readdirSync(outDir).length > 0) {
    throw new ArgumentError(
      '--out',
      'a new or empty folder (a run folder is never overwritten)',
      outDir,
      existsSync(path.join(outDir, CHECKPOINT_DIR))
        ? `To continue that run, use --resume ${outDir}.`
        : 'Choose another folder.',
    );
  }

  const backend = await startBackend(flags);
  const data = loadSigns(flags.data, { limit: settings.limit ?? undefined });
  // Only now, with backend and data in hand, so a failed start leaves no
  // empty run folder behind; still before any training.
  try {
    ensureWritable(outDir);
  } catch (error) {
    tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]);
    throw error;
  }
  const printer = new ProgressPrinter();
  printer.line(
    `[data] ${data.xTrain.shape[0]} training and ${data.xTest.shape[0]} test images` +
      (settings.limit ? ` (--limit ${settings.limit})` : ''),
  );

  // First Ctrl-C: finish the step in flight, then evaluate and save what was
  // trained. Second Ctrl-C: quit at once. Either way the checkpoint of the
  // last complete epoch stays for --resume.
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    printer.line('[train] stopping after this step and saving; press Ctrl-C again to quit now');
  };
  process.on('SIGINT', onSigint);
  // `timeout`, `docker stop` and service managers send SIGTERM: save likewise.
  process.on('SIGTERM', onSigint);

  const model = ResNet50({ inputShape: [64, 64, 3], classes: data.classes.length, seed });
  compileForRecipe(model, recipe);
  const started = new Date();
  try {
    let startEpoch = 0;
    let previous: History | undefined;
    if (flags.resume !== undefined) {
      const state = await restoreCheckpoint(outDir, model);
      startEpoch = state.epoch;
      previous = state.history;
      printer.line(`[resume] ${outDir}: ${startEpoch} of ${recipe.epochs} epochs done`);
    }
    printer.line(
      `[train] ResNet50, recipe ${recipe.name} (${recipe.description}); ${recipe.epochs} epochs, ` +
        `batch ${batchSize}, learning rate ${recipe.learningRate}, seed ${seed}; run folder ${outDir}`,
    );

    let checkpointEpoch = startEpoch;
    let history: History;
    try {
      history = await train(model, data.xTrain, data.yTrain, {
        ...trainOptionsFor(recipe, data.xTrain.shape[0]),
        seed,
        startEpoch,
        history: previous,
        onBatch: (p) => printer.batch(p),
        onEpoch: async (record, soFar) => {
          printer.line(epochLine(record, recipe.epochs));
          await writeCheckpoint(outDir, model, {
            epoch: record.epoch,
            settings: settings as unknown as Record<string, unknown>,
            history: soFar,
          });
          checkpointEpoch = record.epoch;
        },
        shouldStop: () => stopRequested,
      });
    } catch (error) {
      if (error instanceof TrainingError && checkpointEpoch > 0) {
        throw new TrainingError(
          `${error.message} The checkpoint of epoch ${checkpointEpoch} is intact in ` +
            `${path.join(outDir, CHECKPOINT_DIR)}.`,
        );
      }
      throw error;
    }

    if (history.interrupted) {
      printer.line(
        `[train] interrupted; the checkpoint holds ${checkpointEpoch} complete epochs. ` +
          `Continue with: npm run train -- --resume ${outDir}`,
      );
    } else if (recipe.recalibrateBatchNorm) {
      printer.line('[batchnorm] re-estimating the moving statistics over the training set');
      await recalibrateBatchNorm(model, data.xTrain, batchSize);
    }

    const evaluation = await evaluate(model, data.xTest, data.yTest, { batchSize });
    for (const line of evaluationLines(evaluation)) printer.line(line);

    await saveModel(model, path.join(outDir, 'model'));
    writeFileAtomic(path.join(outDir, 'history.json'), JSON.stringify(history, null, 2));
    writeFileAtomic(
      path.join(outDir, 'evaluation.json'),
      JSON.stringify({ ...evaluation, predictions: Array.from(evaluation.predictions) }, null, 2),
    );
    writeFileAtomic(
      path.join(outDir, 'run.json'),
      JSON.stringify(
        {
          model: 'ResNet50',
          ...settings,
          recipeDescription: recipe.description,
          backend,
          started: started.toISOString(),
          finished: new Date().toISOString(),
          resumedFromEpoch: flags.resume !== undefined ? startEpoch : null,
          trainExamples: data.xTrain.shape[0],
          testExamples: data.xTest.shape[0],
          epochsDone: history.epochs.length,
          interrupted: history.interrupted,
          testAccuracy: evaluation.accuracy,
          tfjs: tf.version.tfjs,
        },
        null,
        2,
      ),
    );
    printer.line(`[save] model, history and evaluation written to ${outDir}`);
    return history.interrupted ? 130 : 0;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    model.dispose();
    tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]);
  }
}

async function commandEvaluate(flags: Flags): Promise<number> {
  if (!flags.model) {
    throw new ArgumentError('--model', 'the folder of a saved model (runs/<run>/model)', undefined);
  }
  const given = path.resolve(flags.model);
  const dir = existsSync(path.join(given, MODEL_JSON)) ? given : path.join(given, 'model');
  const limit = integerFlag(flags, 'limit', 1);
  await startBackend(flags);
  const model = await loadModel(dir);
  let data;
  try {
    data = loadSigns(flags.data, { limit });
  } catch (error) {
    model.dispose();
    throw error;
  }
  try {
    const evaluation = await evaluate(model, data.xTest, data.yTest);
    console.log(`[evaluate] ${dir}`);
    for (const line of evaluationLines(evaluation)) console.log(line);
    if (!Number.isFinite(evaluation.loss)) {
      console.log(
        '[warning] the model outputs NaN or infinite values: its weights are damaged or its ' +
          'training diverged, so these figures mean nothing. Retrain, or use an earlier run.',
      );
    }
    console.log('[test] confusion matrix (rows: true class, columns: predicted)');
    evaluation.confusion.forEach((row, c) => {
      console.log(`  ${c}: ${row.map((v) => String(v).padStart(4)).join('')}`);
    });
    return 0;
  } finally {
    model.dispose();
    tf.dispose([data.xTrain, data.yTrain, data.xTest, data.yTest]);
  }
}

async function commandSummary(flags: Flags): Promise<number> {
  await startBackend(flags);
  const model = ResNet50();
  printSummary(model);
  model.dispose();
  return 0;
}

const COMMANDS: Record<string, (flags: Flags) => Promise<number>> = {
  train: commandTrain,
  evaluate: commandEvaluate,
  summary: commandSummary,
};

/** Runs the command line; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const flags = parsed.values as Flags;
  const [command] = parsed.positionals;
  if (flags.help || command === undefined) {
    console.log(USAGE);
    return flags.help ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    console.error(`Unknown command ${JSON.stringify(command)}.\n\n${USAGE}`);
    return 2;
  }
  try {
    return await run(flags);
  } catch (error) {
    // Errors of this project already say what was wrong and what to do; a
    // stack trace would only bury that. Anything else keeps its stack.
    const e = error as Error;
    const ours = ['ArgumentError', 'DataError', 'BackendError', 'TrainingError'].includes(e?.name);
    console.error(ours ? `[error] ${e.message}` : e);
    return 1;
  }
}

// Run when started as a script (tsx src/cli.ts ...), not when imported.
if (process.argv[1] && /cli\.[cm]?[jt]s$/.test(process.argv[1])) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
