#!/usr/bin/env bash
# Builds llama.cpp from the llama-cpp-python sdist with AVX-512 off (AVX2, FMA, F16C only), for
# comparing both engines capped at AVX2 on an AVX-512 machine; prints the LLAMA_CPP_LIB_PATH to
# give the side-by-side benchmarks (bench_vs_llama_cpp.py loads that libllama instead of the one
# the package installed). Needs a C++ compiler (and cmake: installed from PyPI into DIR when
# missing); ~10-15 minutes on 2 cores.
#   bash benches/build_llama_cpp_avx2.sh [VERSION] [DIR]
#   LLAMA_CPP_LIB_PATH=$(bash benches/build_llama_cpp_avx2.sh | tail -1) \
#     /work/peers/venv/bin/python benches/bench_vs_llama_cpp.py --kernels avx2
set -euo pipefail
version=${1:-0.3.36}
dir=${2:-/work/peers/llama-cpp-avx2}
mkdir -p "$dir"
if [ ! -f "$dir/lib/libllama.so" ]; then
  cmake=$(command -v cmake || true)
  if [ -z "$cmake" ]; then
    python3 -m venv "$dir/venv" >&2 && "$dir/venv/bin/pip" install -q cmake >&2
    cmake="$dir/venv/bin/cmake"
  fi
  python3 -m pip download --no-deps --no-binary llama-cpp-python -d "$dir" "llama-cpp-python==$version" >&2
  tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
  src="$dir/llama_cpp_python-$version/vendor/llama.cpp"
  "$cmake" -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  "$cmake" --build "$dir/build" --target llama -j "$(nproc)" >&2
  mkdir -p "$dir/lib"
  find "$dir/build" -name '*.so*' -exec cp -P {} "$dir/lib/" \;
fi
echo "$dir/lib"
