package kube

// Permission is an RBAC rule the agent needs: deploy/'s ClusterRole grants
// exactly these (deploy_test compares), and TestPermissions checks that
// the client uses every verb here and no other.
type Permission struct {
	Group    string // "" is the core group
	Resource string // resource or resource/subresource
	Verbs    []string
	Why      string
}

// Permissions are every API call the agent makes.
var Permissions = []Permission{
	{"", "nodes", []string{"list", "watch"}, "the informer of this node's Node (fieldSelector metadata.name): allocatable pods, taints, conditions; and of every Node's addresses, on each of which a NodePort answers (--service-mode bpf)"},
	{"", "nodes", []string{"patch"}, "remove and re-add the startup taint " + NotReadyTaint},
	{"", "nodes/status", []string{"patch"}, "set the NetworkUnavailable condition"},
	{"", "pods", []string{"list", "watch"}, "the informer of this node's Pods (fieldSelector spec.nodeName): endpoint names, UIDs and labels; " +
		"NetworkPolicy's of every Pod of the cluster: the identity of each pod IP"},
	{"", "pods", []string{"get"}, "NetworkPolicy: the labels of a pod being added that the informer has not shown yet"},
	{"", "namespaces", []string{"list", "watch"}, "NetworkPolicy: namespace labels (namespaceSelector)"},
	{"networking.k8s.io", "networkpolicies", []string{"list", "watch"}, "NetworkPolicy"},
	{"", "events", []string{"create", "patch"}, "Warning Events on the Node (patch: a repeated Event's count)"},
	{"", "services", []string{"list", "watch"}, "every Service: the data path serves them (--service-mode bpf), or limits its conntrack lookup to their ports (kube-proxy)"},
	{"discovery.k8s.io", "endpointslices", []string{"list", "watch"}, "every EndpointSlice: the Services' backends"},
}
