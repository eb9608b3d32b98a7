package policy

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Reserved identities, as the data path knows them (PV_ID_*).
const (
	IdentityWorld      uint32 = 1   // an address no pod or node holds
	IdentityHost       uint32 = 2   // this node: always reaches its own pods
	IdentityRemoteNode uint32 = 3   // another node, and its hostNetwork pods
	FirstPodIdentity   uint32 = 256 // the lowest a pod's identity may be
)

// Identity is what every pod with the same namespace, namespace labels,
// labels and named ports shares: selectors match identities, not pods.
// Named ports are part of it so that an egress rule's named port resolves
// exactly on every pod of a destination identity.
type Identity struct {
	ID              uint32               `json:"id"`
	Namespace       string               `json:"namespace"`
	NamespaceLabels map[string]string    `json:"namespace_labels,omitempty"`
	Labels          map[string]string    `json:"labels,omitempty"`
	Ports           map[string]NamedPort `json:"ports,omitempty"`

	key  string
	refs int
}

// String names the identity for people: its namespace and labels.
func (id *Identity) String() string {
	return id.Namespace + ":" + labelsString(id.Labels)
}

// identityKey is the canonical form of what makes an identity.
func identityKey(ns string, nsLabels, labels map[string]string, ports map[string]NamedPort) string {
	var b strings.Builder
	b.WriteString(ns)
	b.WriteByte(0)
	b.WriteString(labelsString(nsLabels))
	b.WriteByte(0)
	b.WriteString(labelsString(labels))
	b.WriteByte(0)
	for _, name := range slices.Sorted(maps.Keys(ports)) {
		p := ports[name]
		b.WriteString(name + "=" + strconv.Itoa(int(p.Port)) + "/" + strconv.Itoa(int(p.Protocol)) + ";")
	}
	return b.String()
}

// identities hands out identity numbers, one per distinct key, counted by
// the pods (and endpoints) holding them. A number is never handed out
// twice in the allocator's life: a rule written for a gone identity can
// then never match a newcomer.
type identities struct {
	byKey map[string]*Identity
	byID  map[uint32]*Identity
	next  uint32
}

func newIdentities(first uint32) *identities {
	return &identities{byKey: map[string]*Identity{}, byID: map[uint32]*Identity{}, next: max(first, FirstPodIdentity)}
}

// acquire returns the identity of key, made from the rest when new
// (created reports that), and counts one more holder.
func (ids *identities) acquire(ns string, nsLabels, labels map[string]string, ports map[string]NamedPort) (id *Identity, created bool) {
	key := identityKey(ns, nsLabels, labels, ports)
	if id, ok := ids.byKey[key]; ok {
		id.refs++
		return id, false
	}
	id = &Identity{ID: ids.next, Namespace: ns, NamespaceLabels: maps.Clone(nsLabels), Labels: maps.Clone(labels),
		Ports: maps.Clone(ports), key: key, refs: 1}
	ids.next++
	ids.byKey[key] = id
	ids.byID[id.ID] = id
	return id, true
}

// release counts one holder less; it reports true when the identity is
// gone.
func (ids *identities) release(id *Identity) bool {
	id.refs--
	if id.refs > 0 {
		return false
	}
	delete(ids.byKey, id.key)
	delete(ids.byID, id.ID)
	return true
}
