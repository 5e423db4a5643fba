#!/usr/bin/env bash
# Install the offline data sets used by monai_unlearn.apps (FashionMNIST, the real-volume slice task and the
# brain-region patches). Idempotent: it installs only what is missing and says what it did.
#
#   sudo bash scripts/install_data.sh          # or as root in CI
#
# Environment:
#   PYTHON              python interpreter to install pip packages into (default: python3, else python)
#   MONAI_UNLEARN_DATA  data root (default ~/.cache/monai_unlearn); pyradiomics data goes to
#                       $MONAI_UNLEARN_DATA/pyradiomics-3.1.0/data
#   SKIP_APT=1          do not touch Debian packages
#   SKIP_PYRADIOMICS=1  do not fetch the pyradiomics test volumes (chest CT, breast MRI, brain MRI)
set -euo pipefail

log() { echo "[install_data] $*"; }

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
DATA_ROOT="${MONAI_UNLEARN_DATA:-$HOME/.cache/monai_unlearn}"
PYRAD_DIR="$DATA_ROOT/pyradiomics-3.1.0/data"
# The pyradiomics 3.1.0 sdist on PyPI; its metadata reports another version, so pip is pointed at the file.
PYRAD_URL="https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz"
PYRAD_SHA256="24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
PYRAD_FILES="brain1_image.nrrd brain2_image.nrrd breast1_image.nrrd lung1_image.nrrd lung2_image.nrrd"

# ------------------------------------------------------------------ Debian packages
APT_PACKAGES="dataset-fashion-mnist mricron-data insighttoolkit5-examples invesalius-examples"
if [ "${SKIP_APT:-0}" != "1" ]; then
    missing=""
    for pkg in $APT_PACKAGES; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            log "apt: $pkg already installed"
        else
            missing="$missing $pkg"
        fi
    done
    if [ -n "$missing" ]; then
        SUDO=""
        if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
        log "apt: installing$missing"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
    fi
fi

# ------------------------------------------------------------------ pip packages
PIP_PACKAGES="nibabel nilearn"
for pkg in $PIP_PACKAGES; do
    if "$PYTHON" -c "import $pkg" 2>/dev/null; then
        log "pip: $pkg already installed"
    else
        log "pip: installing $pkg"
        "$PYTHON" -m pip install -q "$pkg"
    fi
done

# ------------------------------------------------------------------ pyradiomics test volumes
if [ "${SKIP_PYRADIOMICS:-0}" != "1" ]; then
    have_all=1
    for f in $PYRAD_FILES; do [ -s "$PYRAD_DIR/$f" ] || have_all=0; done
    if [ "$have_all" = "1" ]; then
        log "pyradiomics data already in $PYRAD_DIR"
    else
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        log "pyradiomics: downloading the 3.1.0 source archive with pip (throwaway venv in $work)"
        # setup.py needs numpy and versioneer to produce metadata, and older pips fail on this sdist, so a
        # throwaway venv with a current pip does the download; nothing is installed into $PYTHON.
        if ! "$PYTHON" -m venv "$work/venv"; then
            echo "[install_data] error: '$PYTHON -m venv' failed; on Debian run 'apt-get install -y python3-venv'" >&2
            exit 1
        fi
        "$work/venv/bin/pip" install -q -U pip setuptools wheel numpy versioneer
        "$work/venv/bin/pip" download -q --no-deps --no-build-isolation -d "$work/dl" "pyradiomics @ $PYRAD_URL"
        archive="$work/dl/pyradiomics-3.1.0.tar.gz"
        echo "$PYRAD_SHA256  $archive" | sha256sum -c - >/dev/null
        log "pyradiomics: checksum ok, unpacking data/*.nrrd into $PYRAD_DIR"
        mkdir -p "$PYRAD_DIR"
        tar -xzf "$archive" -C "$work" --wildcards 'pyradiomics-3.1.0/data/*.nrrd' 'pyradiomics-3.1.0/data/README.md' \
            'pyradiomics-3.1.0/LICENSE.txt'
        cp "$work"/pyradiomics-3.1.0/data/*.nrrd "$work/pyradiomics-3.1.0/data/README.md" "$PYRAD_DIR/"
        cp "$work/pyradiomics-3.1.0/LICENSE.txt" "$PYRAD_DIR/LICENSE.txt"
        log "pyradiomics: installed $(ls "$PYRAD_DIR" | wc -l) files"
    fi
fi

log "done"
