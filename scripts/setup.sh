#!/usr/bin/env bash
# Prepares a fresh machine for the project, in five steps:
#   1. system packages: Jupyter (to run the notebooks) and Chromium (plots);
#   2. npm dependencies, from package-lock.json;
#   3. the oneDNN addon (native/), the fast CPU backend: libdnnl-dev, then
#      node-gyp; optional, without it the project runs on WebAssembly;
#   4. the SIGNS datasets into Requirements/datasets/, checked by SHA-256;
#   5. the Jupyter kernel "TypeScript (resnet-ts)".
# Safe to rerun: each step skips what is already done.
#
# Usage: bash scripts/setup.sh [STEP...]   (or: npm run setup -- [STEP...])
#   With no STEP, runs all five; STEP is system, npm, native, datasets or kernel.
# Environment:
#   SIGNS_SOURCE  folder to copy the SIGNS files from. Defaults to
#                 ../shared/datasets beside the project.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(jupyter-nbconvert jupyter-client python3-ipykernel chromium)
DATA_DIR="$ROOT/Requirements/datasets"
SUMS_FILE="$ROOT/Requirements/datasets.sha256"
SIGNS_SOURCE="${SIGNS_SOURCE:-$(dirname "$ROOT")/shared/datasets}"
KERNEL_NAME=resnet-ts
WARNINGS=()

# Each takes a step name, then message parts that are joined as they are, so
# a long message can be split over lines.
log() {
  local step="$1" IFS=
  shift
  printf '[%s] %s\n' "$step" "$*"
}
warn() {
  local step="$1" IFS=
  shift
  printf '[%s] warning: %s\n' "$step" "$*" >&2
  WARNINGS+=("[$step] $*")
}
fail() {
  local step="$1" IFS=
  shift
  printf '[%s] error: %s\n' "$step" "$*" >&2
  exit 1
}
is_root() { [[ "$(id -u)" == 0 ]]; }

TMP_DIR="$(mktemp -d)"
trap 'rm -rf "$TMP_DIR"' EXIT

# --- 1. System packages -------------------------------------------------------
# Only the notebooks and plots need these, so a machine that cannot install
# them still gets a working library and CLI: print what is missing and go on.

step_system() {
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    warn system "not a Debian-like system: install Jupyter (nbconvert, jupyter_client, " \
"ipykernel; e.g. pip install nbconvert jupyter_client ipykernel) and Chromium yourself."
    return
  fi
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log system "Debian packages present: ${APT_PACKAGES[*]}"
    return
  fi
  if ! is_root; then
    warn system "missing Debian packages: ${missing[*]}. Install them with: " \
"sudo apt-get install -y ${missing[*]}"
    return
  fi
  log system "installing ${missing[*]} (apt-get)"
  if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; then
    log system "installed ${missing[*]}"
  else
    warn system "apt-get could not install ${missing[*]} (see above); notebooks and plots " \
"need them. Fix the package sources, then rerun bash scripts/setup.sh."
  fi
}

# --- 2. npm dependencies ------------------------------------------------------
# npm ci wipes node_modules and takes a while, so it is skipped when
# node_modules came from this same lock file and Node version (a stamp file).
# The optional native backends (@tensorflow/tfjs-node, -gpu) download
# libtensorflow at install; offline, npm drops them and WebAssembly is used.

step_npm() {
  command -v node >/dev/null 2>&1 || fail npm "node not found: install Node.js 20 or newer."
  command -v npm >/dev/null 2>&1 || fail npm "npm not found: install it with Node.js 20+."
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [[ "$major" -ge 20 ]] || fail npm "Node $(node --version) is too old: install Node 20 or newer."

  local stamp="$ROOT/node_modules/.resnet-setup-stamp" want
  want="$(cat package.json package-lock.json | sha256_of_stdin) node-$(node --version)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log npm "node_modules matches package-lock.json; skipping npm ci " \
"(delete node_modules to force it)"
  else
    log npm "npm ci (a minute or two)"
    if ! npm ci --no-audit --no-fund; then
      fail npm "npm ci failed (see above). Check that the registry is reachable " \
"(npm config get registry) and that package-lock.json matches package.json, then rerun."
    fi
    printf '%s\n' "$want" >"$stamp"
  fi
  if [[ -d node_modules/@tensorflow/tfjs-node ]]; then
    log npm "native backend @tensorflow/tfjs-node installed"
  else
    log npm "native backend @tensorflow/tfjs-node absent (needs a download at install); " \
"the oneDNN addon (step native) or else WebAssembly will be used"
  fi
}

