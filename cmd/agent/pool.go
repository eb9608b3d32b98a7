package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/internal/netlinkdump"
	"github.com/podvnet/podvnet/pkg/ipam"
)

// defaultStaticNIC is the NIC with --ipam-source static and no --nic: the
// pool file names no MAC to find it by.
const defaultStaticNIC = "eth0"

// newPoolSource builds the --ipam-source. With --nic set, the NMAgent and
// IMDS sources select the document's interface of that NIC's MAC;
// otherwise they select the VM's primary interface.
func newPoolSource(f *runFlags, log *zap.Logger) (ipam.Source, error) {
	var mac net.HardwareAddr
	if f.nic != "" && f.ipamSource != "static" {
		l, err := netlink.LinkByName(f.nic)
		if err != nil {
			return nil, fmt.Errorf("--nic %q: %w", f.nic, err)
		}
		mac = l.Attrs().HardwareAddr
	}
	fetcher := ipam.Fetcher{OnRetry: func(err error, wait time.Duration) {
		log.Info("pool source not answering; retrying", zap.Duration("wait", wait), zap.Error(err))
	}}
	switch f.ipamSource {
	case "nmagent":
		return &ipam.NMAgentSource{URL: f.nmagentURL, MAC: mac, Fetcher: fetcher}, nil
	case "imds":
		return &ipam.IMDSSource{URL: f.imdsURL, MAC: mac, Fetcher: fetcher}, nil
	case "static":
		return &ipam.StaticSource{Path: f.poolFile}, nil
	default:
		return nil, fmt.Errorf("--ipam-source %q: want nmagent, imds or static", f.ipamSource)
	}
}

// pinMAC makes later refreshes select the NIC found at start, even if the
// document comes to mark another interface primary.
func pinMAC(src ipam.Source, mac net.HardwareAddr) {
	switch s := src.(type) {
	case *ipam.NMAgentSource:
		s.MAC = mac
	case *ipam.IMDSSource:
		s.MAC = mac
	}
}

// nicByMAC finds the interface with mac. Accelerated networking gives the
// synthetic NIC's MAC to its SR-IOV VF as well; the VF is enslaved to the
// synthetic NIC, which is the one that carries traffic, so links with a
// master are skipped.
func nicByMAC(mac net.HardwareAddr) (string, error) {
	links, err := netlinkdump.Links()
	if err != nil {
		return "", err
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if bytes.Equal(a.HardwareAddr, mac) && a.MasterIndex == 0 {
			names = append(names, a.Name)
		}
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", fmt.Errorf("no interface has MAC %s, the NIC the pool document describes; set --nic", mac)
	default:
		return "", fmt.Errorf("interfaces %s all have MAC %s; set --nic", strings.Join(names, ", "), mac)
	}
}

// learnPool fetches the first pool and finds the NIC it belongs to.
func learnPool(ctx context.Context, f *runFlags, src ipam.Source) (ipam.Interface, string, error) {
	in, err := src.Fetch(ctx)
	if err != nil {
		return ipam.Interface{}, "", fmt.Errorf("learn the pool from %s: %w", src, err)
	}
	nic := f.nic
	switch {
	case nic != "":
	case f.ipamSource == "static":
		nic = defaultStaticNIC
	default:
		if nic, err = nicByMAC(in.MAC); err != nil {
			return ipam.Interface{}, "", err
		}
		pinMAC(src, in.MAC)
	}
	return in, nic, nil
}
