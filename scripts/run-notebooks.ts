/**
 * Executes the notebooks headless and exports them as offline reports:
 * `reports/<name>.ipynb` (with outputs) and `reports/<name>.html`.
 *
 * Each notebook runs through nbclient (the executor of `jupyter nbconvert
 * --execute`) in the "TypeScript (resnet-ts)" kernel. A failing cell stops the run with a
 * non-zero exit naming the notebook, the cell (number and id) and the error.
 * The HTML export uses nbconvert's classic template with every external
 * script and stylesheet removed (require.js, jQuery and MathJax, which the
 * reports do not use): plotly.js is inline in each notebook and images are
 * data URIs, so a report opens offline, without any request.
 *
 * Usage: npm run notebooks [-- [--quick] [--out DIR] [NAME...]]
 *   NAME      notebooks to run, by file name or prefix (`03`); defaults to all
 *   --quick   sets RESNET_QUICK=1: notebook 3 trains on 64 images for 1 epoch
 *   --out     where the reports go; defaults to reports/
 * Environment: RESNET_QUICK=1 has the same effect as --quick.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The kernelspec every notebook names. */
export const KERNEL_NAME = 'resnet-ts';

/** Seconds one cell may run; the full training of notebook 3 takes tens of minutes. */
const CELL_TIMEOUT_S = 4 * 3600;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const NOTEBOOK_DIR = path.join(ROOT, 'notebooks');

/** A run that could not start or a notebook that failed; the message says which and why. */
export class NotebookError extends Error {
  override name = 'NotebookError';
}

interface NotebookCell {
  cell_type: string;
  id?: string;
  source: string | string[];
  execution_count?: number | null;
  outputs?: Array<{
    output_type: string;
    name?: string;
    text?: string | string[];
    ename?: string;
    evalue?: string;
    traceback?: string[];
  }>;
}

/** A notebook as JSON, as much of it as this script reads. */
export interface NotebookJson {
  cells: NotebookCell[];
  metadata: { kernelspec?: { name?: string; display_name?: string; language?: string } };
}

/** What one executed notebook left behind. */
export interface NotebookResult {
  name: string;
  seconds: number;
  ipynb: string;
  html: string;
}

export function readNotebook(file: string): NotebookJson {
  return JSON.parse(readFileSync(file, 'utf8')) as NotebookJson;
}

function sourceOf(cell: NotebookCell): string {
  return Array.isArray(cell.source) ? cell.source.join('') : cell.source;
}

/** The notebooks in notebooks/, in name order. */
export function listNotebooks(): string[] {
  return readdirSync(NOTEBOOK_DIR)
    .filter((f) => f.endsWith('.ipynb'))
    .sort();
}

/** Names a cell of a notebook, as the messages show it. */
function cellLabel(notebook: string, nb: NotebookJson, index: number): string {
  const cell = nb.cells[index];
  const codeNumber = nb.cells.slice(0, index + 1).filter((c) => c.cell_type === 'code').length;
  return `${notebook}, cell ${index + 1} (code cell ${codeNumber}, id "${cell.id ?? '?'}")`;
}

/**
 * Checks that jupyter runs and that the resnet-ts kernel is registered, and
 * registered for this checkout: setup's kernel step in another clone points
 * the machine-wide kernel there, and a launcher that has gone makes Jupyter
 * say only "Kernel died before replying".
 *
 * @throws NotebookError saying what to install or run.
 */
export function checkJupyter(): void {
  const result = spawnSync('jupyter', ['kernelspec', 'list', '--json'], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    throw new NotebookError(
      'jupyter is not available (`jupyter kernelspec list` failed: ' +
        `${result.error?.message ?? result.stderr.trim().split('\n').pop()}). ` +
        'Install Jupyter with `bash scripts/setup.sh system`, then register the kernel with ' +
        '`bash scripts/setup.sh kernel`.',
    );
  }
  const specs = (
    JSON.parse(result.stdout) as { kernelspecs?: Record<string, { spec?: { argv?: string[] } }> }
  ).kernelspecs;
  if (!specs || !(KERNEL_NAME in specs)) {
    throw new NotebookError(
      `The Jupyter kernel "${KERNEL_NAME}" is not registered (found: ` +
        `${Object.keys(specs ?? {}).join(', ') || 'none'}). Run \`bash scripts/setup.sh kernel\`.`,
    );
  }
  const launcher = specs[KERNEL_NAME].spec?.argv?.find((arg) => arg.endsWith('tslab-kernel.cjs'));
  if (launcher !== undefined && path.resolve(launcher) !== path.join(ROOT, 'scripts', 'tslab-kernel.cjs')) {
    throw new NotebookError(
      `The Jupyter kernel "${KERNEL_NAME}" starts another checkout (${launcher}), not this one ` +
        `(${ROOT}). Run \`bash scripts/setup.sh kernel\` here.`,
    );
  }
}

const DEBUGGER_NOISE = /frozen modules|Debugger warning|PYDEVD|Debugging will proceed|^0\.00s - /;

