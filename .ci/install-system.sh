#!/usr/bin/env bash
# Installs the system packages the test suite needs: Chromium (headless browser tests and its bundled
# SwiftShader Vulkan driver) and Mesa lavapipe from bookworm-backports (Debian 12's own Mesa 22 is
# rejected by Dawn). The archive address is taken from this machine's own apt sources.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need_update=1
if [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
  URIS=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME")
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$URIS" "$SUITE" > /etc/apt/sources.list.d/backports.sources
fi
SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME")
apt-get update -q
apt-get install -y -q chromium
apt-get install -y -q -t "$SUITE-backports" mesa-vulkan-drivers libvulkan1
for f in /usr/share/vulkan/icd.d/lvp_icd.json /usr/lib/chromium/vk_swiftshader_icd.json /usr/bin/chromium; do
  [ -e "$f" ] || { echo "install-system: $f is missing after install" >&2; exit 1; }
done
echo "install-system: chromium $(dpkg-query -W -f='${Version}' chromium), mesa $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
