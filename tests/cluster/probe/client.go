package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Client talks to one probe's control socket from outside the pod.
type Client struct {
	// Socket is the control socket's path as the caller sees it (on a
	// node: inside the pod's emptyDir under the kubelet's root dir).
	Socket string
	http   *http.Client
}

// NewClient returns a client of the control socket at path. Paths longer
// than a unix socket address allows (108 bytes; kubelet's pod directories
// are deep) are reached through /proc/self/fd/N of their directory.
func NewClient(path string) *Client {
	c := &Client{Socket: path}
	c.http = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dir, err := os.Open(filepath.Dir(path))
			if err != nil {
				return nil, fmt.Errorf("probe control socket: %w", err)
			}
			defer dir.Close()
			var d net.Dialer
			return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(dir.Fd()))+"/"+filepath.Base(path))
		},
	}}
	return c
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://probe"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Ready says whether the probe's control API answers.
func (c *Client) Ready(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.do(ctx, http.MethodGet, "/v1/healthz", nil, nil) == nil
}

// Connect tries every target from inside the pod, all at once.
func (c *Client) Connect(ctx context.Context, targets ...Target) ([]Result, error) {
	var out []Result
	if err := c.do(ctx, http.MethodPost, "/v1/connect", targets, &out); err != nil {
		return nil, err
	}
	if len(out) != len(targets) {
		return nil, fmt.Errorf("probe answered %d results for %d targets", len(out), len(targets))
	}
	return out, nil
}

// StartFlow starts a flow from the pod; stop it with the returned func.
func (c *Client) StartFlow(ctx context.Context, f Flow) (stop func(context.Context) (FlowReport, error), err error) {
	var started struct{ ID int }
	if err := c.do(ctx, http.MethodPost, "/v1/flows", f, &started); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (FlowReport, error) {
		var rep FlowReport
		err := c.do(ctx, http.MethodPost, "/v1/flows/"+strconv.Itoa(started.ID)+"/stop", nil, &rep)
		return rep, err
	}, nil
}

// Exit makes the probe process exit with code, as a crashing container.
func (c *Client) Exit(ctx context.Context, code int) error {
	return c.do(ctx, http.MethodPost, "/v1/exit?code="+strconv.Itoa(code), nil, nil)
}
