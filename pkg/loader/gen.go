// Package loader loads podvnet's tc programs, pins their maps and links under
// a bpffs root, attaches them with tcx (or legacy cls_bpf), and replaces them
// in place on upgrade. It knows nothing of IPAM or CNI.
package loader

// The objects are committed so `go build` needs no clang; `make generate`
// rebuilds them with the pinned clang-19 and CI fails when they differ.
// -mcpu=v3 for 32-bit jumps and ALU32 (kernel >= 5.1, far below tcx's 6.6).
// The asm/ include path is where Debian puts the arch headers.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -tags linux -type pv_endpoint_key -type pv_endpoint -type pv_config -type pv_nosnat_key -type pv_counter -type pv_reason -type pv_event -type pv_monitor -type pv_hook fromPod ../../bpf/from_pod.c -- -mcpu=v3 -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -tags linux fromNic ../../bpf/from_nic.c -- -mcpu=v3 -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu
