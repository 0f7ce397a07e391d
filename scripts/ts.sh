#!/usr/bin/env bash
# The TypeScript package `ts/` (@xclog/xcomponent): install, build, test.
#
#   scripts/ts.sh install   # dependencies into ts/node_modules (see below)
#   scripts/ts.sh build     # tsc: ts/dist (the package) and ts/build (tests, examples)
#   scripts/ts.sh test      # install, build, then every suite with node's test runner
#                           # (integration suites need the local stack: eval "$(scripts/stack.sh env)")
#   scripts/ts.sh test --prebuilt   # the same, with the `xclog` binary and the Rust example that
#                           # `cargo test --workspace --all-targets` has just built (make test)
#
# The Kafka client, @confluentinc/kafka-javascript, is a native addon on librdkafka. Its install
# first tries a prebuilt binary from outside the npm registry and, where that cannot be reached,
# builds librdkafka from source. With CKJS_LINKING=dynamic that build links Debian's OpenSSL and
# zlib instead of downloading their sources, so `install` makes sure a C toolchain, python3,
# libssl-dev and zlib1g-dev are there (apt-get, when missing). The built node_modules is kept in
# $XCLOG_HOME/cache/ts (default /var/tmp/xclog), keyed by package-lock.json, Node's version and
# the machine, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

TS=ts
CACHE=${XCLOG_HOME:-/var/tmp/xclog}/cache/ts
say() { printf '\033[1m[ts]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

need_node() {
    command -v node >/dev/null || die "node is not installed (Node.js 20 or later is required)"
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    ((major >= 20)) || die "Node.js $(node --version) is too old: 20 or later is required"
}

native_prerequisites() {
    local missing=()
    for pkg in build-essential python3 libssl-dev zlib1g-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} (needed to build librdkafka) and no apt-get to install them"
    say "installing ${missing[*]} (to build librdkafka for @confluentinc/kafka-javascript)"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

install() {
    need_node
    local key
    key=$(cat "$TS/package-lock.json" <(node --version) <(uname -m) | sha256sum | cut -c1-16)
    if [[ -f $TS/node_modules/.xclog-key && $(cat "$TS/node_modules/.xclog-key") == "$key" ]]; then
        return 0
    fi
    if [[ -d $CACHE/$key/node_modules ]]; then
        say "node_modules from the cache ($CACHE/$key)"
        rm -rf "$TS/node_modules"
        cp -a "$CACHE/$key/node_modules" "$TS/node_modules"
    else
        native_prerequisites
        say "npm ci (builds librdkafka from source where no prebuilt binary can be downloaded: a few minutes)"
        (cd "$TS" && CKJS_LINKING=dynamic npm ci --no-audit --no-fund --loglevel=error) ||
            die "npm ci failed in $TS (see the output above)"
        node -e "require('./$TS/node_modules/@confluentinc/kafka-javascript')" 2>/dev/null ||
            (cd "$TS" && node -e "require('@confluentinc/kafka-javascript')") ||
            die "@confluentinc/kafka-javascript installed but does not load"
        mkdir -p "$CACHE/$key.tmp"
        rm -rf "$CACHE/$key.tmp/node_modules"
        cp -a "$TS/node_modules" "$CACHE/$key.tmp/node_modules"
        rm -rf "${CACHE:?}/$key"
        mv "$CACHE/$key.tmp" "$CACHE/$key"
    fi
    echo "$key" >"$TS/node_modules/.xclog-key"
}

build() {
    (cd "$TS" && rm -rf dist build && npx tsc -p tsconfig.json && npx tsc -p tsconfig.test.json) ||
        die "tsc failed"
}

case ${1:-} in
install) install ;;
build)
    install
    build
    ;;
test)
    install
    build
    # The integration suites run the workspace's `xclog` binary and Rust producer example.
    # Building them alone would resolve the workspace's features differently from
    # `cargo test --workspace` and rebuild half of it: make test passes --prebuilt.
    if [[ ${2:-} != --prebuilt ]]; then
        cargo build -q -p xclog-cli --bin xclog
        cargo build -q -p xclog-producer --example publish_keys
    fi
    cd "$TS"
    mapfile -t suites < <(find build/test -name '*.test.js' | sort)
    node --test --test-concurrency=1 "${suites[@]}"
    ;;
*)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
