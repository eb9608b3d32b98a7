package kube

import (
	"sync"

	"github.com/go-logr/logr"
	"go.uber.org/zap"
	"k8s.io/klog/v2"
)

var klogOnce sync.Once

// routeKlog sends client-go's logs (klog, a process-wide logger) to the
// agent's zap logger, so that they share its format: errors (a failed
// watch, an Event the API server refused) at Warn, the rest at Debug,
// klog's verbose levels not at all. The agent reports the API server's
// state changes itself, once each.
func routeKlog(log *zap.Logger) {
	klogOnce.Do(func() {
		klog.SetLogger(logr.New(zapSink{log: log.Named("client-go")}))
	})
}

// zapSink is a logr.LogSink writing to zap.
type zapSink struct{ log *zap.Logger }

func (zapSink) Init(logr.RuntimeInfo) {}

func (zapSink) Enabled(level int) bool { return level <= 1 }

func (s zapSink) Info(_ int, msg string, kv ...any) { s.log.Debug(msg, fields(kv)...) }

func (s zapSink) Error(err error, msg string, kv ...any) {
	s.log.Warn(msg, append(fields(kv), zap.Error(err))...)
}

func (s zapSink) WithValues(kv ...any) logr.LogSink { return zapSink{log: s.log.With(fields(kv)...)} }

func (s zapSink) WithName(name string) logr.LogSink { return zapSink{log: s.log.Named(name)} }

func fields(kv []any) []zap.Field {
	out := make([]zap.Field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			k = "key"
		}
		out = append(out, zap.Any(k, kv[i+1]))
	}
	return out
}