# --- 3. The oneDNN addon ------------------------------------------------------
# The `onednn` backend (src/backend/onednn.ts) is a Node addon on Debian's
# oneDNN (libdnnl-dev), built by node-gyp against the installed Node headers
# (npm's nodedir), so no download is needed. Optional: where it cannot be
# built, say how and go on; the backend choice then falls to WebAssembly.

ADDON="$ROOT/native/build/Release/onednn_backend.node"

step_native() {
  if ! [[ -f /usr/include/oneapi/dnnl/dnnl.hpp ]]; then
    if command -v apt-get >/dev/null 2>&1 && is_root; then
      log native "installing libdnnl-dev (apt-get)"
      if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libdnnl-dev; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          libdnnl-dev || true
      fi
    fi
    if ! [[ -f /usr/include/oneapi/dnnl/dnnl.hpp ]]; then
      warn native "oneDNN headers not found (Debian/Ubuntu: sudo apt-get install libdnnl-dev), " \
"so the oneDNN addon is not built and training runs on WebAssembly. Install it, then " \
"rerun bash scripts/setup.sh native."
      return
    fi
  fi
  if ! command -v g++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
    warn native "g++ and make are needed to build the oneDNN addon (Debian: sudo apt-get " \
"install g++ make); training runs on WebAssembly until then. Rerun bash scripts/setup.sh native."
    return
  fi
  # Rebuilt when the addon is missing or older than its sources.
  if [[ -f "$ADDON" && -z "$(find native/src native/binding.gyp -newer "$ADDON" 2>/dev/null)" ]]; then
    log native "oneDNN addon up to date: ${ADDON#"$ROOT"/}"
    return
  fi
  log native "building the oneDNN addon (npm run build:native, half a minute)"
  if npm run --silent build:native >"$TMP_DIR/native.log" 2>&1 \
    && node -e 'require(process.argv[1]).info()' "$ADDON" >/dev/null 2>&1; then
    log native "built ${ADDON#"$ROOT"/}; the backend choice now prefers onednn to WebAssembly"
  else
    tail -n 20 "$TMP_DIR/native.log" >&2
    warn native "the oneDNN addon did not build or load (see above); training runs on " \
"WebAssembly. Fix the cause, then rerun bash scripts/setup.sh native."
  fi
}

# --- 4. SIGNS datasets --------------------------------------------------------
# The reference sums are those of the shared copies. The shared train file is
# a rebuild of the course's (see ../shared/datasets/README.md), so a course
# download of train_signs.h5 has another sum: such a file is not replaced but
# checked by the loader itself (layout, shapes, labels).

sha256_of_stdin() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum | cut -d' ' -f1
  else
    shasum -a 256 | cut -d' ' -f1
  fi
}
sha256_of() { sha256_of_stdin <"$1"; }

