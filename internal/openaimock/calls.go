package openaimock

import (
	"net/http"
	"sync"
)

// callCounter counts inference requests by path, so a test can prove a
// request tokengate refused never reached the upstream.
type callCounter struct {
	mu     sync.Mutex
	total  int
	byPath map[string]int
}

func (c *callCounter) add(path string) {
	c.mu.Lock()
	c.total++
	c.byPath[path]++
	c.mu.Unlock()
}

type callsReport struct {
	Calls  int            `json:"calls"`
	ByPath map[string]int `json:"by_path"`
}

func (c *callCounter) report() callsReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := callsReport{Calls: c.total, ByPath: make(map[string]int, len(c.byPath))}
	for p, n := range c.byPath {
		r.ByPath[p] = n
	}
	return r
}

func (s *server) callsHandler(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.calls.report())
}
