// Package loader loads podvnet's tc programs, pins their maps and links under
// a bpffs root, attaches them with tcx (or legacy cls_bpf), and replaces them
// in place on upgrade. It knows nothing of IPAM or CNI.
package loader

// The object is committed so `go build` needs no clang; `make generate`
// rebuilds it with the pinned clang-19 and CI fails when it differs.
// One object holds both programs, so their maps are shared by construction.
// -no-global-types: the Go mirrors of the C structs live in pkg/maps (which
// must not import loader) and TestLayoutMatchesBTF checks them against this
// object's BTF; generated copies here would be a second, unused set.
// -mcpu=v3 for 32-bit jumps and ALU32 (kernel >= 5.1, far below tcx's 6.6).
// The asm/ include path is where Debian puts the arch headers.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -tags linux -no-global-types podvnet ../../bpf/podvnet.c -- -mcpu=v3 -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu
