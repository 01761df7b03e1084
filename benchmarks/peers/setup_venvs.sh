#!/usr/bin/env bash
# Builds one virtual environment per peer SAE library under $PEERS_DIR (default .peers/, git-ignored),
# each with the same CPU torch as ours installed FIRST and pinned by a constraint, so no peer can pull
# another torch (a CUDA build would be gigabytes and a different kernel set: not a fair comparison).
# A peer that cannot be installed with that torch gets .peers/<name>/FAILED with pip's reason (the
# benchmark prints it as "not installable: <reason>"); older releases are tried first.
# Idempotent: a venv with its OK stamp is kept. Usage: setup_venvs.sh [PYTHON] [name ...]
set -u
PYTHON=${1:-python3}; shift || true
PEERS_DIR=${PEERS_DIR:-.peers}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
# name | pip requirement, then older releases to try when the newest does not install
declare -A PEERS=(
  [sparsify]="eai-sparsify"
  [saelens]="sae-lens"
  [dictionary_learning]="dictionary-learning"
)
NAMES=${*:-sparsify saelens dictionary_learning}
mkdir -p "$PEERS_DIR"
for name in $NAMES; do
  dir="$PEERS_DIR/$name"; pkg=${PEERS[$name]}
  if [ -f "$dir/OK" ]; then echo "$name: ready ($(cat "$dir/OK"))"; continue; fi
  rm -rf "$dir"; mkdir -p "$dir"
  log="$dir/install.log"
  echo "$name: building $dir (log: $log)"
  "$PYTHON" -m venv "$dir/venv" >>"$log" 2>&1
  pip="$dir/venv/bin/python -m pip"
  $pip install --upgrade pip >>"$log" 2>&1
  if ! { $pip install "torch==$TORCH_VERSION+cpu" >>"$log" 2>&1 \
        || $pip install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" >>"$log" 2>&1; }; then
    echo "torch==$TORCH_VERSION (CPU) did not install" >"$dir/FAILED"; echo "$name: FAILED (torch)"; continue
  fi
  echo "torch==$TORCH_VERSION" >"$dir/constraints.txt"
  ok=""
  # the newest release first, then up to three older ones (pip index lists them newest first)
  versions=$($pip index versions "$pkg" 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' ' ')
  for v in "" $(echo "$versions" | cut -d' ' -f2-4); do
    req="$pkg${v:+==$v}"
    echo "== pip install $req (torch pinned)" >>"$log"
    if $pip install "$req" safetensors numpy psutil -c "$dir/constraints.txt" >>"$log" 2>&1; then ok="$req"; break; fi
  done
  if [ -z "$ok" ]; then
    # pip's own last error line says why (a conflicting torch pin, a missing dependency, ...)
    grep -E "ERROR|conflict|requires" "$log" | tail -3 | tr '\n' ' ' | cut -c1-400 >"$dir/FAILED"
    echo "$name: not installable: $(cat "$dir/FAILED")"; continue
  fi
  # PyPI's torchvision is built against the CUDA torch: with the CPU one its operators do not load,
  # and transformers then fails to import. The peers only pull it in through nnsight (unused here).
  if $dir/venv/bin/python -m pip show torchvision >/dev/null 2>&1 && ! $dir/venv/bin/python -c "import torchvision" >>"$log" 2>&1; then
    echo "== torchvision does not load with this torch: uninstalled" >>"$log"; $pip uninstall -y torchvision >>"$log" 2>&1
  fi
  got=$($dir/venv/bin/python -c "import torch; print(torch.__version__)" 2>>"$log")
  case "$got" in
    "$TORCH_VERSION"*) echo "$ok torch $got" >"$dir/OK"; echo "$name: ready ($ok, torch $got)";;
    *) echo "installing $ok replaced torch with $got" >"$dir/FAILED"; echo "$name: FAILED ($got)";;
  esac
done
