#!/usr/bin/env bash
# Installs, from Debian 12's own packages, whatever the build, the tests and the demo need and
# the machine lacks. Idempotent: packages already present are left alone. Run as root or with sudo.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libfmt-dev libspdlog-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libpcre2-dev libsentencepiece-dev libcli11-dev libtomlplusplus-dev
  libopenmpi-dev openmpi-bin libzmq3-dev cppzmq-dev libmsgpack-cxx-dev
  prometheus-cpp-dev libcpp-httplib-dev
  python3 python3-zmq python3-matplotlib python3-yaml curl prometheus
  # deploy tests: shellcheck (deploy.shellcheck), iproute2 (`ip netns`, deploy.netns_cluster)
  shellcheck iproute2
  # fuzz targets and the sanitizer build (scripts/fuzz.sh, scripts/sanitize.sh)
  clang libclang-rt-14-dev
)
# node and npm (for the test with the official `openai` client) may come from elsewhere than
# Debian; Debian's packages are installed only when the commands are missing.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
