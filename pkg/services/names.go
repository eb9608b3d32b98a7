package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/internal/ipproto"
	"github.com/podvnet/podvnet/internal/strictjson"
)

// Names maps frontend ids to what they serve, "namespace/name:port" (and
// " local" for a list of this node's endpoints): the maps hold numbers,
// `debug services` and `debug monitor` show names. The agent writes it
// (WriteNames) into its state dir, so it is there without the agent.
type Names map[uint32]string

// Names returns the name of every frontend id the syncer gave out.
func (s *Syncer) Names() Names {
	out := Names{}
	for ref, id := range s.listIDs {
		n := ref.svc.String() // a Service's only port may have no name
		if ref.list.Port != "" {
			n += ":" + ref.list.Port
		}
		n += "/" + ipproto.Name(ref.list.Proto)
		if ref.list.Local {
			n += " (local)"
		}
		out[id] = n
	}
	return out
}

// namesFile is the file's layout.
type namesFile struct {
	Version  int               `json:"version"`
	Services map[string]string `json:"services"` // id (decimal) -> name
}

// WriteNames replaces the names file at path.
func WriteNames(path string, n Names) error {
	f := namesFile{Version: 1, Services: map[string]string{}}
	for id, name := range n {
		f.Services[fmt.Sprint(id)] = name
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadNames reads the names file at path; a missing file is no names.
func ReadNames(path string) (Names, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Names{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f namesFile
	if err := strictjson.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := Names{}
	for id, name := range f.Services {
		var n uint32
		if _, err := fmt.Sscan(id, &n); err != nil {
			return nil, fmt.Errorf("%s: id %q: %w", path, id, err)
		}
		out[n] = name
	}
	return out, nil
}
