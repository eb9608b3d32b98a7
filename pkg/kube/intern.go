package kube

import (
	"runtime"
	"sync"
	"weak"
)

// interner shares one copy of equal values among the objects that hold
// them: the pods of a Deployment carry the same labels and named ports,
// and a cluster-wide store of 5,000 pods would otherwise hold 5,000 copies
// of a few dozen maps. It holds its copies weakly: once no object holds
// one, the garbage collector takes it and its entry goes.
type interner[T any] struct {
	mu sync.Mutex
	m  map[string]weak.Pointer[T]
}

// get returns the copy of the value key names, made by build when there is
// none. Whoever keeps the value must keep the pointer: it is what keeps
// the copy shared.
func (in *interner[T]) get(key string, build func() T) *T {
	in.mu.Lock()
	defer in.mu.Unlock()
	if v := in.m[key].Value(); v != nil {
		return v
	}
	if in.m == nil {
		in.m = map[string]weak.Pointer[T]{}
	}
	v := new(T)
	*v = build()
	in.m[key] = weak.Make(v)
	runtime.AddCleanup(v, in.forget, key)
	return v
}

// forget removes key's entry once its value is collected, unless a new
// value took its place meanwhile.
func (in *interner[T]) forget(key string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if wp, ok := in.m[key]; ok && wp.Value() == nil {
		delete(in.m, key)
	}
}

// size is the number of values held (for tests).
func (in *interner[T]) size() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.m)
}
