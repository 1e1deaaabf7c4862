#!/usr/bin/env bash
# Builds llama-server (llama.cpp's OpenAI-compatible server) from the llama.cpp tree vendored in
# the llama-cpp-python sdist, for the side-by-side serving benchmark (serve_vs_llama_server.sh):
# Release, native CPU flags (-DGGML_NATIVE=ON), static libraries, no curl, no HTTPS, no web UI
# (nothing is fetched at build time). Installs DIR/bin/llama-server and prints its path. Needs a
# C++ compiler (and cmake: installed from PyPI into DIR when missing); ~10 minutes on 2 cores.
#   bash benches/build_llama_server.sh [DIR] [VERSION]
#   e.g. nice -n 10 bash benches/build_llama_server.sh /work/peers/llama-server
# LLAMA_CMAKE_ARGS replaces the CPU flags (-DGGML_NATIVE=ON). On a virtual machine whose CPU reports
# AMX, the native build's AMX kernels crashed llama-server at start (Intel Xeon, this VM); build it
# as on Zen 4 instead:
#   LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
#     -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON" bash benches/build_llama_server.sh
set -euo pipefail
dir=${1:-/work/peers/llama-server}
version=${2:-0.3.36}
mkdir -p "$dir"
if [ ! -x "$dir/bin/llama-server" ]; then
  cmake=$(command -v cmake || true)
  if [ -z "$cmake" ]; then
    python3 -m venv "$dir/venv" >&2 && "$dir/venv/bin/pip" install -q cmake >&2
    cmake="$dir/venv/bin/cmake"
  fi
  if [ ! -f "$dir/llama_cpp_python-$version.tar.gz" ]; then
    # --no-binary for this package only: with ":all:" pip also builds the sdist's build
    # dependencies from source to read its metadata (cmake itself: many minutes on 2 cores).
    python3 -m pip download --no-deps --no-binary llama-cpp-python -d "$dir" "llama-cpp-python==$version" >&2
  fi
  [ -d "$dir/llama_cpp_python-$version" ] || tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
  src="$dir/llama_cpp_python-$version/vendor/llama.cpp"
  start=$(date +%s)
  "$cmake" -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    ${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=ON} -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
  "$cmake" --build "$dir/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$dir/bin"
  cp "$dir/build/bin/llama-server" "$dir/bin/"
  echo "built llama-server in $(( $(date +%s) - start )) s" >&2
fi
echo "$dir/bin/llama-server"