/** Lines of nbconvert's stderr worth showing (not Python's debugger chatter). */
function usefulStderr(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '')
    .filter((l) => !DEBUGGER_NOISE.test(l))
    .filter((l) => !l.startsWith('[NbConvertApp]') && !/^@cell \d+$/.test(l));
}

/**
 * The cell an interrupted run stopped at, in an executed notebook: the first
 * cell with an error output, else the last one that started (tslab reports a
 * TypeScript compile error on stderr, with an empty error), with what it
 * printed on stderr and its error.
 */
export function describeFailure(notebook: string, nb: NotebookJson): string {
  let index = nb.cells.findIndex((c) => (c.outputs ?? []).some((o) => o.output_type === 'error'));
  if (index < 0) {
    for (let i = nb.cells.length - 1; i >= 0; i--) {
      if (nb.cells[i].cell_type === 'code' && nb.cells[i].execution_count != null) {
        index = i;
        break;
      }
    }
  }
  if (index < 0) return `${notebook} failed before its first cell ran (the kernel did not start?)`;
  const lines: string[] = [];
  for (const out of nb.cells[index].outputs ?? []) {
    if (out.output_type === 'stream' && out.name === 'stderr') {
      lines.push(...textOf(out.text).trimEnd().split('\n'));
    } else if (out.output_type === 'error') {
      const trace = (out.traceback ?? []).join('\n').replace(/\x1b\[[0-9;]*m/g, '').trim();
      lines.push(trace || `${out.ename}: ${out.evalue}`);
    }
  }
  const detail = lines.filter((l) => l.trim() !== '').slice(-20).join('\n');
  return `${cellLabel(notebook, nb, index)} failed:\n${detail || '(no error text)'}`;
}

function textOf(text: string | string[] | undefined): string {
  return Array.isArray(text) ? text.join('') : (text ?? '');
}

/** The first cell of an executed notebook with an error output, if any. */
export function findErrorOutput(notebook: string, nb: NotebookJson): string | undefined {
  for (let i = 0; i < nb.cells.length; i++) {
    for (const out of nb.cells[i].outputs ?? []) {
      if (out.output_type === 'error') {
        return `${cellLabel(notebook, nb, i)}: ${out.ename}: ${out.evalue}`;
      }
    }
  }
  return undefined;
}

/**
 * Executes a notebook with nbclient (what `nbconvert --execute` runs) and,
 * unlike nbconvert, writes the executed notebook even when a cell fails, so
 * that the failing cell and its output can be named. Exit status 3: a cell
 * failed; 4: the run broke off (a timeout, a dead kernel), with the reason
 * on stderr.
 */
const EXECUTE_PY = `
import os, sys, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
source, target, timeout, kernel = sys.argv[1:5]
nb = nbformat.read(source, as_version=4)
client = NotebookClient(nb, timeout=int(timeout), kernel_name=kernel,
                        resources={"metadata": {"path": os.path.dirname(source)}})
def started(cell, cell_index, **_):
    print(f"@cell {cell_index}", file=sys.stderr, flush=True)
client.on_cell_start = started
status = 0
try:
    client.execute()
except CellExecutionError:
    status = 3
except Exception as error:
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    status = 4
nbformat.write(nb, target)
sys.exit(status)
`;

/**
 * The Python that runs Jupyter: the interpreter named on the first line of
 * the \`jupyter\` script (which may not be the \`python3\` on PATH).
 */
export function jupyterPython(): string {
  const found = spawnSync('sh', ['-c', 'command -v jupyter'], { encoding: 'utf8' });
  const script = found.stdout.trim();
  if (found.status !== 0 || script === '') {
    throw new NotebookError(
      'jupyter is not on PATH: install it with `bash scripts/setup.sh system`.',
    );
  }
  const first = readFileSync(script, 'utf8').split('\n', 1)[0];
  const shebang = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
  if (!shebang) return 'python3';
  return path.basename(shebang[1]) === 'env' && shebang[2] ? shebang[2] : shebang[1];
}

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  onLine?: (line: string) => void,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let pending = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
      if (!onLine) return;
      const lines = (pending + chunk).split('\n');
      pending = lines.pop() ?? '';
      lines.forEach(onLine);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/**
 * Makes an nbconvert HTML export self-contained: removes every script
 * loaded from a URL or a file (require.js, jQuery, MathJax, which the
 * reports do not need; the Debian package points them at
 * file:///usr/share/javascript, other installs at CDNs), every external
 * stylesheet, and MathJax's configuration; and wraps long output lines.
 */
export function makeOffline(html: string): string {
  // Long output lines (the backend line, progress) wrap instead of widening the page.
  const wrap =
    '<style>div.output_area pre { white-space: pre-wrap; overflow-wrap: anywhere; }</style>';
  return html
    .replace(/<\/head>/i, `${wrap}</head>`)
    .replace(/<script\b[^>]*\bsrc\s*=\s*["'](?!data:)[^"']*["'][^>]*>\s*<\/script>/gi, '')
    .replace(/<link\b[^>]*\bhref\s*=\s*["'](?:https?:|file:|\/\/)[^"']*["'][^>]*>/gi, '')
    .replace(/<script type="text\/x-mathjax-config">[\s\S]*?<\/script>/gi, '')
    .replace(/<!-- Load mathjax -->|<!-- MathJax configuration -->/g, '');
}

/**
 * Executes one notebook into `outDir`, then exports its HTML report.
 *
 * @throws NotebookError naming the failing cell and its error.
 */
export async function runNotebook(
  file: string,
  outDir: string,
  env: NodeJS.ProcessEnv = process.env,
  onCell?: (label: string) => void,
): Promise<NotebookResult> {
  const name = path.basename(file, '.ipynb');
  const notebook = path.basename(file);
  mkdirSync(outDir, { recursive: true });
  const ipynb = path.join(outDir, `${name}.ipynb`);
  const started = Date.now();
  const source = readNotebook(file);
  const executed = await run(
    jupyterPython(),
    ['-c', EXECUTE_PY, file, ipynb, String(CELL_TIMEOUT_S), KERNEL_NAME],
    env,
    (line) => {
      const index = /^@cell (\d+)$/.exec(line);
      const cell = index ? source.cells[Number(index[1])] : undefined;
      if (cell?.cell_type === 'code' && onCell) {
        const number = Number(index![1]) + 1;
        onCell(`${notebook}: cell ${number} of ${source.cells.length} (id "${cell.id}")`);
      }
    },
  );
  const seconds = (Date.now() - started) / 1000;
  if (executed.code === 3) {
    throw new NotebookError(`${describeFailure(notebook, readNotebook(ipynb))}\n(executed ` +
      `notebook, with the outputs so far: ${path.relative(process.cwd(), ipynb)})`);
  }
  if (executed.code !== 0) {
    throw new NotebookError(
      `${notebook} did not run to the end:\n${usefulStderr(executed.stderr).slice(-15).join('\n')}`,
    );
  }
  const failure = findErrorOutput(notebook, readNotebook(ipynb));
  if (failure) throw new NotebookError(`${failure}`);

  const exported = await run(
    'jupyter',
    ['nbconvert', '--to', 'html', '--template', 'classic', '--output-dir', outDir, ipynb],
    env,
  );
  const html = path.join(outDir, `${name}.html`);
  if (exported.code !== 0) {
    throw new NotebookError(
      `Exporting ${notebook} to HTML failed:\n${usefulStderr(exported.stderr).join('\n')}`,
    );
  }
  writeFileSync(html, makeOffline(readFileSync(html, 'utf8')));
  return { name, seconds, ipynb, html };
}

/** Picks notebooks by file name or prefix; all of them when `wanted` is empty. */
export function selectNotebooks(wanted: string[]): string[] {
  const all = listNotebooks();
  if (wanted.length === 0) return all;
  return wanted.map((w) => {
    const found = all.filter((f) => f === w || f.startsWith(w));
    if (found.length !== 1) {
      throw new NotebookError(
        `"${w}" names ${found.length === 0 ? 'no' : 'more than one'} notebook; ` +
          `choose from ${all.join(', ')}.`,
      );
    }
    return found[0];
  });
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { quick: { type: 'boolean' }, out: { type: 'string' }, help: { type: 'boolean' } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log('Usage: npm run notebooks [-- [--quick] [--out DIR] [NAME...]]');
    return;
  }
  const outDir = path.resolve(values.out ?? path.join(ROOT, 'reports'));
  const env = { ...process.env };
  if (values.quick) env.RESNET_QUICK = '1';
  const quick = ['1', 'true', 'yes'].includes((env.RESNET_QUICK ?? '').toLowerCase());
  const notebooks = selectNotebooks(positionals);
  checkJupyter();
  console.log(
    `[notebooks] ${quick ? 'quick run (RESNET_QUICK=1)' : 'full run'}: ` +
      `${notebooks.join(', ')} → ${path.relative(process.cwd(), outDir) || '.'}/`,
  );
  for (const notebook of notebooks) {
    console.log(`[notebooks] ${notebook}: running…`);
    const result = await runNotebook(path.join(NOTEBOOK_DIR, notebook), outDir, env, (cell) =>
      console.log(`[notebooks]   ${cell}`),
    );
    console.log(
      `[notebooks] ${notebook}: done in ${result.seconds.toFixed(1)} s → ` +
        `${path.relative(process.cwd(), result.html)}`,
    );
  }
}

const invokedDirectly =
  process.argv[1] !== undefined &&
  path.resolve(process.argv[1]) === path.resolve(ROOT, 'scripts', 'run-notebooks.ts');
if (invokedDirectly) {
  main().catch((error: unknown) => {
    if (error instanceof NotebookError) {
      console.error(`[notebooks] error: ${error.message}`);
    } else {
      console.error(error);
    }
    process.exit(1);
  });
}
