package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Source yields the node's pool: the interface it selects (by MAC, or the
// VM's primary one when no MAC is set) with its addresses.
type Source interface {
	Fetch(ctx context.Context) (Interface, error)
	String() string
}

// Default addresses of the Azure fabric's services, as every VM sees them.
const (
	DefaultNMAgentURL = "http://168.63.129.16"
	DefaultIMDSURL    = "http://169.254.169.254"
)

// Request paths of the documents.
const (
	NMAgentPath = "/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
	IMDSPath    = "/metadata/instance/network?api-version=2021-02-01"
)

// maxDocBytes bounds a fabric document; a real one is a few KiB.
const maxDocBytes = 4 << 20

// Backoff paces retries of a fetch that the server throttled (429), that
// failed on the server (5xx) or that did not reach it.
type Backoff struct {
	Initial  time.Duration // first wait, doubled after each try
	Max      time.Duration // cap of one wait, also of a Retry-After
	Attempts int           // tries in all
}

// DefaultBackoff tries 6 times over about 15 s: IMDS throttles above 5
// requests per second, and the wireserver can be slow while a VM boots.
var DefaultBackoff = Backoff{Initial: 500 * time.Millisecond, Max: 8 * time.Second, Attempts: 6}

// Fetcher GETs fabric documents. The zero value works.
type Fetcher struct {
	Client  *http.Client // nil: no proxy, 10 s timeout
	Backoff Backoff      // zero: DefaultBackoff
	// OnRetry, if set, hears of each failed try that will be retried, so
	// that a slow start can be explained in the log.
	OnRetry func(err error, wait time.Duration)
}

// noProxyClient talks to the fabric directly: IMDS and the wireserver are
// link-local to the VM and must never be reached through an HTTP proxy.
var noProxyClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
	Timeout:   10 * time.Second,
}

// StatusError is an answer that is not 200 OK.
type StatusError struct {
	URL    string
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Body)
}

func retryable(status int) bool { return status == http.StatusTooManyRequests || status >= 500 }

// Get fetches url with header, retrying with exponential backoff on 429,
// 5xx and transport errors, and honouring Retry-After.
func (f Fetcher) Get(ctx context.Context, url string, header http.Header) ([]byte, error) {
	client := f.Client
	if client == nil {
		client = noProxyClient
	}
	bo := f.Backoff
	if bo.Attempts <= 0 {
		bo = DefaultBackoff
	}
	wait := bo.Initial
	var lastErr error
	for attempt := 1; ; attempt++ {
		body, retryAfter, err := get(ctx, client, url, header)
		if err == nil {
			return body, nil
		}
		lastErr = err
		var se *StatusError
		if errors.As(err, &se) && !retryable(se.Status) {
			return nil, err
		}
		if attempt >= bo.Attempts {
			return nil, fmt.Errorf("%w (gave up after %d tries)", lastErr, attempt)
		}
		d := wait
		if retryAfter > 0 {
			d = retryAfter
		}
		d = min(d, bo.Max)
		if f.OnRetry != nil {
			f.OnRetry(err, d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (stopped retrying: %w)", lastErr, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, bo.Max)
	}
}

func get(ctx context.Context, client *http.Client, url string, header http.Header) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err // *url.Error already names the method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var after time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = time.Duration(s) * time.Second
		}
		return nil, after, &StatusError{URL: url, Status: resp.StatusCode, Body: snippet(body)}
	}
	if len(body) > maxDocBytes {
		return nil, 0, fmt.Errorf("GET %s: document larger than %d bytes", url, maxDocBytes)
	}
	return body, 0, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// NMAgentSource reads the pool from the wireserver's NMAgent plugin, the
// source Azure CNI uses.
type NMAgentSource struct {
	URL     string           // base, e.g. DefaultNMAgentURL
	MAC     net.HardwareAddr // the NIC; nil selects the primary interface
	Fetcher Fetcher
}

func (s *NMAgentSource) String() string { return "nmagent " + s.URL }

// Fetch gets and parses the document and selects the NIC.
func (s *NMAgentSource) Fetch(ctx context.Context) (Interface, error) {
	return s.Fetcher.fetchInterface(ctx, s.URL, NMAgentPath, nil, ParseNMAgent, s.MAC)
}

// IMDSSource reads the pool from the Instance Metadata Service.
type IMDSSource struct {
	URL     string           // base, e.g. DefaultIMDSURL
	MAC     net.HardwareAddr // the NIC; nil selects the primary interface
	Fetcher Fetcher
}

func (s *IMDSSource) String() string { return "imds " + s.URL }

// Fetch gets and parses the document and selects the NIC.
func (s *IMDSSource) Fetch(ctx context.Context) (Interface, error) {
	// IMDS answers 400 without this header: it proves the request was not
	// forwarded on behalf of someone else (SSRF).
	return s.Fetcher.fetchInterface(ctx, s.URL, IMDSPath, http.Header{"Metadata": {"true"}}, ParseIMDS, s.MAC)
}

// fetchInterface GETs a fabric document, parses it and selects the NIC.
func (f Fetcher) fetchInterface(ctx context.Context, base, path string, header http.Header,
	parse func([]byte) ([]Interface, error), mac net.HardwareAddr) (Interface, error) {
	url := strings.TrimSuffix(base, "/") + path
	b, err := f.Get(ctx, url, header)
	if err != nil {
		return Interface{}, err
	}
	ifaces, err := parse(b)
	if err != nil {
		return Interface{}, fmt.Errorf("GET %s: %w", url, err)
	}
	return SelectInterface(ifaces, mac)
}

// StaticSource reads the pool from a file (see LoadStaticPool). The file
// names no MAC: the NIC is whatever --nic says.
type StaticSource struct {
	Path string
}

func (s *StaticSource) String() string { return "static " + s.Path }

// Fetch reads the file again.
func (s *StaticSource) Fetch(context.Context) (Interface, error) {
	p, err := LoadStaticPool(s.Path)
	if err != nil {
		return Interface{}, err
	}
	return Interface{Primary: true, Pool: p}, nil
}
