package policymap

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"

	podvnetmaps "github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/policy"
)

// Stats say what an Apply wrote.
type Stats struct {
	Endpoints, Peers, CIDRs, Sets, IPCache, Deleted int
}

// Apply writes what changed, in the order of the package doc. On an error
// it stops: what it wrote is consistent (every entry names complete sets),
// and the next Apply of the same endpoints writes the rest.
func (w *Writer) Apply(ch policy.Changes) (Stats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var st Stats
	type update struct {
		id       uint32
		old, new *written
	}
	var ups []update
	gone := map[uint32]bool{}
	for ip, rules := range ch.Endpoints {
		if rules == nil {
			if id, ok := w.ids[ip]; ok {
				gone[id] = true
			}
			continue
		}
		id, err := w.endpointID(ip)
		if err != nil {
			return st, err
		}
		nw, err := w.build(ip, id, rules, w.eps[id], &st)
		if err != nil {
			return st, err
		}
		ups = append(ups, update{id: id, old: w.eps[id], new: nw})
	}
	for id, wr := range w.eps {
		if !wr.ip.IsValid() {
			gone[id] = true // adopted, of an endpoint the agent no longer has
		}
	}

	// 2. Rules: new peer entries in one batch; a changed one keeps the
	// flows it counted.
	var addK []podvnetmaps.PolicyKey
	var addV []podvnetmaps.PolicyValue
	for _, u := range ups {
		for k, v := range u.new.peers {
			old, ok := u.old.peers[k]
			switch {
			case !ok:
				addK, addV = append(addK, k), append(addV, v)
			case old != v:
				if err := w.m.PutPeer(k, v, true); err != nil {
					return st, err
				}
				st.Peers++
			}
		}
	}
	if err := w.m.AddPeers(addK, addV); err != nil {
		return st, err
	}
	st.Peers += len(addK)
	for _, u := range ups {
		for k, v := range u.new.cidrs {
			if old, ok := u.old.cidrs[k]; !ok || old != v {
				if err := w.m.PutCIDR(podvnetmaps.CIDREntry{Endpoint: u.id, Dir: k.dir, Prefix: k.prefix, PolicyValue: v}); err != nil {
					return st, err
				}
				st.CIDRs++
			}
		}
	}
	// 3. Records, and the node's flags on.
	for _, u := range ups {
		if u.new.record != u.old.record {
			if err := w.m.SetEndpoint(u.id, u.new.record); err != nil {
				return st, err
			}
		}
	}
	next := map[uint32]*written{}
	for id, wr := range w.eps {
		if !gone[id] {
			next[id] = wr
		}
	}
	for _, u := range ups {
		next[u.id] = u.new
	}
	flags := nodeFlags(next)
	if on := w.cfg.Flags | flags; on != w.cfg.Flags {
		c := w.cfg
		c.Flags = on
		if err := w.m.SetConfig(c); err != nil {
			return st, err
		}
		w.cfg = c
	}
	// 4. Isolation: the endpoint entry takes its id the first time, and its
	// flags whenever they change.
	for _, u := range ups {
		if u.new.flags != u.old.flags || !u.old.told {
			if err := w.iso.SetEndpointPolicy(u.new.ip, u.id, u.new.flags); err != nil {
				return st, err
			}
		}
		u.new.told = true
		st.Endpoints++
	}
	// 5. Peers' identities.
	for ip, id := range ch.IPCache {
		if id != 0 && w.ipcache[ip] != id {
			if err := w.m.PutIdentity(ip, id); err != nil {
				return st, err
			}
			w.ipcache[ip] = id
			st.IPCache++
		}
	}

	// 6. What is gone.
	var errs []error
	var delK []podvnetmaps.PolicyKey
	for _, u := range ups {
		for k := range u.old.peers {
			if _, ok := u.new.peers[k]; !ok {
				delK = append(delK, k)
			}
		}
		for k := range u.old.cidrs {
			if _, ok := u.new.cidrs[k]; !ok {
				errs = append(errs, w.m.DeleteCIDR(u.id, k.dir, k.prefix))
				st.Deleted++
			}
		}
		w.release(u.old)
		w.eps[u.id] = u.new
	}
	for id := range gone {
		wr := w.eps[id]
		for k := range wr.peers {
			delK = append(delK, k)
		}
		for k := range wr.cidrs {
			errs = append(errs, w.m.DeleteCIDR(id, k.dir, k.prefix))
			st.Deleted++
		}
		errs = append(errs, w.m.SetEndpoint(id, podvnetmaps.PolicyEndpoint{}))
		w.release(wr)
		delete(w.eps, id)
		if wr.ip.IsValid() {
			delete(w.ids, wr.ip)
		}
	}
	errs = append(errs, w.m.DeletePeers(delK))
	st.Deleted += len(delK)
	for ip, id := range ch.IPCache {
		if id == 0 {
			if _, ok := w.ipcache[ip]; ok {
				errs = append(errs, w.m.DeleteIdentity(ip))
				delete(w.ipcache, ip)
				st.IPCache++
			}
		}
	}
	for key, ps := range w.sets {
		if ps.refs <= 0 {
			errs = append(errs, w.m.DeletePortSet(ps.id, ps.ranges))
			delete(w.sets, key)
			delete(w.setIDs, ps.id)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return st, err
	}

	// 7. Flows judged before are judged again.
	c := w.cfg
	c.Gen++
	c.Flags = flags
	if err := w.m.SetConfig(c); err != nil {
		return st, err
	}
	w.cfg = c
	return st, nil
}

// Sync makes the maps hold exactly all (Engine.All): what Apply writes, and
// the endpoints and ipcache entries all does not name removed.
func (w *Writer) Sync(all policy.Changes) (Stats, error) {
	ch := policy.Changes{IPCache: maps.Clone(all.IPCache), Endpoints: maps.Clone(all.Endpoints)}
	w.mu.Lock()
	for ip := range w.ids {
		if _, ok := ch.Endpoints[ip]; !ok {
			ch.Endpoints[ip] = nil
		}
	}
	for ip := range w.ipcache {
		if _, ok := ch.IPCache[ip]; !ok {
			ch.IPCache[ip] = 0
		}
	}
	w.mu.Unlock()
	return w.Apply(ch)
}

// recordPorts is the set for every peer old wrote for a direction.
func (wr *written) recordPorts(dir uint8) uint32 {
	if wr == nil {
		return 0
	}
	if dir == podvnetmaps.DirIngress {
		return wr.record.IngressPorts
	}
	return wr.record.EgressPorts
}

// nodeFlags are the node's policy flags for the endpoints' isolation.
func nodeFlags(eps map[uint32]*written) uint32 {
	var f uint32
	for _, wr := range eps {
		if wr.flags&podvnetmaps.EndpointPolicyEgress != 0 {
			f |= podvnetmaps.PolicyConfigEgress
		}
		if wr.flags&podvnetmaps.EndpointPolicy != 0 {
			f |= podvnetmaps.PolicyConfigIsolated
		}
	}
	return f
}

// build turns an endpoint's rules into map entries, writing the port sets
// they name that the maps do not hold yet. An entry whose ports are those
// old wrote is carried over (a set reference more, which releasing old
// takes back): an update that adds one peer costs that peer.
func (w *Writer) build(ip netip.Addr, id uint32, r *policy.EndpointRules, old *written, st *Stats) (*written, error) {
	nw := &written{ip: ip, rules: r, peers: make(map[podvnetmaps.PolicyKey]podvnetmaps.PolicyValue, len(r.Ingress.Peers)+len(r.Egress.Peers)),
		cidrs: map[cidrKey]podvnetmaps.PolicyValue{}}
	var was *policy.EndpointRules
	if old != nil {
		was = old.rules
	}
	for _, d := range []struct {
		dir     uint8
		rules   *policy.DirectionRules
		iso     uint32
		cidr    uint32
		ports   *uint32
		oldAny  uint32
		oldDirs func(*policy.EndpointRules) *policy.DirectionRules
	}{
		{podvnetmaps.DirIngress, &r.Ingress, podvnetmaps.EndpointPolicyIngress, podvnetmaps.PolicyIngressCIDR, &nw.record.IngressPorts,
			old.recordPorts(podvnetmaps.DirIngress), func(e *policy.EndpointRules) *policy.DirectionRules { return &e.Ingress }},
		{podvnetmaps.DirEgress, &r.Egress, podvnetmaps.EndpointPolicyEgress, podvnetmaps.PolicyEgressCIDR, &nw.record.EgressPorts,
			old.recordPorts(podvnetmaps.DirEgress), func(e *policy.EndpointRules) *policy.DirectionRules { return &e.Egress }},
	} {
		if !d.rules.Isolated {
			continue
		}
		nw.flags |= d.iso
		var prev *policy.DirectionRules
		if was != nil && d.oldDirs(was).Isolated {
			prev = d.oldDirs(was)
		}
		var err error
		if prev != nil && prev.Any.Equal(d.rules.Any) {
			*d.ports = d.oldAny
			w.ref(d.oldAny)
		} else if *d.ports, err = w.acquire(d.rules.Any, st); err != nil {
			return nil, err
		}
		for peer, ports := range d.rules.Peers {
			k := podvnetmaps.PolicyKey{Endpoint: id, Peer: peer, Dir: d.dir}
			if prev != nil {
				if pp, ok := prev.Peers[peer]; ok && pp.Equal(ports) {
					if v, ok := old.peers[k]; ok {
						w.ref(v.Ports)
						nw.peers[k] = v
						continue
					}
				}
			}
			set, err := w.acquire(ports, st)
			if err != nil {
				return nil, err
			}
			nw.peers[k] = podvnetmaps.PolicyValue{Ports: set}
		}
		for _, c := range d.rules.CIDRs {
			allow, err := w.acquire(c.Ports, st)
			if err != nil {
				return nil, err
			}
			except, err := w.acquire(c.Except, st)
			if err != nil {
				return nil, err
			}
			nw.cidrs[cidrKey{d.dir, c.Prefix}] = podvnetmaps.PolicyValue{Ports: allow, ExceptPorts: except}
		}
		if len(d.rules.CIDRs) > 0 {
			nw.record.Flags |= d.cidr
		}
	}
	return nw, nil
}

// acquire returns the number of a port set, written under a new one when
// the maps do not hold it; the empty set is 0, which holds nothing.
func (w *Writer) acquire(s policy.PortSet, st *Stats) (uint32, error) {
	if len(s) == 0 {
		return 0, nil
	}
	ranges := make([]podvnetmaps.PortRange, len(s))
	for i, r := range s {
		ranges[i] = podvnetmaps.PortRange{Proto: r.Proto, First: r.First, Last: r.Last}
	}
	key := setKey(ranges)
	if ps, ok := w.sets[key]; ok {
		ps.refs++
		return ps.id, nil
	}
	ps := &portSet{id: w.nextSet, ranges: ranges, refs: 1}
	if err := w.m.PutPortSet(ps.id, ranges); err != nil {
		return 0, err
	}
	w.nextSet++
	w.sets[key] = ps
	w.setIDs[ps.id] = ps
	st.Sets++
	return ps.id, nil
}

// release counts the sets a written endpoint named one use less.
func (w *Writer) release(wr *written) {
	w.unref(wr.record.IngressPorts)
	w.unref(wr.record.EgressPorts)
	for _, v := range wr.peers {
		w.unref(v.Ports)
	}
	for _, v := range wr.cidrs {
		w.unref(v.Ports)
		w.unref(v.ExceptPorts)
	}
}

func (w *Writer) unref(id uint32) {
	if ps := w.setIDs[id]; ps != nil {
		ps.refs--
	}
}

// SetServiceCIDR tells the programs which destinations kube-proxy
// translates in the stack: egress to them is judged after the DNAT. An
// invalid prefix: none.
func (w *Writer) SetServiceCIDR(p netip.Prefix) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.cfg
	c.ServiceNet, c.ServiceMask = [4]byte{}, [4]byte{}
	if p.IsValid() {
		if !p.Addr().Is4() {
			return fmt.Errorf("service CIDR %s: not IPv4", p)
		}
		c.ServiceNet = p.Masked().Addr().As4()
		c.ServiceMask = [4]byte(net.CIDRMask(p.Bits(), 32))
	}
	if err := w.m.SetConfig(c); err != nil {
		return err
	}
	w.cfg = c
	return nil
}

// SetPending isolates an endpoint both ways, denying everything as
// pending, until an Apply gives it rules: for an endpoint whose policy is
// not known (the maps held none for it) when unknown policy means deny.
func (w *Writer) SetPending(ip netip.Addr) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, err := w.endpointID(ip)
	if err != nil {
		return err
	}
	wr := w.eps[id]
	rec := podvnetmaps.PolicyEndpoint{Flags: podvnetmaps.PolicyIngressPending | podvnetmaps.PolicyEgressPending}
	if err := w.m.SetEndpoint(id, rec); err != nil {
		return err
	}
	c := w.cfg
	c.Flags |= podvnetmaps.PolicyConfigEgress | podvnetmaps.PolicyConfigIsolated
	if err := w.m.SetConfig(c); err != nil {
		return err
	}
	w.cfg = c
	if err := w.iso.SetEndpointPolicy(ip, id, podvnetmaps.EndpointPolicy); err != nil {
		return err
	}
	w.unref(wr.record.IngressPorts)
	w.unref(wr.record.EgressPorts)
	// rules no longer describe the record: nothing is carried over from it.
	wr.record, wr.flags, wr.told, wr.rules = rec, podvnetmaps.EndpointPolicy, true, nil
	return nil
}
