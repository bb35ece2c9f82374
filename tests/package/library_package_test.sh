#!/usr/bin/env bash
# The agent library as another project uses it, with the real broker:
#  1. `cmake --install --component library` into a fresh prefix installs the headers, the
#     archives, the CMake package and the pkg-config file, and nothing of the broker;
#  2. examples/ configured with find_package against that prefix builds, and its program sends,
#     receives, acknowledges and gets its receipt from a real message-broker;
#  3. the same program built with pkg-config's flags alone links and runs too;
#  4. examples/ with the source tree added as a subdirectory builds only the library: no broker
#     target, no unit file in its build tree, and its install installs no broker.
#
#   library_package_test.sh SOURCE_DIR BUILD_DIR BROKER_BINARY
set -euo pipefail
src=$1 build=$2 broker=$3
work=$(mktemp -d /tmp/ma-package.XXXXXX)
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*"; exit 1; }

prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" --component library >/dev/null
for f in include/message_agent/client.hpp include/message_agent/discovery.hpp lib/libmessage_agent.a \
         lib/cmake/message_agent/message_agentConfig.cmake lib/cmake/message_agent/message_agentConfigVersion.cmake \
         lib/pkgconfig/message_agent.pc; do
  [ -f "$prefix/$f" ] || fail "$f was not installed"
done
[ -e "$prefix/bin" ] && fail "the library component installed $(ls "$prefix/bin")"

# A broker of our own on a free port, stopped by its pid.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$broker" --database "$work/broker.sqlite" --port "$port" --discovery off >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/broker.log" && break
  sleep 0.1
done
grep -q "listening on" "$work/broker.log" || { cat "$work/broker.log"; fail "the broker did not start"; }

run_example() {
  local out
  out=$("$1" 127.0.0.1 "$port") || { echo "$out"; fail "$1 failed"; }
  echo "$out"
  grep -q "bob received from example-alice: hello, bob" <<<"$out" || fail "$1: bob did not receive the message"
  grep -q "alice's receipt: delivered to example-bob" <<<"$out" || fail "$1: alice had no receipt"
}

echo "== find_package(message_agent) against $prefix"
cmake -S "$src/examples" -B "$work/with-package" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/with-package" >/dev/null
run_example "$work/with-package/send_and_receive"

echo "== pkg-config message_agent"
flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs message_agent)
# shellcheck disable=SC2086
g++ -o "$work/send_and_receive_pc" "$src/examples/send_and_receive.cpp" $flags
run_example "$work/send_and_receive_pc"

echo "== add_subdirectory of the source tree"
cmake -S "$src/examples" -B "$work/with-source" -DMESSAGE_AGENT_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/with-source" -j2 >/dev/null
targets=$(cmake --build "$work/with-source" --target help)
grep -q "message-broker\|message-agent\|sqlite" <<<"$targets" && fail "the subproject has broker targets: $targets"
find "$work/with-source" -name 'message-broker*' | grep -q . && fail "the subproject wrote broker files"
cmake --install "$work/with-source" --prefix "$work/consumer-prefix" >/dev/null
[ "$(ls "$work/consumer-prefix/bin")" = send_and_receive ] || fail "the consumer's install has $(ls -R "$work/consumer-prefix")"
[ -e "$work/consumer-prefix/lib" ] && fail "the consumer's install installed the library's files"
run_example "$work/with-source/send_and_receive"
echo "all passed"
