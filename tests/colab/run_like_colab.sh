#!/usr/bin/env bash
# Every chapter of the toc, run the way a student runs it on Colab: an environment that already has PyTorch,
# torchvision, ipywidgets 7.7 and matplotlib (Colab's preinstalled packages), then what the chapters' install cell
# does there (`pip install "vaelab @ git+..."`, here the same install from a clone of this checkout's HEAD, not
# editable), and the Colab notebooks of that clone (book/colab/, what the badges open) executed one by one from a
# folder outside it, so data and runs go where an installed vaelab puts them. Nothing from the book tooling
# (jupyter-book, myst-nb) is installed. After each chapter, what the student reads is checked
# (tests/colab/student_reads.py): plain Markdown, no solution, every hidden cell's text shown with its values.
#
#     bash tests/colab/run_like_colab.sh [environment folder [chapter ...]]
#     # default /tmp/vaelab-colab and every chapter (~15 min on 2 cores); e.g. `... /tmp/vaelab-colab 01_elbo`
set -euo pipefail
env=${1:-/tmp/vaelab-colab}
only=("${@:2}")
work=$(mktemp -d)
repo="$work/vaelab"  # what GitHub would serve: the committed HEAD, not the working tree
git clone --quiet "$(cd "$(dirname "$0")/../.." && pwd)" "$repo"
rm -rf "$env" && python3 -m venv "$env"
pip() { "$env/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
pip --upgrade pip
# Colab's preinstalled stack (the versions Colab shipped in 2025: ipywidgets 7.7, a recent torch)
pip torch torchvision "ipywidgets==7.7.*" matplotlib ipykernel nbclient nbformat scikit-learn tqdm
torch_before=$("$env/bin/python" -c 'import torch; print(torch.__version__)')
# The install cell
pip "$repo"
torch_after=$("$env/bin/python" -c 'import torch; print(torch.__version__)')
[ "$torch_before" = "$torch_after" ] || { echo "the install replaced Colab's torch $torch_before by $torch_after"; exit 1; }
if "$env/bin/python" -c 'import myst_nb' 2>/dev/null; then echo "myst_nb came with vaelab's install" >&2; exit 1; fi
"$env/bin/python" -m ipykernel install --prefix "$env" --name colab-like >/dev/null
mkdir "$work/session" && cd "$work/session"
export VAELAB_COMPUTE=quick XDG_CACHE_HOME="$work/cache" JUPYTER_PATH="$env/share/jupyter"
chapters=$(sed -n 's/^ *- file: book\/\([0-9].*\)/\1/p' "$repo/_toc.yml")
if [ ${#only[@]} -gt 0 ]; then
    for name in "${only[@]}"; do
        grep -qx "$name" <<<"$chapters" || { echo "no chapter $name in _toc.yml" >&2; exit 1; }
    done
    chapters="${only[*]}"
fi
mkdir "$work/executed"
for chapter in $chapters; do
    start=$(date +%s)
    "$env/bin/python" - "$repo/book/colab/$chapter.ipynb" "$work/executed/$chapter.ipynb" 2>&1 <<'PY' \
        | { grep -v "Kernel is running over TCP" || true; } || { echo "$chapter failed" >&2; exit 1; }
import sys
import nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(notebook, kernel_name="colab-like", timeout=1800).execute()
finally:
    nbformat.write(notebook, sys.argv[2])
PY
    echo "$chapter: ran in $(( $(date +%s) - start )) s (torch $torch_after, ipywidgets $("$env/bin/python" -c \
        'import ipywidgets; print(ipywidgets.__version__)'))"
    "$env/bin/python" "$repo/tests/colab/student_reads.py" "$work/executed/$chapter.ipynb" "$repo/book/$chapter.ipynb" \
        || { echo "$chapter: the student reads something wrong (above)" >&2; exit 1; }
done
echo "the executed notebooks: $work/executed"
echo "data and runs went to: $(ls -d "$work"/cache/* 2>/dev/null | tr '\n' ' ')"
