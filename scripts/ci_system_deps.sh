#!/usr/bin/env bash
# System packages the browser test of `pa3d app` (tests/app/) needs: Debian's chromium and its driver.
# Idempotent and quick when they are already installed; needs root (or passwordless sudo) to install.
# Browsers are never downloaded by a test tool (no `playwright install`): the test drives /usr/bin/chromium.
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-dejavu-core)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "ci_system_deps: ${PACKAGES[*]} already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ci_system_deps: need root to install ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
fi

echo "ci_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
command -v chromium >/dev/null && chromium --version || true
