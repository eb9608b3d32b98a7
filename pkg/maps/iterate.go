package maps

import (
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// listMap reads every entry of m, converted by conv, sorted by cmp; what
// names the map's entries in an error.
func listMap[K, V, T any](m *ebpf.Map, what string, conv func(K, V) T, cmp func(a, b T) int) ([]T, error) {
	var (
		k   K
		v   V
		out []T
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, conv(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", what, err)
	}
	slices.SortFunc(out, cmp)
	return out, nil
}