step_datasets() {
  [[ -f "$SUMS_FILE" ]] \
    || fail datasets "checksum list $SUMS_FILE is missing; restore it with git."
  mkdir -p "$DATA_DIR"
  local name expected dest src missing=() unverified=()
  while read -r expected name; do
    [[ -z "$expected" || "$expected" == \#* ]] && continue
    dest="$DATA_DIR/$name"
    src="$SIGNS_SOURCE/$name"
    if [[ -f "$dest" && "$(sha256_of "$dest")" == "$expected" ]]; then
      log datasets "$name present, SHA-256 ok"
    elif [[ -f "$src" ]]; then
      if [[ "$(sha256_of "$src")" != "$expected" ]]; then
        fail datasets "$src does not match its SHA-256 in $SUMS_FILE: the shared copy is " \
"damaged or has changed. Restore it, or update the sum if it was replaced on purpose."
      fi
      # Copy beside, then rename: no half-written file, and a read-only old
      # copy is replaced too.
      cp "$src" "$dest.partial"
      chmod u+w "$dest.partial"
      mv -f "$dest.partial" "$dest"
      log datasets "$name copied from $SIGNS_SOURCE, SHA-256 ok"
    elif [[ -f "$dest" ]]; then
      unverified+=("$name")
    else
      missing+=("$name")
    fi
  done <"$SUMS_FILE"

  if [[ ${#unverified[@]} -gt 0 ]]; then
    log datasets "${unverified[*]}: SHA-256 differs from the reference copy and no shared " \
"copy to replace it; checking with the loader (a course download of train_signs.h5 " \
"differs: the reference one is a rebuild)"
    check_layout "${unverified[@]}"
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then
    local list
    list="$(printf '%s and ' "${missing[@]}")"
    warn datasets "missing ${list% and } with no copy at $SIGNS_SOURCE. Put the course's " \
"train_signs.h5 and test_signs.h5 (from the Residual Networks assignment's datasets/ " \
"folder) in Requirements/datasets/, or set SIGNS_SOURCE to a folder holding them, then " \
"rerun bash scripts/setup.sh."
  fi
}

# Loads each file with src/data/signs.ts, which names any flaw it finds.
check_layout() {
  local name split
  for name in "$@"; do
    split="${name%%_signs.h5}"
    if ! node --import tsx --input-type=module --eval "
      import { readSignsFile } from './src/data/signs.ts';
      const [file, split, name] = process.argv.slice(1);
      try {
        const { labels } = readSignsFile(file, split);
        console.log('[datasets] ' + name + ': ' + labels.length + ' images, layout ok');
      } catch (error) {
        console.error('[datasets] ' + (error instanceof Error ? error.message : error));
        process.exit(1);
      }
    " "$DATA_DIR/$name" "$split" "$name"; then
      fail datasets "$DATA_DIR/$name is not a usable SIGNS file (see the error above). " \
"Replace it with the course's $name, then rerun bash scripts/setup.sh."
    fi
  done
}

# --- 5. Jupyter kernel --------------------------------------------------------
# The kernel runs scripts/tslab-kernel.cjs, which starts tslab in the project
# root so notebooks can import ../src. Root installs it for every user.

step_kernel() {
  if ! command -v jupyter >/dev/null 2>&1 || ! jupyter kernelspec --version >/dev/null 2>&1; then
    warn kernel "jupyter (with kernelspec) not found; skipping the notebook kernel. Install " \
"Jupyter (step 1), then rerun bash scripts/setup.sh."
    return
  fi
  local spec="$TMP_DIR/$KERNEL_NAME" scope=(--user)
  mkdir -p "$spec"
  # node writes the JSON so any character in the project path is escaped.
  node -e '
    const [file, script] = process.argv.slice(1);
    const spec = {
      argv: ["node", script, "{connection_file}"],
      display_name: "TypeScript (resnet-ts)",
      language: "typescript",
    };
    require("fs").writeFileSync(file, JSON.stringify(spec, null, 2) + "\n");
  ' "$spec/kernel.json" "$ROOT/scripts/tslab-kernel.cjs"
  if is_root; then scope=(); fi
  if ! jupyter kernelspec install --replace ${scope[@]+"${scope[@]}"} \
    --name "$KERNEL_NAME" "$spec" >"$TMP_DIR/kernelspec.log" 2>&1; then
    cat "$TMP_DIR/kernelspec.log" >&2
    fail kernel "jupyter kernelspec install failed (see above). Check that Jupyter's data " \
"folder is writable (jupyter --paths), then rerun."
  fi
  log kernel "installed \"TypeScript (resnet-ts)\" as $KERNEL_NAME: " \
"$(jupyter kernelspec list 2>/dev/null | awk -v k="$KERNEL_NAME" '$1 == k {print $2}')"
}

main() {
  local steps=("$@") step
  [[ ${#steps[@]} -gt 0 ]] || steps=(system npm native datasets kernel)
  for step in "${steps[@]}"; do
    case "$step" in
      system | npm | native | datasets | kernel) ;;
      *)
        fail setup "unknown step \"$step\": expected some of system, npm, native, datasets, " \
"kernel."
        ;;
    esac
  done
  log setup "project at $ROOT"
  for step in "${steps[@]}"; do "step_$step"; done
  if [[ ${#WARNINGS[@]} -gt 0 ]]; then
    log setup "done, with ${#WARNINGS[@]} warning(s) to act on:"
    printf '  %s\n' "${WARNINGS[@]}"
  else
    log setup "done. Next: npm test"
  fi
}

main "$@"
