package agentapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/internal/strictjson"
)

// QueuedDel is a release the plugin could not hand to the agent (it was
// down): the plugin removed what it could itself and left this for the
// agent, which replays it on start and then periodically.
type QueuedDel struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
	// IP is the address the ADD result named, when the runtime passed it;
	// for the logs only, the key decides.
	IP string `json:"ip,omitempty"`
	// QueuedAt guards a later ADD of the same key: an allocation younger
	// than the DEL is not released.
	QueuedAt time.Time `json:"queued_at"`
}

// DelQueue is a directory of QueuedDel files, one per attachment, each
// written atomically and durably (temp file, fsync, rename, directory
// fsync): a crash leaves a whole entry or none.
type DelQueue struct{ Dir string }

// QueueEntry is one file of the queue. Err is set when the file cannot be
// read or parsed; the entry then carries only its path.
type QueueEntry struct {
	Path string
	QueuedDel
	Err error
}

const queueSuffix = ".json"

func (q DelQueue) path(network, containerID, ifname string) string {
	h := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifname))
	return filepath.Join(q.Dir, hex.EncodeToString(h[:16])+queueSuffix)
}

// Put queues a release. Queuing the same attachment again replaces its
// entry, so repeated DELs leave one file.
func (q DelQueue) Put(d QueuedDel) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode queued DEL: %w", err)
	}
	if err := atomicfile.WriteFile(q.path(d.Network, d.ContainerID, d.IfName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("queue DEL of %s/%s in %s: %w", d.ContainerID, d.IfName, q.Dir, err)
	}
	return nil
}

// Remove drops the entry of an attachment; a missing one is fine.
func (q DelQueue) Remove(network, containerID, ifname string) error {
	return removeFile(q.path(network, containerID, ifname))
}

// RemoveEntry drops an entry List returned.
func (q DelQueue) RemoveEntry(e QueueEntry) error { return removeFile(e.Path) }

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove queued DEL %s: %w", path, err)
	}
	return nil
}

// List returns the queued releases, oldest first. Temp files of writes in
// progress (dot files) are not entries. A missing directory is an empty
// queue.
func (q DelQueue) List() ([]QueueEntry, error) {
	dirents, err := os.ReadDir(q.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list DEL queue %s: %w", q.Dir, err)
	}
	var out []QueueEntry
	for _, de := range dirents {
		name := de.Name()
		if !de.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, queueSuffix) {
			continue
		}
		e := QueueEntry{Path: filepath.Join(q.Dir, name)}
		b, err := os.ReadFile(e.Path)
		if err == nil {
			err = strictjson.Unmarshal(b, &e.QueuedDel)
		}
		if err == nil && (e.ContainerID == "" || e.IfName == "") {
			err = errors.New("container_id and ifname are required")
		}
		if err != nil {
			e.Err = fmt.Errorf("queued DEL %s: %w", e.Path, err)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b QueueEntry) int { return a.QueuedAt.Compare(b.QueuedAt) })
	return out, nil
}
