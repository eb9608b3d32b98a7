package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/internal/strictjson"
)

// StateVersion is the format version of the state file this agent writes.
// Version 2 added the pool; version 1 files (no pool) are read as they
// are. A file of any other version is refused, never reinterpreted.
const StateVersion = 2

// oldestStateVersion is the oldest version this agent reads.
const oldestStateVersion = 1

// State is what survives a restart: live allocations and addresses still
// cooling down after release, and the pool they came from (for `debug`,
// which reads this file while the agent is down).
type State struct {
	Version     int          `json:"version"`
	Pool        *PoolState   `json:"pool,omitempty"`
	Allocations []Allocation `json:"allocations"`
	Cooling     []Cooling    `json:"cooling"`
}

// PoolState is the pool as last learned from its source.
type PoolState struct {
	Subnet    netip.Prefix `json:"subnet"`
	Primary   netip.Addr   `json:"primary"`
	Secondary []netip.Addr `json:"secondary"`
}

// Store persists State. Save must be durable when it returns.
type Store interface {
	Load() (*State, error)
	Save(*State) error
}

// ErrCorruptState means the state file cannot be trusted; the agent stops
// rather than start empty and hand out addresses that live pods hold.
var ErrCorruptState = errors.New("state file corrupt or of an unknown version")

// FileStore keeps State in one JSON file, replaced atomically.
type FileStore struct {
	Path string
}

// Load reads the state; a missing file is an empty state.
func (f FileStore) Load() (*State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: StateVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", f.Path, err)
	}
	s, err := DecodeState(b)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w (kept as is; move it away only if no pod on this node uses podvnet)", f.Path, err)
	}
	return s, nil
}

// DecodeState parses and checks a state file's contents.
func DecodeState(b []byte) (*State, error) {
	var s State
	if err := strictjson.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptState, err)
	}
	if s.Version < oldestStateVersion || s.Version > StateVersion {
		return nil, fmt.Errorf("%w: version %d, this agent reads versions %d to %d", ErrCorruptState, s.Version, oldestStateVersion, StateVersion)
	}
	if s.Pool != nil && (!s.Pool.Subnet.IsValid() || !s.Pool.Primary.IsValid()) {
		return nil, fmt.Errorf("%w: the pool has no subnet or primary IP", ErrCorruptState)
	}
	if s.Pool != nil {
		for i, ip := range s.Pool.Secondary {
			if !ip.IsValid() {
				return nil, fmt.Errorf("%w: pool secondary IP %d is empty", ErrCorruptState, i)
			}
		}
	}
	seenIP := map[string]bool{}
	seenKey := map[Key]bool{}
	for i, a := range s.Allocations {
		if !a.IP.IsValid() {
			return nil, fmt.Errorf("%w: allocation %d has no IP", ErrCorruptState, i)
		}
		if a.ContainerID == "" || a.IfName == "" {
			return nil, fmt.Errorf("%w: allocation of %s has no container ID or ifname", ErrCorruptState, a.IP)
		}
		if seenIP[a.IP.String()] {
			return nil, fmt.Errorf("%w: %s allocated twice", ErrCorruptState, a.IP)
		}
		if seenKey[a.Key] {
			return nil, fmt.Errorf("%w: %s holds two addresses", ErrCorruptState, a.Key)
		}
		seenIP[a.IP.String()] = true
		seenKey[a.Key] = true
	}
	for i, c := range s.Cooling {
		if !c.IP.IsValid() {
			return nil, fmt.Errorf("%w: cooling entry %d has no IP", ErrCorruptState, i)
		}
	}
	return &s, nil
}

// Save writes the state durably: temp file, fsync, rename, fsync of the
// directory. A crash leaves either the old or the new file, never a mix.
func (f FileStore) Save(s *State) error {
	s.Version = StateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return atomicfile.WriteFile(f.Path, append(b, '\n'), 0o600)
}
