package ipam

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFabric serves one document like IMDS or the wireserver does, first
// answering with the statuses in fail, one per request.
type fakeFabric struct {
	path       string
	doc        []byte
	needHeader bool // IMDS: 400 without "Metadata: true"

	mu       sync.Mutex
	fail     []int
	requests int
}

func (f *fakeFabric) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if r.URL.RequestURI() != f.path {
		http.Error(w, "no such document", http.StatusNotFound)
		return
	}
	if f.needHeader && r.Header.Get("Metadata") != "true" {
		http.Error(w, `{"error":"Bad request. Required metadata header not specified"}`, http.StatusBadRequest)
		return
	}
	if len(f.fail) > 0 {
		status := f.fail[0]
		f.fail = f.fail[1:]
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.Write(f.doc)
}

func (f *fakeFabric) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// fastRetries keeps unit tests quick; what is tested is how many tries are
// made, never how long they take.
var fastRetries = Fetcher{Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 4}}

func TestSourcesLearnThePool(t *testing.T) {
	tests := []struct {
		name      string
		fabric    *fakeFabric
		source    func(url string) Source
		wantTries int
		wantErr   string
	}{
		{
			name:   "imds",
			fabric: &fakeFabric{path: IMDSPath, doc: readTestdata(t, "imds-instance-network.json"), needHeader: true},
			source: func(url string) Source { return &IMDSSource{URL: url, Fetcher: fastRetries} },
		},
		{
			name:   "imds selects the NIC by MAC",
			fabric: &fakeFabric{path: IMDSPath, doc: readTestdata(t, "imds-instance-network.json"), needHeader: true},
			source: func(url string) Source { return &IMDSSource{URL: url, MAC: fixtureMAC, Fetcher: fastRetries} },
		},
		{
			name:   "nmagent",
			fabric: &fakeFabric{path: NMAgentPath, doc: readTestdata(t, "nmagent-getinterfaceinfov1.xml")},
			source: func(url string) Source { return &NMAgentSource{URL: url + "/", MAC: fixtureMAC, Fetcher: fastRetries} },
		},
		{
			name: "imds throttles and fails, then answers",
			fabric: &fakeFabric{path: IMDSPath, doc: readTestdata(t, "imds-instance-network.json"), needHeader: true,
				fail: []int{http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusTooManyRequests}},
			source:    func(url string) Source { return &IMDSSource{URL: url, Fetcher: fastRetries} },
			wantTries: 4,
		},
		{
			name: "nmagent fails on the server, then answers",
			fabric: &fakeFabric{path: NMAgentPath, doc: readTestdata(t, "nmagent-getinterfaceinfov1.xml"),
				fail: []int{http.StatusInternalServerError, http.StatusBadGateway}},
			source:    func(url string) Source { return &NMAgentSource{URL: url, Fetcher: fastRetries} },
			wantTries: 3,
		},
		{
			name: "gives up after the last try",
			fabric: &fakeFabric{path: IMDSPath, doc: readTestdata(t, "imds-instance-network.json"), needHeader: true,
				fail: []int{429, 429, 429, 429, 429}},
			source:    func(url string) Source { return &IMDSSource{URL: url, Fetcher: fastRetries} },
			wantTries: 4,
			wantErr:   "429 Too Many Requests: Too Many Requests (gave up after 4 tries)",
		},
		{
			name:      "a client error is not retried",
			fabric:    &fakeFabric{path: IMDSPath, doc: nil, fail: []int{http.StatusForbidden}},
			source:    func(url string) Source { return &IMDSSource{URL: url, Fetcher: fastRetries} },
			wantTries: 1,
			wantErr:   "403 Forbidden",
		},
		{
			name:      "wrong document at the path",
			fabric:    &fakeFabric{path: NMAgentPath, doc: []byte(`{"interface":[]}`)},
			source:    func(url string) Source { return &NMAgentSource{URL: url, Fetcher: fastRetries} },
			wantTries: 1,
			wantErr:   NMAgentPath + ": parse NMAgent XML",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.fabric)
			defer srv.Close()
			src := tt.source(srv.URL)
			retries := 0
			switch s := src.(type) {
			case *IMDSSource:
				s.Fetcher.OnRetry = func(error, time.Duration) { retries++ }
			case *NMAgentSource:
				s.Fetcher.OnRetry = func(error, time.Duration) { retries++ }
			}
			in, err := src.Fetch(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if !samePool(in.Pool, fixturePool()) || in.MAC.String() != fixtureMAC.String() {
					t.Fatalf("learned %s %+v, want %s %+v", in.MAC, in.Pool, fixtureMAC, fixturePool())
				}
			}
			if tt.wantTries == 0 {
				tt.wantTries = 1
			}
			if got := tt.fabric.Requests(); got != tt.wantTries {
				t.Fatalf("%d requests, want %d", got, tt.wantTries)
			}
			if tt.wantErr == "" && retries != tt.wantTries-1 {
				t.Fatalf("%d retries reported, want %d", retries, tt.wantTries-1)
			}
		})
	}
}

func TestFetchStopsWhenCancelled(t *testing.T) {
	f := &fakeFabric{path: IMDSPath, needHeader: true, fail: []int{503, 503, 503}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := &IMDSSource{URL: srv.URL, Fetcher: Fetcher{Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Attempts: 3}}}
	_, err := src.Fetch(ctx)
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("got %v, want the fetch to stop on cancellation", err)
	}
}

func TestStaticSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pool.json")
	os.WriteFile(path, []byte(`{"subnet":"10.240.0.0/16","gateway":"10.240.0.1","primary":"10.240.0.4","secondary":["10.240.0.5"]}`), 0o600)
	in, err := (&StaticSource{Path: path}).Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !samePool(in.Pool, pool("10.240.0.0/16", "10.240.0.4", "10.240.0.5")) {
		t.Fatalf("pool = %+v", in.Pool)
	}
	os.WriteFile(path, []byte(`{"subnet":"10.240.0.0/16"}`), 0o600)
	if _, err := (&StaticSource{Path: path}).Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
}
