#!/usr/bin/env bash
# Optional system packages: Debian's Fashion-MNIST (so the demo works offline), a C compiler (the engine's
# kernels) and Chromium (browser tests).
# Installed only when we are root (or have password-less sudo) and apt-get exists; otherwise mlplab falls
# back to downloading the data, and browser tests are skipped. Never fails the build.
set -u
want=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || want+=(dataset-fashion-mnist)
if [ "${WITH_CHROMIUM:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then want+=(chromium); fi
# a C compiler for the engine's kernels (built on first use; without one training runs on slower PyTorch ops)
command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
[ ${#want[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system-deps: not root; skipping apt packages: ${want[*]}"; exit 0; fi
echo "system-deps: apt-get install ${want[*]}"
$SUDO apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 || echo "system-deps: apt-get install failed; continuing"
exit 0
