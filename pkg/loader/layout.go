package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// checkLayout refuses a pinned map whose kind or key/value layout differs
// from what this build expects. Sizes alone are not enough: a field can move
// without the size changing, so the key and value types are also compared,
// member by member, with the BTF the pinned map was created with.
func checkLayout(spec *ebpf.MapSpec, m *ebpf.Map) error {
	if err := spec.Compatible(m); err != nil {
		return err
	}
	if spec.Key == nil && spec.Value == nil {
		return nil // a ring buffer: no key or value layout to compare
	}
	h, err := m.Handle()
	if errors.Is(err, btf.ErrNotFound) {
		return errors.New("pinned map carries no BTF to check its layout")
	}
	if err != nil {
		return fmt.Errorf("read pinned map BTF: %w", err)
	}
	defer h.Close()
	pinned, err := h.Spec(nil)
	if err != nil {
		return fmt.Errorf("parse pinned map BTF: %w", err)
	}
	for _, t := range []btf.Type{spec.Key, spec.Value} {
		if t == nil {
			continue
		}
		want := Describe(t)
		name := btf.UnderlyingType(t).TypeName()
		if name == "" {
			continue // anonymous scalar: the size check covered it
		}
		got, err := pinned.AnyTypeByName(name)
		if err != nil {
			return fmt.Errorf("type %s missing from pinned map: %w", name, err)
		}
		if have := Describe(got); have != want {
			return fmt.Errorf("type %s changed: pinned %s, expected %s", name, have, want)
		}
	}
	return nil
}

// Describe renders a BTF type's memory layout (names, offsets, sizes) as a
// string, so two layouts compare with ==.
func Describe(t btf.Type) string {
	t = btf.UnderlyingType(t)
	size, _ := btf.Sizeof(t)
	var b strings.Builder
	switch v := t.(type) {
	case *btf.Struct:
		fmt.Fprintf(&b, "struct %s{", v.Name)
		for i, m := range v.Members {
			if i > 0 {
				b.WriteString(",")
			}
			ms, _ := btf.Sizeof(m.Type)
			fmt.Fprintf(&b, "%s@%d:%d", m.Name, m.Offset.Bytes(), ms)
		}
		fmt.Fprintf(&b, "}=%d", size)
	case *btf.Enum:
		fmt.Fprintf(&b, "enum %s{", v.Name)
		for i, val := range v.Values {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%s=%d", val.Name, val.Value)
		}
		fmt.Fprintf(&b, "}=%d", size)
	default:
		fmt.Fprintf(&b, "%s=%d", t.TypeName(), size)
	}
	return b.String()
}
