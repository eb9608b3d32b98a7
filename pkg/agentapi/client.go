package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client talks to the agent over its unix socket.
type Client struct {
	Socket string
	hc     *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{
		Socket: socket,
		hc: &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
				DisableKeepAlives: true,
			},
			Timeout: 60 * time.Second,
		},
	}
}

// UnreachableError means the agent could not be reached at all.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("podvnet agent unreachable at %s: %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is an error answered by the agent.
type APIError struct {
	Status int
	ErrorResponse
}

func (e *APIError) Error() string { return e.Message }

// IsCode reports whether err is an APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// NeverSent reports whether err shows the request never reached the agent
// (no socket, nothing listening): the agent cannot have acted on it.
func NeverSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// Add registers an endpoint.
func (c *Client) Add(ctx context.Context, req AddRequest) (AddResponse, error) {
	var resp AddResponse
	err := c.do(ctx, http.MethodPost, PathEndpoints, req, &resp)
	return resp, err
}

// Del releases an endpoint.
func (c *Client) Del(ctx context.Context, req DelRequest) error {
	return c.do(ctx, http.MethodDelete, PathEndpoints, req, nil)
}

// Check asks the agent to verify its side of an endpoint.
func (c *Client) Check(ctx context.Context, req CheckRequest) (CheckResponse, error) {
	var resp CheckResponse
	err := c.do(ctx, http.MethodPost, PathCheck, req, &resp)
	return resp, err
}

// GC releases the network's endpoints that are not in req.Valid.
func (c *Client) GC(ctx context.Context, req GCRequest) (GCResponse, error) {
	var resp GCResponse
	err := c.do(ctx, http.MethodPost, PathGC, req, &resp)
	return resp, err
}

// Status reads the agent's readiness.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, PathStatus, nil, &st)
	return st, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://podvnet-agent"+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return &UnreachableError{Socket: c.Socket, Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("read agent answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(b, &ae.ErrorResponse) != nil || ae.Message == "" {
			ae.Code, ae.Message = CodeInternal, fmt.Sprintf("agent answered %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode agent answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}
