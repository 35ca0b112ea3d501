#!/usr/bin/env bash
# Install medmnistc, the reference implementation tests/test_corruptions.py checks our MedMNIST-C
# corruptions against, into the venv. It pins medmnist 3.0.1 and scikit-image 0.23.2 (we pin 3.0.2
# and 0.26.0) and needs nothing else we lack, so it goes in without its dependencies; its motion
# blur calls ImageMagick through Wand, which needs the MagickWand library (apt, as root). Prints a
# warning and exits 1 when something fails, so .ci/run can tell the test not to skip only when it works.
set -u
cd "$(dirname "$0")/.."
if ! ldconfig -p | grep -q libMagickWand; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "install_medmnistc: warning: no ImageMagick and not root (or no apt-get); the medmnistc test will skip" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq libmagickwand-dev; }; then
        echo "install_medmnistc: warning: apt-get install libmagickwand-dev failed; the medmnistc test will skip" >&2
        exit 1
    fi
fi
make venv && .venv/bin/pip install --quiet --no-deps medmnistc==0.1.0 Wand==0.7.2 || {
    echo "install_medmnistc: warning: pip install medmnistc failed; the medmnistc test will skip" >&2
    exit 1
}
