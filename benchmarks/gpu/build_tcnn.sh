#!/usr/bin/env bash
# tiny-cuda-nn for the device machine, from source (no PyPI wheel exists). Run on 2026-12-02 (H200, nvcc 13.0,
# torch 2.11): it builds (about 4 minutes at MAX_JOBS=10) and imports, but its forward pass segfaults, nerfstudio's
# own nerfacto-on-tcnn included (benchmarks/README.md, results/tcnn_segfault_h200.log).
#
#   here:   bash benchmarks/gpu/build_tcnn.sh prepare TCNN_GIT CUTLASS_GIT FMT_GIT   # the fetch tool's git dirs
#           -> .tcnn/ (about 20 MB: tiny-cuda-nn's sources, cutlass's headers, fmt), ignored by git
#   device: bash benchmarks/gpu/build_tcnn.sh build [--no-networks]       # carry .tcnn; installs into /tmp/site
#           then: python3 -m pytest -q tests/test_lookup.py  (the tcnn backend joins the whole-grid test)
#
# The submodule commits are the ones tiny-cuda-nn's tree pins (dependencies/cutlass, dependencies/fmt).
set -euo pipefail
cmd=${1:?prepare|build}
case "$cmd" in
  prepare)
    tcnn=${2:?TCNN_GIT}; cutlass=${3:?CUTLASS_GIT}; fmt=${4:?FMT_GIT}
    rm -rf .tcnn && mkdir -p .tcnn
    git -C "$tcnn" archive HEAD include src bindings dependencies CMakeLists.txt LICENSE.txt | tar -x -C .tcnn
    pin() { git -C "$tcnn" ls-tree HEAD "dependencies/$1" | awk '{print $3}'; }
    rm -rf .tcnn/dependencies/cutlass .tcnn/dependencies/fmt
    mkdir -p .tcnn/dependencies/cutlass .tcnn/dependencies/fmt
    git -C "$cutlass" archive "$(pin cutlass)" include tools/util/include | tar -x -C .tcnn/dependencies/cutlass
    git -C "$fmt" archive "$(pin fmt)" include src | tar -x -C .tcnn/dependencies/fmt
    grep -qx '/.tcnn/' .git/info/exclude 2>/dev/null || echo '/.tcnn/' >> .git/info/exclude
    du -sh .tcnn
    ;;
  build)
    shift
    # One architecture (the H200 is sm_90): a fraction of the default multi-architecture build time. The build runs
    # setup.py directly (it reads --no-networks from its argv), then copies the built package into /tmp/site.
    export TCNN_CUDA_ARCHITECTURES=${TCNN_CUDA_ARCHITECTURES:-90} MAX_JOBS=${MAX_JOBS:-16}
    if ! python3 -c "import pkg_resources" 2>/dev/null; then  # setup.py imports parse_version from it
      mkdir -p /tmp/tcnn-shim
      printf 'from packaging.version import parse as parse_version\n' > /tmp/tcnn-shim/pkg_resources.py
      export PYTHONPATH=/tmp/tcnn-shim${PYTHONPATH:+:$PYTHONPATH}
    fi
    start=$SECONDS
    rm -rf /tmp/tcnn-src && cp -r .tcnn /tmp/tcnn-src  # a copy: the next device call may resync the tree
    (cd /tmp/tcnn-src/bindings/torch && python3 setup.py build_ext "$@")
    echo "tiny-cuda-nn built in $((SECONDS - start)) s"
    b=/tmp/tcnn-src/bindings/torch  # the extension lands in build/lib.*/tinycudann_bindings/_90_C*.so
    mkdir -p /tmp/site && rm -rf /tmp/site/tinycudann /tmp/site/tinycudann_bindings
    cp -r $b/tinycudann /tmp/site/ && cp -r $b/build/lib.*/tinycudann_bindings /tmp/site/
    PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} python3 -c "import tinycudann; print('tinycudann', tinycudann.__file__)"
    ;;
  *) echo "usage: $0 prepare TCNN_GIT CUTLASS_GIT FMT_GIT | build [--no-networks]" >&2; exit 2 ;;
esac
