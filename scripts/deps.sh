#!/usr/bin/env bash
# Installs (with apt, as root) the tools a target needs and this machine
# lacks; does nothing when all are there. Debian 12.
#   scripts/deps.sh test      network and cluster tests, demos, benchmark smoke test
#   scripts/deps.sh generate  regenerating the BPF objects (pinned clang-19)
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
case "${1:-test}" in
test)
	want nsenter util-linux
	want ip iproute2
	want ss iproute2
	want nft nftables   # podvnet's masquerade checks; portmap's backend; kube-proxy emulation
	want ping iputils-ping
	want containerd containerd  # the cluster tests' nodes (with runc)
	want runc runc
	want iptables iptables      # kube-proxy's iptables mode
	want iperf3 iperf3  # benchmarks (TCP throughput, the flood profiled)
	;;
generate)
	want clang-19 clang-19
	want llvm-strip-19 llvm-19
	[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
	;;
*)
	echo "usage: $0 test|generate" >&2
	exit 2
	;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing: ${need[*]} (apt-get install ${need[*]}); the tests that need them need root too" >&2
	# Without root the privileged tests skip (unless CI=true, where they fail).
	[ "${CI:-}" = true ] && exit 1
	exit 0
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
