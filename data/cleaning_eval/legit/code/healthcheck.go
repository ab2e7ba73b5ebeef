// Package health exposes /healthz and /readyz for the Watchkeel ingest service.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Pinger is anything we depend on that can say whether it is reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

type Handler struct {
	Deps    map[string]Pinger
	Timeout time.Duration
}

type status struct {
	OK     bool              `json:"ok"`
	Checks map[string]string `json:"checks"`
}

// Healthz only says the process is alive; it never touches dependencies,
// so a database outage does not make Kubernetes restart every pod.
func (h *Handler) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok\n"))
}

// Readyz pings every dependency and returns 503 if any of them fails.
func (h *Handler) Readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.Timeout)
	defer cancel()
	st := status{OK: true, Checks: map[string]string{}}
	for name, dep := range h.Deps {
		if err := dep.Ping(ctx); err != nil {
			st.OK = false
			st.Checks[name] = err.Error()
			continue
		}
		st.Checks[name] = "ok"
	}
	w.Header().Set("Content-Type", "application/json")
	if !st.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st)
}
